"""Runs that fail: kill and resume, signals, corrupt or malicious checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lmfix.checkpoint import load_checkpoint, save_checkpoint
from lmfix.errors import LmfixError
from lmfix.fsutil import write_json

ARGS = ["--emsize", "16", "--batch-size", "4", "--bptt", "8", "--lr", "5", "--epochs", "3",
        "--log-interval", "2", "--quiet"]


def lmfix(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "lmfix", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def wait_for_mid_epoch_checkpoint(out, proc, timeout=60):
    """Until a checkpoint exists whose position is inside epoch 2, then return."""
    t = time.time()
    while time.time() - t < timeout:
        assert proc.poll() is None, "the run finished before it could be killed"
        if (out / "checkpoint.pt").exists():
            try:
                st = load_checkpoint(out / "checkpoint.pt")["state"]
            except LmfixError:
                st = None  # being replaced right now
            if st and st["epoch"] == 2 and st["batch"] > 0:
                return st
        time.sleep(0.05)
    raise AssertionError("no mid-epoch checkpoint appeared")


@pytest.mark.processes
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_corpus_dir, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    data = ["--data", tiny_corpus_dir]
    r = lmfix("train", *data, "--out", ref, *ARGS)
    assert r.wait() == 0, r.stderr.read()
    # A checkpoint after every batch, so the kill lands between two of them.
    p = lmfix("train", *data, "--out", out, *ARGS, "--checkpoint-every", "1e-9")
    st = wait_for_mid_epoch_checkpoint(out, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert json.loads((out / "status.json").read_text())["status"] == "running"
    r = lmfix("train", "--resume", "--out", out, "--quiet")
    assert r.wait() == 0, r.stderr.read()
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    # Same ops in the same order on the same CPU: bit-for-bit equal.
    assert (b["val_loss"], b["test_loss"]) == (a["val_loss"], a["test_loss"])
    ea = [json.loads(l) for l in (ref / "metrics.jsonl").read_text().splitlines()]
    eb = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = lambda recs: [(e["epoch"], e["train_loss"], e["val_loss"]) for e in recs
                           if e["kind"] == "epoch"]
    assert epochs(ea) == epochs(eb)
    assert st["epoch"] == 2


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_corpus_dir, tmp_path):
    out = tmp_path / "run"
    p = lmfix("train", "--data", tiny_corpus_dir, "--out", out, *ARGS, "--epochs", "50",
              "--checkpoint-every", "0")
    t = time.time()
    while not (out / "checkpoint.pt").exists() and time.time() - t < 60:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143  # 128 + SIGTERM, as a shell reports a terminated command
    err = p.stderr.read().decode()
    assert "SIGTERM" in err and f"--resume {out}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert json.loads((out / "status.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(out / "checkpoint.pt")["state"]["epoch"] >= 2


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lmfix-pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(LmfixError, match="refused"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/lmfix-pwned")


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04truncated"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(LmfixError):
        load_checkpoint(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ok.pt"
    save_checkpoint(path, {"w": torch.randn(100, 100)})
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(LmfixError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"ok": 1})

    class Boom:
        pass
    with pytest.raises(TypeError):
        write_json(path, {"bad": Boom()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_resume_with_a_checkpoint_from_another_model_is_refused(tiny_corpus_dir, tmp_path):
    from lmfix.train import TrainConfig, train
    cfg = TrainConfig(data=str(tiny_corpus_dir), out=str(tmp_path / "r"), emsize=16, epochs=1,
                      batch_size=4, bptt=8)
    train(cfg, progress=False)
    other = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    other["model"]["encoder.weight"] = torch.zeros(3, 3)
    torch.save(other, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(LmfixError, match="does not match"):
        train(cfg, resume=True, progress=False)


def test_a_signal_during_validation_stops_promptly_and_resumes_exactly(tiny_corpus_dir, tmp_path,
                                                                        monkeypatch):
    """The stop flag is polled per validation chunk too; resuming re-runs just the validation."""
    from lmfix import train as train_module
    from lmfix.data import load_corpus
    from lmfix.errors import Interrupted
    from lmfix.train import TrainConfig, train
    kw = dict(data=str(tiny_corpus_dir), emsize=16, batch_size=4, bptt=8, epochs=2, lr=5.0)
    ref = train(TrainConfig(out=str(tmp_path / "ref"), **kw), progress=False)
    nbatches = len(range(0, load_corpus(str(tiny_corpus_dir)).train.numel() // 4 - 1, 8))
    calls = []

    class FakeFlag:  # "SIGTERM" arrives at the 2nd validation chunk of epoch 1
        def __enter__(self):
            return lambda: calls.append(1) or ("SIGTERM" if len(calls) > nbatches + 1 else None)

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(train_module, "Flag", FakeFlag)
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="SIGTERM"):
        train(TrainConfig(out=str(out), **kw), progress=False)
    st = load_checkpoint(out / "checkpoint.pt")["state"]
    assert st["phase"] == "validate" and st["epoch"] == 1 and st["batch"] == nbatches
    monkeypatch.undo()
    resumed = train(TrainConfig(out=str(out), **kw), resume=True, progress=False)
    assert (resumed["val_loss"], resumed["test_loss"]) == (ref["val_loss"], ref["test_loss"])


def test_a_full_disk_leaves_the_old_file_and_one_clear_error(tmp_path, monkeypatch):
    import errno

    from lmfix import fsutil
    path = tmp_path / "summary.json"
    write_json(path, {"ok": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fsutil.os, "fsync", full)
    with pytest.raises(LmfixError, match="No space left"):
        write_json(path, {"ok": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_output_dir_under_a_file_is_a_clear_error(tiny_corpus_dir, tmp_path):
    from lmfix.train import TrainConfig, train
    (tmp_path / "afile").write_text("")
    with pytest.raises(LmfixError, match="cannot write|not a directory"):
        train(TrainConfig(data=str(tiny_corpus_dir), out=str(tmp_path / "afile" / "run"),
                          emsize=8, epochs=1, batch_size=4, bptt=8), progress=False)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from(["train", "valid", "test"]))
def test_fuzz_corpus_reader_gives_a_corpus_or_one_clear_error(tmp_path_factory, data, split):
    from lmfix.data import Corpus, load_corpus
    d = tmp_path_factory.mktemp("fuzz")
    for s in ("train", "valid", "test"):
        (d / f"{s}.txt").write_text(" a b c \n b c a \n")
    (d / f"{split}.txt").write_bytes(data)
    try:
        assert isinstance(load_corpus(str(d)), Corpus)
    except LmfixError:
        pass


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from lmfix.checkpoint import rng_state, set_rng_state
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect


def test_resume_ignores_paths_in_config_that_point_elsewhere(tiny_corpus_dir, tmp_path):
    """A run directory's config.json cannot send a resumed run's writes outside it."""
    from lmfix.train import TrainConfig, resume, train
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    cfg = TrainConfig(data=str(tiny_corpus_dir), out=str(run), emsize=8, epochs=1, batch_size=4,
                      bptt=8)
    train(cfg, progress=False)
    conf = json.loads((run / "config.json").read_text())
    conf["train"]["out"], conf["train"]["epochs"] = str(elsewhere), 2
    (run / "config.json").write_text(json.dumps(conf))
    s = resume(run, progress=False)
    assert s["epochs"] == 2 and not elsewhere.exists()
