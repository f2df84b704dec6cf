import json
import math

import numpy as np
import pytest
import torch

from lmfix.checkpoint import load_checkpoint
from lmfix.cli import main
from lmfix.errors import LmfixError
from lmfix.train import TrainConfig, train

TINY = dict(emsize=16, nhid=16, epochs=2, batch_size=4, bptt=8, lr=5.0, log_interval=5)


def run_cfg(tiny_corpus_dir, out, **kw):
    return TrainConfig(data=str(tiny_corpus_dir), out=str(out), **{**TINY, **kw})


def test_tiny_end_to_end_writes_a_complete_run_dir(tiny_corpus_dir, tmp_path):
    out = tmp_path / "run"
    s = train(run_cfg(tiny_corpus_dir, out), command="test", progress=False)
    for f in ("config.json", "status.json", "metrics.jsonl", "summary.json", "best.pt",
              "checkpoint.pt"):
        assert (out / f).is_file(), f
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    assert math.isfinite(s["test_ppl"]) and s["test_ppl"] < s["vocab_size"]
    assert s["val_ppl"] == pytest.approx(math.exp(s["val_loss"]))
    epochs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and s["epochs"] == 2
    for key in ("vocab_size", "val_ppl", "test_ppl", "params", "tokens_per_s", "wall_s", "device",
                "embedding", "config"):
        assert key in s
    assert s["params"]["total"] == s["params"]["trainable"] + s["params"]["fixed"]
    # word-level tokens are words: word-level perplexity is the perplexity
    assert s["test_word_ppl"] == pytest.approx(s["test_ppl"])
    assert s["val_word_ppl"] == pytest.approx(s["val_ppl"])
    assert 0 < s["test_bpc"] < 20


def test_perplexity_is_token_weighted_mean_nll(tiny_corpus_dir, tmp_path):
    """Independent check: recompute test ppl from the best checkpoint with plain logits."""
    from lmfix.data import batchify, load_corpus
    from lmfix.model import LM, ModelConfig
    out = tmp_path / "run"
    s = train(run_cfg(tiny_corpus_dir, out, epochs=1), progress=False)
    corpus = load_corpus(str(tiny_corpus_dir))
    model = LM(ModelConfig(**s["config"]["model"]))
    model.load_state_dict(load_checkpoint(out / "best.pt")["model"])
    model.eval()
    data = batchify(corpus.test.long(), 10)  # (stored as int32 by the id cache)
    x, y = data[:-1], data[1:].reshape(-1)  # one chunk covering the whole split
    with torch.no_grad():
        feats, _ = model(x, model.init_hidden(10))
        nll = torch.nn.functional.cross_entropy(model.logits(feats), y, reduction="sum")
    # bptt 8 chunks carry the hidden state, so one long chunk gives the same NLL
    assert s["test_ppl"] == pytest.approx(math.exp(nll.item() / y.numel()), rel=1e-4)
    assert s["eval_tokens"]["test"] == y.numel()


def test_fixed_embedding_stays_fixed_through_training(tiny_corpus_dir, tmp_path):
    from lmfix.data import load_corpus
    from lmfix.embedding_spec import resolve_embedding
    from lmfix.model import normalize_vectors
    out = tmp_path / "run"
    s = train(run_cfg(tiny_corpus_dir, out, embedding="random-orthogonal"), progress=False)
    learned = train(run_cfg(tiny_corpus_dir, tmp_path / "learned"), progress=False)
    assert s["fixed"] and s["tied"] and s["final_scale"] is not None
    assert learned["params"]["trainable"] - s["params"]["trainable"] == s["vocab_size"] * 16 - 1
    assert s["params"]["fixed"] == s["vocab_size"] * 16
    corpus = load_corpus(str(tiny_corpus_dir))
    expect = normalize_vectors(resolve_embedding("random-orthogonal", corpus.vocab.words, 16,
                                                 1111).matrix, "unit")
    assert torch.equal(load_checkpoint(out / "best.pt")["model"]["fixed_weight"], expect)


def test_embedding_file_by_word_with_coverage(tiny_corpus_dir, tmp_path):
    from lmfix.data import load_corpus
    words = load_corpus(str(tiny_corpus_dir)).vocab.words
    rng = np.random.default_rng(0)
    path = tmp_path / "vecs.txt"
    rows = [f"{w} " + " ".join(f"{v:.5f}" for v in rng.normal(size=16)) for w in reversed(words)]
    path.write_text(f"{len(words)} 16\n" + "\n".join(rows) + "\n")
    s = train(run_cfg(tiny_corpus_dir, tmp_path / "run", embedding=str(path), emsize=None,
                      nhid=None, epochs=1), progress=False)
    assert s["emsize"] == 16 and s["fixed"] and s["coverage"]["missing"] == 0


