"""Hardening round 2 (issue 22): no meaningless result with exit 0, no two runs in one
directory, no traceback from a signal. Each test fails on the bug its name gives."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_TRAIN
from lmfix import evaluation
from lmfix.cli import main
from lmfix.config import TrainConfig
from lmfix.errors import LmfixError
from lmfix.train import train

TINY = ["--emsize", "8", "--batch-size", "4", "--bptt", "8", "--lr", "5", "--quiet"]
LMFIX = [sys.executable, "-m", "lmfix"]


def one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lmfix: error:"), err
    return lines[0]


# --- a corpus with nothing to learn, or nothing it can score --------------------------------


def corpus(tmp_path: Path, train_text: str, valid: str, test: str) -> Path:
    d = tmp_path / "c"
    d.mkdir(parents=True)
    for name, text in (("train", train_text), ("valid", valid), ("test", test)):
        (d / f"{name}.txt").write_text(text)
    return d


def test_blank_lines_are_refused_not_reported_as_ppl_1(tmp_path, capsys):
    """Three splits of blank lines trained and reported valid and test ppl 1.00."""
    d = corpus(tmp_path, " \n" * 400, " \n" * 100, " \n" * 100)
    line = one_error_line(capsys, main(["train", "--data", str(d), "--out", str(tmp_path / "r"),
                                        "--epochs", "1", *TINY]))
    assert "0 distinct token(s) besides <eos>: nothing to learn" in line
    assert not (tmp_path / "r" / "summary.json").exists()
    d2 = corpus(tmp_path / "one", " word \n" * 400, " word \n" * 100, " word \n" * 100)
    assert "1 distinct token(s)" in one_error_line(capsys, main(
        ["train", "--data", str(d2), "--out", str(tmp_path / "r2"), "--epochs", "1", *TINY]))


def test_scored_splits_of_unknown_words_warn_and_the_summary_says_so(tmp_path, capsys):
    """valid/test words all absent from train reported 82.17, better-looking than real text."""
    d = corpus(tmp_path, TINY_TRAIN * 40, " zebra giraffe okapi . \n" * 40,
               " the cat sat on the mat . \n" * 40)
    assert main(["train", "--data", str(d), "--out", str(tmp_path / "r"), "--epochs", "1",
                 *TINY]) == 0
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert len(s["warnings"]) == 1 and "60.0% of the tokens of the valid split" in s["warnings"][0]
    assert "lmfix: warning: 60.0% of the tokens of the valid split" in out
    from lmfix.report import write_report
    results = write_report([tmp_path / "r"], tmp_path / "rep")
    assert any("60.0% of the tokens of the valid split" in n for n in results["notes"])


# --- impossible embedding parts and a diverged run -----------------------------------------


@pytest.mark.parametrize("flags,why", [
    (["--embedding", "random-orthogonal", "--delta-rank", "64"], "--delta-rank 64 is above "
     "min(V, d) (V = 16, d = 8)"),
    (["--embedding", "random-orthogonal", "--delta-rank", "5000"], "--delta-rank 5000 is above"),
    (["--embedding", "random-orthogonal", "--learn-top", "17"], "--learn-top 17 is more than the 16"),
])
def test_impossible_parts_are_refused(tiny_corpus_dir, tmp_path, capsys, flags, why):
    code = main(["train", "--data", str(tiny_corpus_dir), "--out", str(tmp_path / "r"),
                 "--epochs", "1", *TINY, *flags])
    assert why in one_error_line(capsys, code)
    ok = main(["train", "--data", str(tiny_corpus_dir), "--out", str(tmp_path / "ok"),
               "--epochs", "1", *TINY, "--embedding", "random-orthogonal", "--delta-rank", "8"])
    assert ok == 0


def test_a_perplexity_far_above_a_uniform_guess_is_a_diverged_run(tiny_corpus_dir, tmp_path,
                                                                   monkeypatch):
    """--delta-rank 5000 on V = 3,324 trained to a 'finished' run with test ppl 124,029,772."""
    V = 1000
    assert not evaluation.diverged(math.log(9 * V), V)
    assert evaluation.diverged(math.log(11 * V), V) and evaluation.diverged(math.inf, V)
    assert evaluation.diverged(math.nan, V)
    real = evaluation.mean_nll

    def blown_up(model, source, bptt, d=evaluation.Dist(), interrupted=None):
        loss, n = real(model, source, bptt, d, interrupted)
        return loss + 30.0, n  # e^30 x: far above any vocabulary of this corpus
    monkeypatch.setattr(evaluation, "mean_nll", blown_up)
    out = tmp_path / "r"
    with pytest.raises(LmfixError, match=r"perplexity is [\d,.]+, more than 10x a uniform guess "
                                         r"over the 16 tokens.*diverged"):
        train(TrainConfig(data=str(tiny_corpus_dir), out=str(out), emsize=8, epochs=1,
                          batch_size=4, bptt=8, lr=5.0), progress=False)
    assert not (out / "summary.json").exists()
    assert json.loads((out / "status.json").read_text())["status"] == "failed"


# --- lmfix run: its variants checked before anything is built -------------------------------


@pytest.mark.parametrize("variants,why", [
    ("", "--variants '' has an empty entry"),
    ("learned,,x", "has an empty entry"),
    ("pmi:delta-rank=1e9", "variant pmi-delta-rank-1000000000: --delta-rank 1000000000 is above"),
])
def test_bad_variant_lists_are_refused_before_any_build(tiny_corpus_dir, tmp_path, capsys,
                                                        variants, why):
    out = tmp_path / "o"
    code = main(["run", "--data", str(tiny_corpus_dir), "--out", str(out), "--variants",
                 variants, *TINY])
    assert why in one_error_line(capsys, code)
    assert not list(out.rglob("*.bin"))  # no embedding was built first


@pytest.mark.parametrize("seeds,why", [
    ("0", "a number of seeds is an integer in [1, 1000]"), ("-2", "a number of seeds"),
    ("1,1", "names seed 1 twice"), ("1,-3", "-3 is not a seed"), ("x", "a number of seeds"),
    ("1,2,99999999999", "99999999999 is not a seed"),
])
def test_bad_seeds_are_one_line(tiny_corpus_dir, tmp_path, capsys, seeds, why):
    code = main(["run", "--data", str(tiny_corpus_dir), "--out", str(tmp_path / "o"),
                 "--variants", "learned", "--seeds", seeds, *TINY])
    assert why in one_error_line(capsys, code)


# --- generate: temperatures at the edges, ranges ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    d = root / "c"
    d.mkdir()
    (d / "train.txt").write_text(TINY_TRAIN * 40)
    (d / "valid.txt").write_text(" the cat sat on the log . \n" * 20)
    (d / "test.txt").write_text(" a dog sat on the mat . \n" * 20)
    train(TrainConfig(data=str(d), out=str(root / "r"), emsize=8, epochs=1, batch_size=4,
                      bptt=8, lr=5.0), progress=False)
    return root / "r"


def test_extreme_temperatures_sample_instead_of_crashing(tiny_run):
    """--temperature 1e-40 overflowed logits / T to inf and multinomial saw NaNs."""
    import lmfix
    m = lmfix.load(tiny_run)
    greedy = m.generate("the cat", words=20, top_k=1, seed=0)
    assert m.generate("the cat", words=20, temperature=1e-40, seed=3) == greedy
    flat = m.generate("the cat", words=20, temperature=1e300, seed=3, samples=3)
    assert len(flat) == 3 and all(t.startswith("the cat") for t in flat)


def test_generation_streams_and_a_stopped_one_keeps_its_text(tiny_run):
    """--words 1e9 ran for weeks with nothing printed: the text now comes as it is made, and
    a SIGTERM (exit 143) leaves what was printed, with one line on stderr."""
    p = subprocess.Popen([*LMFIX, "generate", str(tiny_run), "--words", "10000000", "--seed",
                          "1", "--device", "cpu"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = p.stdout.read(200)  # text arrives long before the end
    p.send_signal(signal.SIGTERM)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 143 and len(first) == 200 and b"Traceback" not in err
    assert err.decode().strip().splitlines()[-1].startswith("lmfix: generate interrupted by "
                                                            "SIGTERM")


@pytest.mark.processes
def test_a_signal_twice_during_shutdown_leaves_one_line(tiny_run):
    """SIGTERM while evaluate --file blocks on a pipe: in 4 of 6 tries the one-line message
    was followed by a traceback from the handler running again during shutdown."""
    for _ in range(6):
        p = subprocess.Popen([*LMFIX, "evaluate", str(tiny_run), "--file", "/dev/stdin",
                              "--device", "cpu"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdin.write(b"the cat sat\n")
        p.stdin.flush()
        _wait_for(lambda: _catches_sigterm(p.pid), p)  # lmfix's handler is in place
        time.sleep(0.5)  # and it blocks reading the pipe, which stays open
        for _ in range(3):
            p.send_signal(signal.SIGTERM)
            time.sleep(0.01)
        _, err = p.communicate(timeout=30)
        lines = err.decode().strip().splitlines()
        assert p.returncode == 143 and len(lines) == 1, err.decode()
        assert lines[0].startswith("lmfix: evaluate interrupted by SIGTERM")


def test_an_endless_line_is_refused(tiny_run, capsys):
    """--file /dev/zero read an endless line into memory (MemoryError, or the machine)."""
    code = main(["evaluate", str(tiny_run), "--file", "/dev/zero", "--device", "cpu"])
    assert "line 1 is longer than 10,000,000 characters" in one_error_line(capsys, code)


# --- one process per run directory -----------------------------------------------------------


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([*LMFIX, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            start_new_session=True)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not cond():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < end, "timed out"
        time.sleep(0.1)


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:"))
                 .split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _holds(lock: Path, pid: int) -> bool:
    return lock.is_file() and lock.read_text().startswith(f"pid {pid}:")


def _second(args, cwd) -> tuple[int, str]:
    p = subprocess.run([*LMFIX, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return p.returncode, p.stderr


LONG = [*TINY, "--epochs", "100000", "--checkpoint-every", "0"]


@pytest.mark.processes
def test_two_trains_or_a_run_and_a_train_never_share_a_directory(tiny_corpus_dir, tmp_path):
    run_dir = tmp_path / "r"
    holder = _start(["train", "--data", str(tiny_corpus_dir), "--out", str(run_dir), *LONG],
                    tmp_path)
    try:
        _wait_for(lambda: _holds(run_dir / ".lock", holder.pid), holder)
        for args in (["train", "--data", str(tiny_corpus_dir), "--out", str(run_dir),
                      "--force", *TINY, "--epochs", "1"],
                     ["train", "--resume", str(run_dir), "--quiet"]):
            code, err = _second(args, tmp_path)
            assert code == 2 and err.count("\n") == 1, err
            assert f"{run_dir} is in use by another lmfix process (pid {holder.pid}: " in err
        holder.kill()  # SIGKILL: no handler runs, the OS frees the lock
        holder.wait()
        code, err = _second(["train", "--data", str(tiny_corpus_dir), "--out", str(run_dir),
                             "--force", *TINY, "--epochs", "1"], tmp_path)
        assert code == 0, err
    finally:
        holder.kill()


@pytest.mark.processes
def test_two_runs_into_one_out_exactly_one_proceeds(tiny_corpus_dir, tmp_path):
    """The second `lmfix run` planned the variant fresh, deleted the first's files, and both
    trained one directory (metrics.jsonl with two records per step), both exiting 0."""
    out = tmp_path / "o"
    args = ["run", "--data", str(tiny_corpus_dir), "--out", str(out), "--variants", "learned",
            *LONG, "--max-minutes", "5"]
    holder = _start(args, tmp_path)
    try:
        _wait_for(lambda: _holds(out / "runs" / "learned" / ".lock", holder.pid), holder)
        code, err = _second(args, tmp_path)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{out} is in use by another lmfix process (pid {holder.pid}: lmfix run" in err
        code, err = _second(["train", "--data", str(tiny_corpus_dir), "--out",
                             str(out / "runs" / "learned"), "--force", *TINY, "--epochs", "1"],
                            tmp_path)
        assert code == 2 and f"in use by another lmfix process (pid {holder.pid}" in err
        holder.kill()
        holder.wait()
        code, err = _second([*args[:-2], "--max-minutes", "0.01"], tmp_path)
        assert code == 0, err
        steps = [json.loads(line) for line in (out / "runs" / "learned" / "metrics.jsonl")
                 .read_text().splitlines() if json.loads(line)["kind"] == "step"]
        assert len({(s["epoch"], s["step"]) for s in steps}) == len(steps)  # one writer
    finally:
        holder.kill()
