import pytest
import torch

from lmfix.model import LM, ModelConfig, count_params, normalize_vectors

V = 50


def lstm_params(d_in: int, h: int, layers: int) -> int:
    """nn.LSTM: per layer 4h×(in + h) weights and two 4h biases."""
    return sum(4 * h * ((d_in if l == 0 else h) + h) + 8 * h for l in range(layers))


def make(mode: str, d=16, h=16, layers=2, **kw) -> LM:
    """A model of ``mode``: learned, learned-untied, or fixed (given vectors, --fix both)."""
    if mode == "fixed":
        mode, kw = "vectors", {"fix": "both", **kw}
    cfg = ModelConfig(vocab_size=V, emsize=d, nhid=h, nlayers=layers, embedding=mode, **kw)
    fixed = torch.linalg.qr(torch.randn(V, d))[0] if mode == "vectors" else None
    return LM(cfg, fixed)


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
    p = count_params(LM(cfg))
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


# --- issue 14: which side is fixed, trainable parts (lmfix.embedding_parts) -----------------

K, R = 7, 3  # learn_top rows, delta_rank
# name -> ModelConfig settings; every combination with given vectors
SPLITS = {"both": {"fix": "both"}, "input": {"fix": "input"}, "output": {"fix": "output"},
          "none": {"fix": "none"}, "top": {"fix": "both", "learn_top": K},
          "delta": {"fix": "both", "delta_rank": R},
          "top+delta": {"fix": "both", "learn_top": K, "delta_rank": R}}


def make_split(name: str, d=16, h=16, **kw) -> LM:
    cfg = ModelConfig(vocab_size=V, emsize=d, nhid=h, embedding="vectors", **SPLITS[name], **kw)
    top = torch.arange(V - 1, V - 1 - cfg.learn_top, -1) if cfg.learn_top else None
    return LM(cfg, torch.linalg.qr(torch.randn(V, d))[0], top)


def expected_counts(name: str, d=16, h=16) -> dict:
    """By formula: the LSTM, the bias, then what each side adds (tied tables once)."""
    s = SPLITS[name]
    proj = (h * d + d) if h != d else 0
    learned_sides = {"both": 0, "input": 1, "output": 1, "none": 1}.get(s.get("fix", "both"))
    emb_trainable = learned_sides * V * d + s.get("learn_top", 0) * d + \
        s.get("delta_rank", 0) * (V + d)
    emb_fixed = 0 if s.get("fix") == "none" else V * d
    scale = 1 if s.get("fix", "both") in ("both", "output") else 0
    trainable = lstm_params(d, h, 2) + proj + V + scale + emb_trainable
    return {"trainable": trainable, "fixed": emb_fixed, "total": trainable + emb_fixed,
            "embedding_trainable": emb_trainable, "embedding_fixed": emb_fixed}


@pytest.mark.parametrize("name", list(SPLITS))
@pytest.mark.parametrize("d,h", [(16, 16), (8, 12)])
def test_split_param_counts_by_formula(name, d, h):
    assert count_params(make_split(name, d, h)) == expected_counts(name, d, h)


