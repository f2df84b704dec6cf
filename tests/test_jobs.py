"""`lmfix run --jobs N` (issue 15): variants in parallel worker processes give the rows of
--jobs 1; a failing variant is recorded and the others finish (exit 2); SIGTERM stops every
worker with a checkpoint (exit 143) and a rerun resumes them all."""

import json
import re
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from lmfix import jobs, rundir
from lmfix.cli import main
from lmfix.run import run
from lmfix.train import TrainConfig

TINY = {"emsize": 8, "nhid": 8, "epochs": 1, "batch_size": 4, "bptt": 8, "log_interval": 5,
        "max_train_tokens": None}
TINY_FLAGS = ["--emsize", "8", "--nhid", "8", "--batch-size", "4", "--bptt", "8", "--quiet"]
VARIANTS = ["learned", "learned-untied", "word2vec", "pmi", "random-orthogonal"]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


@pytest.mark.processes
def test_jobs_2_gives_the_rows_of_jobs_1_and_a_failing_variant_stops_nothing(
        tiny_corpus_dir, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    run("quick", one, str(tiny_corpus_dir), VARIANTS, TINY, progress=False)
    shutil.copytree(one / "embeddings", two / "embeddings")  # same files: reused, not rebuilt
    bad = tmp_path / "bad.txt"  # a real failure inside a worker: a malformed embedding file
    bad.write_text("this is not an embedding file\n")
    capsys.readouterr()
    code = main(["run", "--data", str(tiny_corpus_dir), "--out", str(two), "--variants",
                 ",".join(VARIANTS + [str(bad)]), "--epochs", "1", "--log-interval", "5",
                 "--jobs", "2", *TINY_FLAGS])
    std = capsys.readouterr()
    assert code == 2
    err = std.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmfix: error: 1 of 6 variants did not finish: "
                                               "file-bad (LmfixError: ")
    assert "not a number" in err[0]
    failed = status(two / "runs" / "file-bad")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("LmfixError: ") and str(bad) in failed["error"]
    assert "file-bad: FAILED" in std.out and std.out.count(": finished in ") == 5

    # the report was written after the failure: five rows, the failed one listed as not complete
    results = json.loads((two / "results.json").read_text())
    assert [r["name"] for r in results["not_complete"]] == ["file-bad"]
    assert "not complete" in (two / "report.md").read_text().lower()
    rows = {r["name"]: r for r in results["runs"]}
    assert set(rows) == set(VARIANTS)
    for v in VARIANTS:
        s1 = json.loads((one / "runs" / v / "summary.json").read_text())
        for key in ("val_ppl", "test_ppl"):  # one thread per job here, as in-process
            assert rows[v][key] == pytest.approx(s1[key], rel=0.01), (v, key)
        assert (two / "logs" / f"{v}.log").is_file()
        cfg1 = json.loads((one / "runs" / v / "config.json").read_text())["train"]
        cfg2 = json.loads((two / "runs" / v / "config.json").read_text())["train"]
        assert {k: x for k, x in cfg1.items() if k not in ("out", "embedding", "max_train_tokens")} \
            == {k: x for k, x in cfg2.items() if k not in ("out", "embedding", "max_train_tokens")}


def _sigterm_when_training(run_dirs: list[Path], done: threading.Event) -> None:
    """SIGTERM this (parent) process once every worker is training (or, if slow to start,
    once the others are and one has already finished)."""
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        states = [rundir.RunDir(d).status().state for d in run_dirs]
        if "running" in states and set(states) <= {"running", "finished"}:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(0.05)


@pytest.mark.processes
def test_sigterm_stops_every_worker_and_a_rerun_resumes_them(tiny_corpus_dir, tmp_path, capsys):
    out = tmp_path / "out"
    # many epochs, bounded by --max-minutes (its clock is resumed with the run): the workers
    # are still training when the signal comes, and the rerun has the rest of ~3 s to train
    args = ["run", "--data", str(tiny_corpus_dir), "--out", str(out), "--variants",
            "learned,random-orthogonal", "--epochs", "10000", "--max-minutes", "0.05",
            "--jobs", "2", *TINY_FLAGS]
    dirs = [out / "runs" / "learned", out / "runs" / "random-orthogonal"]
    done = threading.Event()
    killer = threading.Thread(target=_sigterm_when_training, args=(dirs, done), daemon=True)
    killer.start()
    try:
        code = main(args)
    finally:
        done.set()
        killer.join()
    std = capsys.readouterr()
    assert code == 143
    err = std.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmfix: run interrupted by SIGTERM")
    states = {d.name: status(d)["status"] for d in dirs}
    assert "interrupted" in states.values(), states  # (one could just have run out of time)
    for d in dirs:
        if states[d.name] == "interrupted":
            assert (d / rundir.LAST).is_file()
            assert f"{d.name}: stopped by SIGTERM (interrupted, checkpoint saved)" in std.out
    assert not (out / "report.md").exists()

    assert main(args) == 0
    std = capsys.readouterr()
    for d in dirs:
        assert status(d)["status"] == "finished" and (d / "summary.json").is_file()
        if states[d.name] == "interrupted":
            assert f"{d.name}: resuming from its last checkpoint" in std.out
            # the time printed is the run's, not just the resumed process's
            assert re.search(rf"{d.name}: finished in .* after resuming \(.* of training in "
                             r"all\)", std.out)
            assert "resuming from its last checkpoint" in (out / "logs" / f"{d.name}.log").read_text()
    assert (out / "report.md").is_file()


def test_threads_are_divided_and_jobs_are_spread_over_gpus(monkeypatch, tmp_path):
    assert jobs.threads_per_job(2, cores=2) == 1
    assert jobs.threads_per_job(5, cores=2) == 1
    assert jobs.threads_per_job(5, cores=16) == 3
    assert jobs.threads_per_job(1, cores=16) == 16
    assert jobs.cuda_devices("cpu") == [] and jobs.cuda_devices("cuda:1") == []
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert jobs.cuda_devices("auto") == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert jobs.cuda_devices("cuda") == ["0", "1"]

    started = []

    class FakePopen:
        def __init__(self, cmd, env, **kw):
            started.append(env)
    monkeypatch.setattr(jobs.subprocess, "Popen", FakePopen)
    for slot in range(3):
        cfg = TrainConfig(out=str(tmp_path / "runs" / f"v{slot}"))
        jobs._start(jobs._Job(cfg, "fresh"), slot, 4, ["0", "1"], tmp_path, False)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in started] == ["0", "1", "0"]
    assert all(e["OMP_NUM_THREADS"] == e["MKL_NUM_THREADS"] == "4" for e in started)


def test_a_worker_that_dies_outside_training_is_recorded_failed(tmp_path, capsys):
    cfg = TrainConfig(out=str(tmp_path / "runs" / "v"))
    job = jobs._Job(cfg, "fresh", started=time.perf_counter(), started_wall=time.time())
    failed = {}
    jobs._ended(job, -signal.SIGKILL, failed, tmp_path / "logs")
    st = status(tmp_path / "runs" / "v")
    assert st["status"] == "failed" and st["error"].startswith("worker killed by SIGKILL")
    assert failed == {"v": st["error"]} and "v: FAILED" in capsys.readouterr().out


def test_jobs_must_be_at_least_one(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--jobs", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("argument --jobs: 0 is not an integer ≥ 1 "
                                                    "(see: lmfix run --help)")