def test_max_eval_tokens_is_recorded(tiny_corpus_dir, tmp_path):
    s = train(run_cfg(tiny_corpus_dir, tmp_path / "r", epochs=1, max_eval_tokens=60),
              progress=False)
    assert s["max_eval_tokens"] == 60 and s["eval_tokens"]["valid"] <= 60


def test_existing_run_is_not_overwritten(tiny_corpus_dir, tmp_path):
    cfg = run_cfg(tiny_corpus_dir, tmp_path / "r", epochs=1)
    train(cfg, progress=False)
    with pytest.raises(LmfixError, match="already holds a run"):
        train(cfg, progress=False)
    train(cfg, progress=False, force=True)


def test_resume_with_more_epochs_trains_them_and_a_finished_resume_is_a_no_op(tiny_corpus_dir,
                                                                            tmp_path, capsys):
    """`--resume RUN --epochs 2` after 1 epoch trains epoch 2 (it was silently dropped, the
    saved config winning: issue 21), bit for bit as 2 epochs at once; config.json records it.
    Resuming the finished run again changes nothing: same summary, no new records."""
    a = train(run_cfg(tiny_corpus_dir, tmp_path / "a", epochs=2), progress=False)
    b_dir = tmp_path / "b"
    train(run_cfg(tiny_corpus_dir, b_dir, epochs=1), progress=False)
    assert main(["train", "--resume", str(b_dir), "--epochs", "2", "--quiet"]) == 0
    b = json.loads((b_dir / "summary.json").read_text())
    assert b["epochs"] == 2 and b["config"]["train"]["epochs"] == 2
    assert b["val_loss"] == a["val_loss"] and b["test_loss"] == a["test_loss"]
    epochs = [json.loads(l)["epoch"] for l in (b_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["kind"] == "epoch"]
    assert epochs == [1, 2]
    resumed = json.loads((b_dir / "config.json").read_text())["resumed"]
    assert [r["changes"] for r in resumed] == [{"epochs": {"from": 1, "to": 2}}]
    files = {p.name: p.stat().st_mtime_ns for p in b_dir.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(b_dir), "--quiet"]) == 0  # finished: nothing to do
    assert "valid ppl" in capsys.readouterr().out
    skip = ("config.json", ".lock")  # the resume is recorded; the lock names its holder
    assert {p.name: p.stat().st_mtime_ns for p in b_dir.iterdir() if p.name not in skip} \
        == {k: v for k, v in files.items() if k not in skip}
    assert len(json.loads((b_dir / "config.json").read_text())["resumed"]) == 2


