"""The example's other models (issue 24): GRU and Elman RNNs on the LSTM's code path, and a
causal Transformer, each with every embedding mode; exact counts, no causal leak, tying that
shares one tensor, frozen parts without gradients, a sliding-window score equal to brute force,
exact resume, and generation with a bounded cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmfix import evaluation, memory
from lmfix.config import TrainConfig
from lmfix.errors import LmfixError
from lmfix.model import LM, MODELS, ModelConfig, count_params
from lmfix.train import resume, train

V, D = 40, 8
# embedding mode name -> (ModelConfig settings, TrainConfig settings)
MODES = {
    "learned": ({"embedding": "learned"}, {"embedding": "learned"}),
    "learned-untied": ({"embedding": "learned-untied"}, {"embedding": "learned-untied"}),
    "fixed": ({"embedding": "vectors", "fix": "both"}, {"embedding": "random-orthogonal"}),
    "fix-input": ({"embedding": "vectors", "fix": "input"},
                  {"embedding": "random-orthogonal", "fix": "input"}),
    "fix-output": ({"embedding": "vectors", "fix": "output"},
                   {"embedding": "hadamard", "fix": "output"}),
    "fix-none": ({"embedding": "vectors", "fix": "none"},
                 {"embedding": "random-orthogonal", "fix": "none"}),
    "cosine": ({"embedding": "vectors", "fix": "both", "cosine": True},
               {"embedding": "random-orthogonal", "cosine": True}),
    "learn-top": ({"embedding": "vectors", "fix": "both", "learn_top": 3},
                  {"embedding": "random-orthogonal", "learn_top": 3}),
    "delta-rank": ({"embedding": "vectors", "fix": "both", "delta_rank": 2},
                   {"embedding": "random-orthogonal", "delta_rank": 2}),
}


def make(model: str, mode: str = "learned", **kw) -> LM:
    cfg = ModelConfig(vocab_size=V, emsize=D, nhid=12, nlayers=2, dropout=0.0, model=model,
                      nhead=2, context=16, **{**MODES[mode][0], **kw})
    fixed = torch.linalg.qr(torch.randn(V, D))[0] if cfg.embedding == "vectors" else None
    top = torch.arange(cfg.learn_top) if cfg.learn_top else None
    torch.manual_seed(0)
    return LM(cfg, fixed, top)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_every_model_with_every_mode_counts_exactly_and_freezes_what_is_fixed(model, mode):
    m = make(model, mode)
    c, cfg = count_params(m), m.cfg
    e = memory.param_counts(V, D, cfg.nhid, cfg.nlayers, cfg.embedding, cfg.fix, cfg.learn_top,
                            cfg.delta_rank, model, cfg.positions, cfg.context)
    assert (c["trainable"], c["fixed"]) == (e["trainable"], e["fixed"])
    params = {id(p) for p in m.parameters()}
    assert len(params) == len(list(m.parameters()))  # every tensor counted once
    if m.layout.tied:
        assert m.input_table.base is m.output_table.base  # tying shares one tensor
    x = torch.randint(0, V, (6, 3))
    out, _ = m(x, m.init_hidden(3))
    m.loss(out, torch.randint(0, V, (18,))).backward()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad])
    opt.step()
    if "fixed_weight" in dict(m.named_buffers()):
        fw = m.fixed_weight
        assert not fw.requires_grad and fw.grad is None and id(fw) not in params
        assert all(id(fw) != id(p) for g in opt.param_groups for p in g["params"])
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_the_transformer_reads_nothing_after_a_position():
    """Changing tokens after position t leaves every output up to t unchanged: in training
    mode, in evaluation, and through the generation cache."""
    for positions, norm in (("sinusoidal", "pre"), ("learned", "pre"), ("sinusoidal", "post")):
        m = make("transformer", positions=positions, norm=norm)
        x = torch.randint(0, V, (10, 2))
        y = x.clone()
        y[6:] = (y[6:] + 1) % V
        for mode in (m.train, m.eval):
            mode()
            a, _ = m(x, ())
            b, _ = m(y, ())
            a, b = a.view(10, 2, -1), b.view(10, 2, -1)
            assert torch.allclose(a[:6], b[:6], atol=1e-6) and not torch.allclose(a[6:], b[6:])
        m.eval()
        from lmfix.transformer import KVCache
        cache = KVCache(m.cfg.nlayers)
        steps = [m(x[i: i + 1], (), cache=cache)[0] for i in range(10)]
        full, _ = m(x, ())
        assert torch.allclose(torch.cat(steps), full, atol=1e-5)  # cached == whole window


@pytest.mark.parametrize("rows,width", [(23, 6), (7, 6), (30, 1), (40, 9)])
def test_the_sliding_window_score_equals_brute_force(rows, width):
    """Each target is scored once, with the context the window rule states: recompute every
    target alone from exactly that context."""
    m = make("transformer").eval()
    source = torch.randint(0, V, (rows, 3))
    loss, n = evaluation.mean_nll(m, source, width)
    assert n == (rows - 1) * 3
    total = 0.0
    ctx = evaluation.context_of(m, width)
    for start, first, end in evaluation.windows(rows, width):
        for t in range(first, end):
            feats, _ = m(source[start:t], ())
            last = feats.view(t - start, 3, -1)[-1]
            total += m.loss(last, source[t], reduction="sum").item()
            if start > 0:
                assert t - start >= ctx["min_context"]
    assert loss == pytest.approx(total / n, rel=1e-5)
    assert [t for s, f, e in evaluation.windows(rows, width) for t in range(f, e)] == \
        list(range(1, rows))  # every target exactly once


def tiny_cfg(tiny_corpus_dir, out, model, **kw) -> TrainConfig:
    base = dict(data=str(tiny_corpus_dir), out=str(out), emsize=D, nhid=12, epochs=1,
                batch_size=4, bptt=8, dropout=0.0, model=model, log_interval=5)
    if model == "transformer":
        base.update(optimizer="adamw", lr=1e-3, warmup=5, clip=1.0)
    else:
        base.update(lr=5.0)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", ["learned", "learned-untied", "fixed", "fix-output",
                                  "delta-rank"])
def test_each_model_trains_with_each_mode(tiny_corpus_dir, tmp_path, model, mode):
    s = train(tiny_cfg(tiny_corpus_dir, tmp_path / "r", model, **MODES[mode][1]),
              progress=False)
    assert math.isfinite(s["val_ppl"]) and s["model"] == model
    cfg = s["config"]["model"]
    e = memory.param_counts(s["vocab_size"], D, 12, 2, cfg["embedding"], cfg["fix"],
                            cfg["learn_top"], cfg["delta_rank"], model, cfg["positions"], 8)
    assert (s["params"]["trainable"], s["params"]["fixed"]) == (e["trainable"], e["fixed"])
    kind = "carried state" if model != "transformer" else "sliding window"
    assert s["eval_context"]["kind"] == kind


def test_transformer_resumes_exactly_and_evaluate_reproduces_its_summary(tiny_corpus_dir,
                                                                          tmp_path, capsys):
    import lmfix
    a = train(tiny_cfg(tiny_corpus_dir, tmp_path / "a", "transformer", epochs=2,
                       positions="learned"), progress=False)
    train(tiny_cfg(tiny_corpus_dir, tmp_path / "b", "transformer", epochs=1,
                   positions="learned"), progress=False)
    b = resume(tmp_path / "b", epochs=2, progress=False)
    assert (b["val_loss"], b["test_loss"]) == (a["val_loss"], a["test_loss"])  # bit for bit
    m = lmfix.load(tmp_path / "a")
    r = m.evaluate("test")["splits"]["test"]
    assert r["ppl"] == pytest.approx(a["test_ppl"], rel=1e-4)
    assert r["context"] == a["eval_context"] == {"kind": "sliding window", "window": 8,
                                                 "stride": 4, "min_context": 5}
    text = m.generate("the cat", words=60, seed=3)[0]  # longer than the 8-token window
    assert len(text.split()) + text.count("\n") >= 59


def test_generation_cache_stays_within_the_window():
    from lmfix.inference import _Reader
    m = make("transformer").eval()
    reader = _Reader(m, 2)
    reader.read(torch.randint(0, V, (30, 2)))  # a prompt longer than the window: its tail
    assert len(reader.cache) == 16
    for _ in range(50):
        reader.read(torch.randint(0, V, (1, 2)))
        assert len(reader.cache) <= 16


@pytest.mark.parametrize("kw,why", [
    ({"model": "lstm", "nhead": 4}, "--nhead applies to --model transformer only, not lstm"),
    ({"model": "gru", "positions": "learned"}, "--positions applies to --model transformer"),
    ({"model": "transformer", "nhead": 3}, "--nhead 3 does not divide --emsize 8"),
    ({"model": "unicorn"}, "--model: 'unicorn' is not one of lstm, gru"),
])
def test_settings_that_do_not_fit_the_model_are_refused(tiny_corpus_dir, tmp_path, kw, why):
    kw = dict(kw)
    with pytest.raises(LmfixError, match=why):
        train(tiny_cfg(tiny_corpus_dir, tmp_path / "r", kw.pop("model"), **kw), progress=False)


def test_a_changed_bptt_on_resume_is_refused_for_learned_positions(tiny_corpus_dir, tmp_path):
    train(tiny_cfg(tiny_corpus_dir, tmp_path / "r", "transformer", positions="learned"),
          progress=False)
    with pytest.raises(LmfixError, match=r"--bptt 16 \(the run has 8\)"):
        resume(tmp_path / "r", bptt=16, epochs=2, progress=False)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["config"]["model"]["context"] == 8


def test_transformer_stopped_mid_epoch_resumes_bit_for_bit(tiny_corpus_dir, tmp_path,
                                                          monkeypatch):
    from lmfix import train as train_module
    from lmfix.errors import Interrupted
    ref = train(tiny_cfg(tiny_corpus_dir, tmp_path / "ref", "transformer", epochs=2,
                         dropout=0.1), progress=False)
    polls = []

    class FakeFlag:  # "SIGTERM" at the 7th batch of epoch 1
        def __enter__(self):
            return lambda: polls.append(1) or ("SIGTERM" if len(polls) >= 7 else None)

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(train_module, "Flag", FakeFlag)
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(tiny_cfg(tiny_corpus_dir, out, "transformer", epochs=2, dropout=0.1),
              progress=False)
    monkeypatch.undo()
    from lmfix.checkpoint import load_checkpoint
    assert load_checkpoint(out / "checkpoint.pt")["state"]["batch"] == 6
    again = resume(out, progress=False)
    assert (again["val_loss"], again["test_loss"]) == (ref["val_loss"], ref["test_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_cuda_matches_cpu_and_trains_in_bf16(model):
    """On a GPU (scripts/gpu_check.sh runs this): SDPA's fused kernels and cuDNN score what
    the CPU scores, and a bf16 autocast step runs."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    m = make(model, "fixed").eval()
    source = torch.randint(0, V, (30, 4))
    cpu = evaluation.mean_nll(m, source, 8)[0]
    gpu = evaluation.mean_nll(m.cuda(), source.cuda(), 8)[0]
    assert gpu == pytest.approx(cpu, rel=1e-4)
    m.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = m(source[:8].cuda(), m.init_hidden(4))
        loss = m.loss(out, source[1:9].reshape(-1).cuda())
    loss.backward()
    assert math.isfinite(loss.item())
