"""linear_cross_entropy against the plain, obviously-correct F.cross_entropy formulation."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from lmfix.loss import default_chunk_rows, linear_cross_entropy

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def assert_close(got, expected, dtype, equal_nan=False):
    # atol relative to the largest entry: with reduction="sum" gradients grow with N, and
    # float32 entries near zero then carry absolute rounding noise of that size.
    tol = TOL[dtype]
    peak = expected.abs().nan_to_num().max().item() if expected.numel() else 0.0
    atol = tol["atol"] * max(1.0, peak)
    torch.testing.assert_close(got, expected, rtol=tol["rtol"], atol=atol, equal_nan=equal_nan)


def make(n=37, d=8, v=50, dtype=torch.float64, bias=True, scale=True, frozen=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(v, d, generator=g, dtype=dtype).requires_grad_(not frozen)
    b = (0.1 * torch.randn(v, generator=g, dtype=dtype)).requires_grad_() if bias else None
    s = torch.tensor(1.7, dtype=dtype, requires_grad=True) if scale else None
    targets = torch.randint(v, (n,), generator=g)
    return hidden, weight, targets, b, s


def plain(hidden, weight, targets, bias=None, scale=None, reduction="mean"):
    logits = hidden @ weight.T
    if scale is not None:
        logits = scale * logits
    if bias is not None:
        logits = logits + bias
    return F.cross_entropy(logits, targets, reduction=reduction)


def loss_and_grads(fn, hidden, weight, targets, bias, scale, **kw):
    params = [p for p in (hidden, weight, bias, scale) if p is not None]
    for p in params:
        p.grad = None
    loss = fn(hidden, weight, targets, bias, scale, **kw)
    loss.backward()
    return loss.detach(), [None if p.grad is None else p.grad.clone() for p in params]


def assert_matches(args, dtype=torch.float64, reduction="mean", equal_nan=False, **kw):
    expected, expected_grads = loss_and_grads(plain, *args, reduction=reduction)
    got, got_grads = loss_and_grads(linear_cross_entropy, *args, reduction=reduction, **kw)
    assert_close(got, expected, dtype, equal_nan)
    assert len(got_grads) == len(expected_grads)
    for g, e in zip(got_grads, expected_grads):
        if e is None:
            assert g is None
        else:
            assert_close(g, e, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("scale", [True, False])
def test_matches_plain(dtype, reduction, bias, scale):
    args = make(dtype=dtype, bias=bias, scale=scale)
    assert_matches(args, dtype, reduction, chunk_rows=8)  # 37 rows: last chunk is partial


@pytest.mark.parametrize("chunk_rows", [1, 5, 36, 37, 38, 1000, None])
def test_chunk_sizes(chunk_rows):
    assert_matches(make(), chunk_rows=chunk_rows)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [True, False])
def test_frozen_weight(reduction, bias):
    args = make(frozen=True, bias=bias)
    weight = args[1]
    assert_matches(args, reduction=reduction, chunk_rows=10)
    assert weight.grad is None


class RecordShapes(TorchDispatchMode):
    """Records the shape of every tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.shapes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.add(tuple(t.shape))
        return out


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_weight_makes_no_weight_sized_tensor(frozen):
    # The point of a fixed embedding: no V x d gradient is computed or stored at all.
    hidden, weight, targets, bias, scale = make(n=40, d=8, v=50, frozen=frozen)
    with RecordShapes() as rec:
        linear_cross_entropy(hidden, weight, targets, bias, scale, chunk_rows=16).backward()
    assert ((50, 8) in rec.shapes) == (not frozen)


def test_only_some_inputs_need_grad():
    hidden, weight, targets, bias, scale = make()
    hidden.requires_grad_(False)
    weight.requires_grad_(False)
    assert_matches((hidden, weight, targets, bias, scale), chunk_rows=7)  # bias and scale only
    bias.requires_grad_(False)
    assert_matches((hidden, weight, targets, bias, scale), chunk_rows=7)  # scale only
    assert hidden.grad is None and weight.grad is None and bias.grad is None


