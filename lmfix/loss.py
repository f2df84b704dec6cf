"""Fused output layer: linear projection + cross-entropy without the full N x V logits.

A word-level LM spends most of its output-layer time and memory on the logits matrix
(N = bptt * batch rows by V = vocabulary columns; 700 x 33,278 floats is 93 MB in float32).
Following the "fused linear cross entropy" of Liger-Kernel (Hsu et al., 2024), rows are
processed in chunks, and each chunk's gradients are produced in the forward pass right
after its loss, while its logits are at hand, so only one chunk of logits ever exists.
Backward then only rescales the saved gradients by the incoming scalar.

The weight gradient is computed only if the weight requires grad: with a fixed (frozen)
embedding as output weight (Hoffer et al., 2018, "Fix your classifier") that skips one of
the three N x V x d matmuls and the V x d gradient buffer altogether.
"""

from __future__ import annotations

import torch
from torch import Tensor

# How many bytes of logits one chunk may hold when the caller gives no chunk_rows. From ~200
# rows on, time per token is flat (small chunks leave the N x V x d matmuls below peak), so
# 48 MiB on CPU and 64 MiB on CUDA; run scripts/bench_loss.py for the numbers.
_CHUNK_BYTES = {"cpu": 48 << 20, "cuda": 64 << 20}
_MIN_CHUNK_ROWS = 32


