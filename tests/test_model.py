import pytest
import torch

from lmfix.model import LSTMLM, ModelConfig, count_params, normalize_vectors

V = 50


def lstm_params(d_in: int, h: int, layers: int) -> int:
    """nn.LSTM: per layer 4h×(in + h) weights and two 4h biases."""
    return sum(4 * h * ((d_in if l == 0 else h) + h) + 8 * h for l in range(layers))


def make(mode: str, d=16, h=16, layers=2, **kw) -> LSTMLM:
    cfg = ModelConfig(vocab_size=V, emsize=d, nhid=h, nlayers=layers, embedding=mode, **kw)
    fixed = torch.linalg.qr(torch.randn(V, d))[0] if mode == "fixed" else None
    return LSTMLM(cfg, fixed)


def test_param_counts_match_independent_arithmetic():
    d = 16
    lstm = lstm_params(d, d, 2)
    assert count_params(make("learned")) == {
        "trainable": V * d + lstm + V, "fixed": 0, "total": V * d + lstm + V,
        "embedding_trainable": V * d, "embedding_fixed": 0}
    untied = count_params(make("learned-untied"))
    assert untied["trainable"] == 2 * V * d + lstm + V
    fixed = count_params(make("fixed"))
    assert fixed["trainable"] == lstm + V + 1  # + the learned global scale
    assert fixed["fixed"] == V * d and fixed["total"] == fixed["trainable"] + V * d
    # the check: fixed is smaller than learned by exactly V×d, ± the scale
    assert count_params(make("learned"))["trainable"] - fixed["trainable"] == V * d - 1


def test_projection_when_hidden_differs_from_embedding():
    d, h = 8, 12
    m = make("learned", d=d, h=h)
    assert count_params(m)["trainable"] == V * d + lstm_params(d, h, 2) + (h * d + d) + V
    out, _ = m(torch.randint(0, V, (5, 3)), m.init_hidden(3))
    assert out.shape == (15, d)
    # untied reads the LSTM output directly: no projection
    assert make("learned-untied", d=d, h=h).proj is None


def test_paper_size_parameter_share():
    """WikiText-2, d=512: the untied embedding+classifier are ~89% of the model."""
    cfg = ModelConfig(vocab_size=33278, emsize=512, nhid=512, embedding="learned-untied")
    p = count_params(LSTMLM(cfg))
    assert p["embedding_trainable"] == 2 * 33278 * 512
    assert 0.88 < p["embedding_trainable"] / p["trainable"] < 0.90


def test_fixed_embedding_gets_no_gradient_and_never_changes():
    torch.manual_seed(0)
    m = make("fixed")
    before = m.fixed_weight.clone()
    assert "fixed_weight" not in dict(m.named_parameters())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    hidden = m.init_hidden(4)
    for _ in range(3):
        x, y = torch.randint(0, V, (6, 4)), torch.randint(0, V, (24,))
        opt.zero_grad()
        out, hidden = m(x, tuple(h.detach() for h in hidden))
        m.loss(out, y).backward()
        assert m.fixed_weight.grad is None and not m.fixed_weight.requires_grad
        assert m.scale.grad is not None
        opt.step()
    assert torch.equal(m.fixed_weight, before)


def test_fused_loss_equals_plain_logits_loss():
    torch.manual_seed(0)
    for mode in ("learned", "learned-untied", "fixed"):
        m = make(mode).eval()
        out, _ = m(torch.randint(0, V, (7, 3)), m.init_hidden(3))
        y = torch.randint(0, V, (21,))
        plain = torch.nn.functional.cross_entropy(m.logits(out), y)
        assert torch.allclose(m.loss(out, y), plain, atol=1e-5)


def test_cosine_mode_normalizes_rows_and_hidden():
    m = make("fixed", cosine=True).eval()
    assert torch.allclose(m.fixed_weight.norm(dim=1), torch.ones(V), atol=1e-5)
    out, _ = m(torch.randint(0, V, (4, 2)), m.init_hidden(2))
    assert torch.allclose(out.norm(dim=1), torch.ones(8), atol=1e-5)
    assert m.scale.item() == 10.0  # the paper's fixed_proj.py initial scale


def test_normalize_vectors():
    w = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert torch.equal(normalize_vectors(w, "raw"), w)
    assert torch.allclose(normalize_vectors(w, "unit").norm(dim=1), torch.ones(2))
    assert torch.allclose(normalize_vectors(w, "mean-unit").norm(dim=1).mean(), torch.tensor(1.0))
    with pytest.raises(ValueError):
        normalize_vectors(w, "bogus")