def test_moderate_size_float32():
    # Realistic scale of logits and a vocabulary that does not fit one cache line of rows.
    args = make(n=300, d=64, v=5000, dtype=torch.float32, seed=1, frozen=True)
    assert_matches(args, torch.float32, chunk_rows=None)
    assert_matches(args, torch.float32, reduction="sum", chunk_rows=64)


def test_large_logits_stay_finite():
    # A big learned temperature must not overflow: log-softmax is shift-invariant.
    hidden, weight, targets, bias, _ = make(dtype=torch.float32)
    scale = torch.tensor(300.0, requires_grad=True)
    assert_matches((hidden, weight, targets, bias, scale), torch.float32, chunk_rows=16)


def test_upstream_gradient_is_applied():
    hidden, weight, targets, bias, scale = make()
    (3.0 * plain(hidden, weight, targets, bias, scale)).backward()
    expected = [p.grad.clone() for p in (hidden, weight, bias, scale)]
    for p in (hidden, weight, bias, scale):
        p.grad = None
    (3.0 * linear_cross_entropy(hidden, weight, targets, bias, scale, chunk_rows=4)).backward()
    for p, e in zip((hidden, weight, bias, scale), expected):
        torch.testing.assert_close(p.grad, e, **TOL[torch.float64])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_no_grad_matches_plain(reduction):
    args = make()
    with torch.no_grad():
        got = linear_cross_entropy(*args, reduction=reduction, chunk_rows=6)
        expected = plain(*args, reduction=reduction)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected, **TOL[torch.float64])


def test_python_float_scale():
    hidden, weight, targets, bias, _ = make()
    expected = plain(hidden, weight, targets, bias, torch.tensor(0.5, dtype=torch.float64))
    got = linear_cross_entropy(hidden, weight, targets, bias, 0.5)
    torch.testing.assert_close(got, expected, **TOL[torch.float64])


def test_default_chunk_depends_on_vocabulary():
    cpu = torch.device("cpu")
    small = default_chunk_rows(700, 1000, torch.float32, cpu)
    large = default_chunk_rows(700, 33278, torch.float32, cpu)
    huge = default_chunk_rows(700, 10**6, torch.float32, cpu)
    assert 1 <= huge <= large <= small <= 700


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(hidden=torch.zeros(37, 8, 1)), "2-D"),
        (dict(weight=torch.zeros(50, 9)), "d=8"),
        (dict(targets=torch.zeros(36, dtype=torch.long)), "targets"),
        (dict(targets=torch.zeros(37, dtype=torch.int32)), "targets"),
        (dict(targets=torch.full((37,), 50)), r"\[0, 50\)"),
        (dict(bias=torch.zeros(49)), "bias"),
        (dict(scale=torch.ones(1)), "0-dim"),
        (dict(reduction="none"), "reduction"),
        (dict(chunk_rows=0), "chunk_rows"),
        (dict(weight=torch.zeros(50, 8, dtype=torch.float64)), "float64"),
        (dict(hidden=torch.zeros(37, 8, dtype=torch.long)), "floating"),
    ],
)
def test_invalid_inputs(change, match):
    kw = dict(
        hidden=torch.zeros(37, 8),
        weight=torch.zeros(50, 8),
        targets=torch.zeros(37, dtype=torch.long),
        bias=None,
        scale=None,
    )
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(**kw)


def test_empty_batch_like_plain():
    hidden, weight, targets, bias, scale = make(n=0)
    assert_matches((hidden, weight, targets, bias, scale), equal_nan=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda(dtype):
    args = [None if t is None else t.detach().cuda().requires_grad_(t.requires_grad)
            for t in make(n=300, d=64, v=5000, dtype=dtype)]
    assert_matches(args, dtype, chunk_rows=None)
    assert_matches(args, dtype, reduction="sum", chunk_rows=64)