def default_chunk_rows(n_rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> int:
    """Rows of logits handled at a time when ``chunk_rows`` is not given."""
    budget = _CHUNK_BYTES.get(device.type, _CHUNK_BYTES["cpu"])
    itemsize = torch.finfo(dtype).bits // 8
    max_rows = max(_MIN_CHUNK_ROWS, budget // (vocab * itemsize))
    # Equal chunks (700 rows -> 3 x 234, not 252 + 252 + 196): no small, slow last matmul.
    n_chunks = -(-n_rows // max_rows)
    return max(1, -(-n_rows // max(n_chunks, 1)))


def _chunks(n_rows: int, chunk_rows: int):
    for start in range(0, n_rows, chunk_rows):
        yield start, min(start + chunk_rows, n_rows)


def _log_probs(buf: Tensor, hs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Log-softmax of one chunk's logits, computed inside ``buf``."""
    # One buffer reused across chunks and log-softmax in place: no fresh n x V allocation
    # (each costs page faults on CPU) and no second n x V array as F.cross_entropy keeps.
    if bias is None:
        torch.mm(hs, weight.t(), out=buf)
    else:
        torch.addmm(bias, hs, weight.t(), out=buf)
    return torch.log_softmax(buf, 1, out=buf)


def _loss_only(hs, weight, bias, targets, chunk_rows) -> Tensor:
    """Per-row losses when nothing needs a gradient (evaluation)."""
    losses = hs.new_empty(hs.shape[0])
    buf = hs.new_empty(min(chunk_rows, hs.shape[0]), weight.shape[0])
    for a, b in _chunks(hs.shape[0], chunk_rows):
        logp = _log_probs(buf[: b - a], hs[a:b], weight, bias)
        losses[a:b] = logp.gather(1, targets[a:b, None]).squeeze(1).neg_()
    return losses


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, scale, targets, reduction, chunk_rows):
        need_h, need_w, need_b, need_s = ctx.needs_input_grad[:4]
        n_rows = hidden.shape[0]
        # d(sum of losses)/d(logits) = G = softmax - onehot; "mean" divides G by N. Applying
        # that factor to the small n x d and V x d results, not to G, saves an n x V pass.
        coef = 1.0 / n_rows if reduction == "mean" and n_rows else 1.0
        # Folding the scalar into the N x d input is cheaper than scaling N x V logits, and
        # hs is exactly the operand the weight gradient needs: G^T @ (scale * h).
        hs = hidden if scale is None else hidden * scale
        # G @ W serves both hidden and scale: d/dscale = sum(G * (h @ W^T)) = sum((G @ W) * h),
        # an N x d product instead of a further pass over the logits.
        gw = hidden.new_empty(hidden.shape) if (need_h or need_s) else None
        grad_w = torch.empty_like(weight) if need_w else None  # first chunk overwrites it
        grad_b = torch.zeros_like(bias) if need_b else None
        losses = hidden.new_empty(n_rows)
        buf = hidden.new_empty(min(chunk_rows, n_rows), weight.shape[0])
        for a, b in _chunks(n_rows, chunk_rows):
            t = targets[a:b, None]
            g = _log_probs(buf[: b - a], hs[a:b], weight, bias)
            losses[a:b] = g.gather(1, t).squeeze(1).neg_()
            g.exp_().scatter_add_(1, t, g.new_full(t.shape, -1.0))  # softmax - onehot
            if gw is not None:
                torch.mm(g, weight, out=gw[a:b])
            if grad_w is not None:
                grad_w.addmm_(g.t(), hs[a:b], beta=1.0 if a else 0.0, alpha=coef)
            if grad_b is not None:
                grad_b.add_(g.sum(0), alpha=coef)
        if grad_w is not None and n_rows == 0:
            grad_w.zero_()
        grad_s = (gw * hidden).sum().mul_(coef).reshape(scale.shape) if need_s else None
        grad_h = None
        if need_h:
            grad_h = gw.mul_(coef) if scale is None else gw.mul_(scale * coef)
        ctx.save_for_backward(grad_h, grad_w, grad_b, grad_s)
        return losses.sum() if reduction == "sum" else losses.mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grads = [None if g is None else g * grad_out for g in ctx.saved_tensors]
        return (*grads, None, None, None)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None = None,
    scale: Tensor | float | None = None,
    reduction: str = "mean",
    chunk_rows: int | None = None,
) -> Tensor:
    """Cross-entropy of ``scale * hidden @ weight.T + bias`` against ``targets``.

    Equal to ``F.cross_entropy(scale * (hidden @ weight.T) + bias, targets, reduction=...)``
    but never holds more than ``chunk_rows`` rows of logits (default: see
    :func:`default_chunk_rows`). hidden is (N, d), weight (V, d), targets (N,) int64,
    bias (V,) or None, scale a 0-dim tensor, a number or None; reduction "mean" or "sum".

    Gradients go to each of hidden, weight, bias and scale that requires grad; a weight
    that does not (a fixed embedding) costs no V x d gradient work or memory. When grad is
    enabled they are computed during this call, so a loss that is never backpropagated
    should be computed under ``torch.no_grad()``. Double backward is not supported.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if hidden.dim() != 2 or weight.dim() != 2:
        raise ValueError(
            f"hidden and weight must be 2-D (N, d) and (V, d), got shapes "
            f"{tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    n_rows, dim = hidden.shape
    vocab = weight.shape[0]
    if weight.shape[1] != dim:
        raise ValueError(f"weight is {tuple(weight.shape)} but hidden has d={dim} columns")
    if not hidden.is_floating_point():
        raise ValueError(f"hidden must be a floating-point tensor, got {hidden.dtype}")
    if targets.shape != (n_rows,) or targets.dtype != torch.long:
        raise ValueError(
            f"targets must be int64 of shape ({n_rows},), got {targets.dtype} "
            f"of shape {tuple(targets.shape)}"
        )
    if bias is not None and bias.shape != (vocab,):
        raise ValueError(f"bias must have shape ({vocab},), got {tuple(bias.shape)}")
    if isinstance(scale, (int, float)):
        scale = hidden.new_tensor(float(scale))
    if scale is not None and scale.dim() != 0:
        raise ValueError(f"scale must be a 0-dim tensor, got shape {tuple(scale.shape)}")
    for name, t in (("weight", weight), ("bias", bias), ("scale", scale), ("targets", targets)):
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name} is on {t.device} but hidden is on {hidden.device}")
        if t is not None and t is not targets and t.dtype != hidden.dtype:
            raise ValueError(f"{name} is {t.dtype} but hidden is {hidden.dtype}")
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(n_rows, vocab, hidden.dtype, hidden.device)
    elif chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    # A range check costs a device sync on accelerators, so it is done on CPU only; there
    # an out-of-range index would otherwise surface as an obscure gather error.
    if hidden.device.type == "cpu" and n_rows:
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"targets must lie in [0, {vocab}), got values in [{lo}, {hi}]")

    params = (hidden, weight, bias, scale)
    if not (torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in params)):
        hs = hidden if scale is None else hidden * scale
        losses = _loss_only(hs, weight, bias, targets, chunk_rows)
        return losses.sum() if reduction == "sum" else losses.mean()
    return _LinearCrossEntropy.apply(hidden, weight, bias, scale, targets, reduction, chunk_rows)
