"""Ctrl-C / SIGTERM anywhere in `lmfix run` or `build-embeddings`: one line saying what was
stopped and how to go on, exit 130 / 143, nothing half-written, and a rerun continues."""

import json
import signal
import threading

import pytest

import lmfix.embeddings.build as build
from lmfix.cli import main

TINY = ["--emsize", "8", "--epochs", "1", "--batch-size", "4", "--bptt", "8", "--lr", "5",
        "--quiet"]


def _terminate_during(monkeypatch, module, name, sig=signal.SIGTERM):
    """Make ``module.name`` stop mid-work as ``sig`` would: SIGTERM is sent to this thread (the
    handler raises inside it), SIGINT raises the KeyboardInterrupt Python's handler raises."""
    real = getattr(module, name)

    def interrupted(*a, **k):
        if sig == signal.SIGINT:
            # What Python's own SIGINT handler does. A real SIGINT sent here was sometimes not
            # raised before the tiny build finished (exit 0), only in the full suite (CI, twice;
            # never alone or with the files before it), so this case does not depend on it.
            raise KeyboardInterrupt
        # To this thread, not the process: a process-directed signal may land on another thread
        # (tqdm's monitor), whose C handler can then run only after a short build has finished.
        signal.pthread_kill(threading.get_ident(), sig)
        return real(*a, **k)  # not reached: the signal handler raises first
    monkeypatch.setattr(module, name, interrupted)


def test_sigterm_while_run_builds_embeddings_then_rerun_continues(tiny_corpus_dir, tmp_path,
                                                                  monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["run", "--data", str(tiny_corpus_dir), "--out", str(out), "--variants",
            "learned,pmi", *TINY]
    _terminate_during(monkeypatch, build, "build_embeddings")
    assert main(args) == 143
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lmfix: run interrupted by SIGTERM")
    assert "rerun the same command" in err
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.tmp"))  # nothing half-written
    monkeypatch.undo()
    assert main(args) == 0
    assert (out / "runs" / "pmi" / "summary.json").is_file() and (out / "report.md").is_file()


def test_ctrl_c_in_build_embeddings_leaves_nothing(tiny_corpus_dir, tmp_path, monkeypatch,
                                                   capsys):
    _terminate_during(monkeypatch, build, "build_embeddings", signal.SIGINT)
    out = tmp_path / "e" / "pmi.bin"
    assert main(["build-embeddings", "--method", "pmi", "--dim", "4", "--data",
                 str(tiny_corpus_dir), "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("lmfix: build-embeddings interrupted by SIGINT") and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("form", ["positional", "with --out"])
def test_resume_accepts_the_run_directory_either_way(tiny_corpus_dir, tmp_path, form):
    out = tmp_path / "r"
    assert main(["train", "--data", str(tiny_corpus_dir), "--out", str(out), *TINY]) == 0
    resume = ["--resume", str(out)] if form == "positional" else ["--resume", "--out", str(out)]
    assert main(["train", *resume, "--epochs", "2", "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())  # --epochs 2 was honoured, not dropped
    assert s["epochs"] == 2 and s["config"]["train"]["epochs"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "epoch"] == [1, 2]


def test_resume_with_two_different_directories_is_refused(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "name different runs" in capsys.readouterr().err