@pytest.mark.parametrize("name", ["both", "input", "output", "top", "delta", "top+delta"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fixed_part_gets_no_gradient_no_optimizer_state_and_never_changes(name, optimizer):
    """The issue's check for every mode with a fixed part: the V×d buffer has no gradient, is
    not in the optimizer (no state), and is bit-identical after training steps; trainable parts
    move, and with learn_top only the chosen rows of the combined matrix do."""
    torch.manual_seed(0)
    m = make_split(name)
    before = m.fixed_weight.clone()
    combined_before = m.output_table.weight().detach().clone() if m.layout.tied else None
    assert "fixed_weight" not in dict(m.named_parameters())
    params = [p for p in m.parameters() if p.requires_grad]
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(params, lr=0.1)
    hidden = m.init_hidden(4)
    for _ in range(3):
        x, y = torch.randint(0, V, (6, 4)), torch.randint(0, V, (24,))
        opt.zero_grad()
        out, hidden = m(x, tuple(t.detach() for t in hidden))
        m.loss(out, y).backward()
        assert m.fixed_weight.grad is None and not m.fixed_weight.requires_grad
        opt.step()
    assert torch.equal(m.fixed_weight, before)
    assert all(t is not m.fixed_weight for g in opt.param_groups for t in g["params"])
    assert all(v is not m.fixed_weight for st in opt.state.values() for v in st.values())
    if m.top_rows is not None:
        after = m.output_table.weight().detach()
        moved = (after != combined_before).any(dim=1)
        others = torch.ones(V, dtype=torch.bool)
        others[m.top_rows.ids] = False
        if m.delta is None:
            assert not moved[others].any()  # rows outside the top K stay exactly fixed
        assert moved[m.top_rows.ids].all()
    if m.delta is not None:
        assert m.delta.A.abs().sum() > 0  # B's random start lets A learn from the first step


@pytest.mark.parametrize("name", ["both", "output"])
def test_a_bare_fixed_classifier_makes_no_weight_sized_tensor_in_the_loss(name):
    from test_loss import RecordShapes
    m = make_split(name, d=8, h=8)
    feats = torch.randn(40, 8, requires_grad=True)
    with RecordShapes() as rec:
        m.loss(feats, torch.randint(0, V, (40,))).backward()
    assert (V, 8) not in rec.shapes  # no V×d gradient anywhere in the loss's backward


def test_parts_start_at_the_fixed_vectors_and_combine_as_documented():
    m = make_split("top+delta")
    w = m.output_table.weight()
    assert torch.equal(w.detach(), m.fixed_weight)  # A = 0, top rows copied
    ids = torch.randint(0, V, (5, 3))
    assert torch.allclose(m.embed(ids), w[ids])  # the row lookup equals the whole matrix's rows
    with torch.no_grad():
        m.delta.A.normal_()
        m.top_rows.weight.add_(1.0)
    w = m.output_table.weight().detach()
    expect = m.fixed_weight + m.delta.A @ (m.delta.GAIN * m.delta.B)
    expect[m.top_rows.ids] = m.top_rows.weight  # the trained rows replace theirs whole
    assert torch.allclose(w, expect, atol=1e-6)
    assert torch.allclose(m.embed(ids), w[ids], atol=1e-6)
    # fused loss equals the plain logits loss through the combined matrix
    out, _ = m.eval()(ids, m.init_hidden(3))
    y = torch.randint(0, V, (15,))
    plain = torch.nn.functional.cross_entropy(m.logits(out), y)
    assert torch.allclose(m.loss(out, y), plain, atol=1e-5)


def test_split_state_dict_keys_and_tying():
    keys = {n: set(make_split(n).state_dict()) - {k for k in make_split(n).state_dict()
                                                   if k.startswith("rnn.")}
            for n in SPLITS}
    assert keys["both"] == {"fixed_weight", "scale", "bias"}  # as before issue 14
    assert keys["input"] == {"fixed_weight", "decoder_weight", "bias"}
    assert keys["output"] == {"fixed_weight", "scale", "encoder.weight", "bias"}
    assert keys["none"] == {"encoder.weight", "bias"}  # what a learned tied model has
    assert keys["top+delta"] == {"fixed_weight", "scale", "bias", "top_rows.ids",
                                 "top_rows.weight", "delta.A", "delta.B"}
    assert make_split("none").layout.tied and not make_split("input").layout.tied
    m = make_split("input")
    assert torch.equal(m.decoder_weight.detach(), m.fixed_weight)  # starts from the vectors
    assert m.scale is None  # a learned classifier needs no global scale


def test_bad_split_combinations_are_refused():
    with pytest.raises(ValueError, match="fix"):
        LM(ModelConfig(vocab_size=V, emsize=8, nhid=8, fix="input"))  # learned + fix
    with pytest.raises(ValueError, match="fixed tied"):
        make_split("input", learn_top=2)
    with pytest.raises(ValueError, match="top_ids"):
        LM(ModelConfig(vocab_size=V, emsize=8, nhid=8, embedding="vectors", fix="both"),
               torch.randn(V, 8), torch.arange(2))
    with pytest.raises(ValueError, match="fix"):  # given vectors need their side said
        LM(ModelConfig(vocab_size=V, emsize=8, nhid=8, embedding="vectors"),
               torch.randn(V, 8))


def test_a_checkpoint_rebuilds_into_a_placeholder_model():
    """As inference does: zeros for the vectors, no top ids; the state dict brings both (and
    the derived slot index follows the loaded ids)."""
    m = make_split("top+delta")
    with torch.no_grad():
        m.top_rows.weight.add_(1.0)
        m.delta.A.normal_()
    cfg = ModelConfig(vocab_size=V, emsize=16, nhid=16, embedding="vectors", fix="both",
                      learn_top=K, delta_rank=R)
    back = LM(cfg, torch.zeros(V, 16))
    back.load_state_dict(m.state_dict())
    ids = torch.randint(0, V, (6, 2))
    assert torch.equal(back.output_weight, m.output_weight)
    assert torch.equal(back.embed(ids), m.embed(ids))


def test_cosine_applies_to_a_fixed_classifier_only():
    m = make_split("output", cosine=True).eval()
    assert torch.allclose(m.fixed_weight.norm(dim=1), torch.ones(V), atol=1e-5)
    out, _ = m(torch.randint(0, V, (4, 2)), m.init_hidden(2))
    assert torch.allclose(out.norm(dim=1), torch.ones(8), atol=1e-5)
    m = make_split("input", cosine=True).eval()  # learned classifier: cosine does nothing
    out, _ = m(torch.randint(0, V, (4, 2)), m.init_hidden(2))
    assert not torch.allclose(out.norm(dim=1), torch.ones(8), atol=1e-3)


def test_top_ids_most_frequent_first_ties_by_id():
    from lmfix.embedding_parts import top_ids
    train = torch.tensor([3, 3, 3, 1, 1, 2, 2, 0, 4])
    assert top_ids(train, 6, 4).tolist() == [3, 1, 2, 0]