def test_resume_refuses_a_changed_model_by_name(tiny_corpus_dir, tmp_path, capsys):
    out = tmp_path / "r"
    train(run_cfg(tiny_corpus_dir, out, epochs=1), progress=False)
    before = (out / "config.json").read_text()
    assert main(["train", "--resume", str(out), "--epochs", "3", "--lr", "1", "--emsize", "32",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--emsize 32 (the run has 16)" in err
    assert "--lr 1.0 (the run has 5.0)" in err and "--epochs" not in err
    assert (out / "config.json").read_text() == before  # nothing recorded, nothing trained
    from lmfix.train import resume
    train(run_cfg(tiny_corpus_dir, tmp_path / "c", epochs=2), progress=False)
    with pytest.raises(LmfixError, match="already trained 2 epochs"):
        resume(tmp_path / "c", epochs=1, progress=False)


def cli(*args) -> int:
    return main([str(a) for a in args])


def test_cli_train_and_bad_inputs(tiny_corpus_dir, tmp_path, capsys):
    common = ["--emsize", 16, "--epochs", 1, "--batch-size", 4, "--bptt", 8, "--quiet"]
    assert cli("train", "--data", tiny_corpus_dir, "--out", tmp_path / "ok", *common) == 0
    assert "test ppl" in capsys.readouterr().out
    bad = [
        ("--data", tmp_path / "missing"),
        ("--embedding", tmp_path / "nofile.txt"),
        ("--device", "cuda") if not torch.cuda.is_available() else ("--device", "tpu"),
        ("--out", tmp_path / "ok"),  # already a finished run there
    ]
    for extra in bad:
        args = ["train", "--data", tiny_corpus_dir, "--out", tmp_path / "x", *common, *extra]
        assert cli(*args) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("lmfix: error:") and "Traceback" not in err
    (tmp_path / "afile").write_text("")
    assert cli("train", "--data", tiny_corpus_dir, "--out", tmp_path / "afile", *common) == 2
    assert cli("train", "--resume", "--out", tmp_path / "never") == 2


def test_nan_loss_stops_with_a_clear_error(tiny_corpus_dir, tmp_path):
    with pytest.raises(LmfixError, match="loss became"):
        # (a NaN --lr is refused up front now; an unclipped huge step diverges instead)
        train(run_cfg(tiny_corpus_dir, tmp_path / "r", lr=1e30, clip=0.0, log_interval=1),
              progress=False)
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"


def test_amp_trains_to_a_finite_perplexity_or_is_refused_in_one_line(tiny_corpus_dir, tmp_path,
                                                                      capsys):
    """CPUs without bfloat16 LSTM kernels (no AVX-512 BF16) raised a oneDNN traceback at the
    first step; now --amp is refused up front with one line, or it trains."""
    from lmfix.train import check_amp
    try:
        check_amp(torch.device("cpu"))
    except LmfixError:
        code = main(["train", "--data", str(tiny_corpus_dir), "--amp", "--device", "cpu",
                     "--epochs", "1", "--out", str(tmp_path / "amp"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("lmfix: error: --amp") and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        return
    s = train(run_cfg(tiny_corpus_dir, tmp_path / "amp", epochs=1, amp=True,
                      embedding="random-orthogonal"), progress=False)
    assert math.isfinite(s["test_ppl"]) and s["config"]["train"]["amp"] is True


@pytest.mark.parametrize("cmd", [[], ["train"], ["run"], ["report"], ["build-embeddings"],
                                 ["neighbors"]])
def test_every_help_text_renders(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0 and "usage: lmfix" in capsys.readouterr().out


def test_max_minutes_stops_training_then_validates_and_tests(tiny_corpus_dir, tmp_path):
    s = train(run_cfg(tiny_corpus_dir, tmp_path / "r", epochs=50, max_minutes=1e-6),
              progress=False)
    epochs = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["partial"] is True
    assert s["epochs"] == 1 and math.isfinite(s["test_ppl"])
    assert s["train_tokens"] > 0 and s["tokens_per_s"] > 0  # at least one step always runs


@pytest.mark.parametrize("decay", [1.0, 2.0])
def test_lr_decay_divides_the_lr_on_a_plateau(tiny_corpus_dir, tmp_path, decay):
    s = train(run_cfg(tiny_corpus_dir, tmp_path / "r", epochs=4, lr=20.0, lr_decay=decay),
              progress=False)
    lrs = [json.loads(l)["lr"] for l in (tmp_path / "r" / "metrics.jsonl").read_text()
           .splitlines() if json.loads(l)["kind"] == "epoch"]
    assert all(b in (a, a / decay) for a, b in zip(lrs, lrs[1:])) and s["epochs"] == 4
    assert (set(lrs) == {20.0}) == (decay == 1.0)  # the tiny run plateaus once at least


def test_the_best_model_is_mapped_after_the_optimizer_state_is_freed(tiny_corpus_dir, tmp_path,
                                                                    monkeypatch):
    """Testing the best model once held it beside the last one, its gradients and Adam's two
    moments: at V = 268k, d = 512 that end was the run's memory peak, over the estimate."""
    import lmfix.train as train_mod
    seen, runs = {}, []
    real_load, real_finish = train_mod.load_checkpoint, train_mod._finish

    def spy(path, *a, **k):
        opt = runs[0].opt
        seen.update(mmap=k.get("mmap"), state=len(opt.state),
                    grads=sum(p.grad is not None for g in opt.param_groups for p in g["params"]))
        return real_load(path, *a, **k)
    monkeypatch.setattr(train_mod, "load_checkpoint", spy)
    monkeypatch.setattr(train_mod, "_finish", lambda run: runs.append(run) or real_finish(run))
    s = train(run_cfg(tiny_corpus_dir, tmp_path / "run", epochs=1, optimizer="adamw", lr=1e-3),
              progress=False)
    assert seen == {"mmap": True, "state": 0, "grads": 0}
    assert math.isfinite(s["test_ppl"])
    # the run stays resumable: its checkpoint kept Adam's moments
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["optimizer"]["state"]


def test_the_table_as_made_is_freed_before_the_model_copies_it(tiny_corpus_dir, tmp_path,
                                                               monkeypatch):
    """Three V × d copies (the basis, its normalized form, the model's buffer) were held at
    once while a fixed model was built: at V = 268k, d = 512 that was the run's peak."""
    import gc
    import weakref

    import lmfix.train as train_mod
    made, alive = [], []
    real_norm, real_lm = train_mod.normalize_vectors, train_mod.LM

    def norm(matrix, mode):
        made.append(weakref.ref(matrix))
        return real_norm(matrix, mode)

    def lm(*a, **k):
        gc.collect()
        alive.append(made[0]() is not None)
        return real_lm(*a, **k)
    monkeypatch.setattr(train_mod, "normalize_vectors", norm)
    monkeypatch.setattr(train_mod, "LM", lm)
    train(run_cfg(tiny_corpus_dir, tmp_path / "run", epochs=1, embedding="random-orthogonal",
                  embedding_norm="mean-unit"), progress=False)
    assert made and alive == [False]
