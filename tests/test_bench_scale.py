"""scripts/bench_scale.py: the scale benchmark's measurement, bookkeeping and report, on a
corpus small enough to measure in seconds (V = 400, 30k tokens, d = 16)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_scale.py"
spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
bs = importlib.util.module_from_spec(spec)
sys.modules["bench_scale"] = bs  # its dataclasses look their module up there
spec.loader.exec_module(bs)
import scale_report  # noqa: E402  (importable once bench_scale has put scripts/ on sys.path)

V, N = 400, 30_000
GRID = ["--vocabs", str(V), "--tokens", str(N), "--eval-tokens", "3000", "3000",
        "--repeats", "1", "--dims", "16", "--embeddings", "learned", "--optimizers", "sgd",
        "--train-tokens", "7000", "--log-interval", "2"]


def bench(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    # its own directory as cwd: what `python -c` children import is the installed lmfix
    return subprocess.run([sys.executable, str(SCRIPT), "--corpora", str(tmp / "corpora"),
                           "--out", str(tmp / "out"), *GRID, *args], cwd=tmp,
                          capture_output=True, text=True, timeout=240)


def entries(tmp: Path) -> dict:
    return json.loads((tmp / "out" / "results.json").read_text())["entries"]


def test_corpus_names_match_the_existing_ones():
    assert bs.corpus_name(267_735, 103_227_021) == "v268k-t100M"
    assert bs.corpus_name(33_278, 2_000_000) == "v33k-t2M"
    assert bs.corpus_name(100_000, 20_000_000) == "v100k-t20M"
    assert bs.corpus_name(V, N) == "v400-t30k"


def test_peak_is_the_process_trees(tmp_path):
    """A child's 150 MB count, though only the grandchild holds them; this test process's own
    memory (torch is imported) does not."""
    grandchild = "import time; b = b'x' * 150_000_000; time.sleep(0.6)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    t = bs.run_watched([sys.executable, "-c", code], stderr_path=tmp_path / "err")
    assert t.returncode == 0 and t.wall_s > 0.6
    assert 150e6 < t.peak_bytes < 260e6 and t.peak_rss_bytes >= t.peak_bytes
    assert t.memory in ("pss", "rss")
    assert not (tmp_path / "err").exists()  # an empty log of a success is not kept


def test_a_failing_command_is_recorded_with_its_last_stderr_line(tmp_path, monkeypatch):
    monkeypatch.setattr(bs, "BASELINE_CODE",
                        "import sys; print('noise', file=sys.stderr); sys.exit('boom: no such')")
    a = bs.parse_args(["--out", str(tmp_path / "out"), "--repeats", "3"])
    results = bs.Results(a.out)
    task = bs.Task("baseline", None)
    entry = bs.Bench(a, results).measure(task)
    assert not entry["ok"] and entry["error"] == "boom: no such" and entry["returncode"] == 1
    assert len(entry["trials"]) == 1 and entry["trials"][0]["wall_s"] > 0  # no repeats after
    results.put("entries", task.key, entry)
    assert bs.Results(a.out).entries[task.key]["error"] == "boom: no such"
    assert "boom: no such" in scale_report.render(results.data)


def test_step_log_leaves_out_the_first_interval(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = bs.StepLog(path)
    t0 = 1_700_000_000

    def append(rec: dict, at: float) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        os.utime(path, ns=(int(at * 1e9), int(at * 1e9)))
        log()

    append({"kind": "step", "tokens_seen": 1400}, t0)  # the first interval: warm-up
    assert log.tokens_per_s() is None
    append({"kind": "step", "tokens_seen": 2800}, t0 + 1)
    append({"kind": "step", "tokens_seen": 4200}, t0 + 3)
    append({"kind": "epoch", "tokens_seen": 4200}, t0 + 9)  # validation: not training time
    assert log.tokens_per_s() == pytest.approx((4200 - 1400) / 3)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-scale")
    r = bench(tmp, "--only", "load,train", "--table", str(tmp / "table.md"),
              "--plot", str(tmp / "scale.png"))
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp, r


@pytest.mark.slow
def test_a_tiny_grid_end_to_end(first_run):
    tmp, r = first_run
    assert "making corpus" in r.stdout and (tmp / "corpora" / "v400-t30k" / "train.txt").is_file()
    got = entries(tmp)
    kinds = sorted(e["kind"] for e in got.values())
    assert kinds == ["baseline", "load-cached", "load-cold", "train"], got
    for e in got.values():
        assert e["ok"], e
        assert e["wall_s"] > 0 and e["peak_bytes"] > 0 and e["command"]
        assert e["machine"]["cores"] >= 1 and e["machine"]["cpu"]
    train = next(e for e in got.values() if e["kind"] == "train")
    assert train["tokens_per_s"] > 0 and train["tokens_used"] == 7000 + 2000 + 2000
    assert train["estimate_bytes"] > 0 and train["peak_bytes"] > train["estimate_bytes"]
    cold = next(e for e in got.values() if e["kind"] == "load-cold")
    assert "<fresh empty directory>" in cold["command"]
    table = (tmp / "table.md").read_text()
    assert "| 400 | 30k |" in table and "| 400 | 16 | learned | sgd |" in table
    assert table in r.stdout and "Machine:" in table
    assert (tmp / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp / "out" / "tmp").iterdir())  # scratch (caches, run dirs) removed


@pytest.mark.slow
def test_a_second_run_skips_what_is_measured(first_run):
    tmp, _ = first_run
    before = entries(tmp)
    t = time.perf_counter()
    r = bench(tmp, "--only", "load,train")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" skip ") == 4 and "making corpus" not in r.stdout
    assert entries(tmp) == before
    assert time.perf_counter() - t < 15  # nothing measured: no torch process started


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_grid_goes_on(first_run):
    tmp, _ = first_run
    # 10 training tokens cannot make a batch of 20 columns: lmfix train refuses them
    r = bench(tmp, "--only", "load,train", "--train-tokens", "10")
    assert r.returncode == 0, r.stderr
    assert "FAILED train" in r.stdout and r.stdout.count(" skip ") == 3
    failed = [e for e in entries(tmp).values() if not e["ok"]]
    assert len(failed) == 1 and failed[0]["settings"]["train_tokens"] == 10
    assert "too few" in failed[0]["error"] and failed[0]["returncode"] == 2
    assert "Failed:" in r.stdout  # the report lists it


@pytest.mark.slow
def test_ctrl_c_leaves_results_valid(first_run):
    tmp, _ = first_run
    before = entries(tmp)
    p = subprocess.Popen([sys.executable, str(SCRIPT), "--corpora", str(tmp / "corpora"),
                          "--out", str(tmp / "out"), *GRID, "--only", "load", "--force"],
                         cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # a suite started in the background (`tests &`) ignores SIGINT, and
                         # so would the child: give it the default, as a terminal would
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in p.stdout:
            if "load-cold" in line:  # measured and written; load-cached is running now
                time.sleep(0.5)
                p.send_signal(signal.SIGINT)
                break
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130 and "interrupted" in err
    after = entries(tmp)
    cold = next(k for k, e in after.items() if e["kind"] == "load-cold")
    cached = next(k for k, e in after.items() if e["kind"] == "load-cached")
    assert after[cold]["trials"] != before[cold]["trials"]  # measured again, kept
    assert after[cached] == before[cached]  # the interrupted one left as it was
    assert not list((tmp / "out" / "tmp").iterdir())


def test_re_estimate_applies_the_current_memory_model_without_training(tmp_path):
    from lmfix.memory import estimate_train_bytes
    out = tmp_path / "out"
    results = bs.Results(out)
    entry = {"kind": "train", "vocab": 500, "tokens": N, "ok": True, "peak_bytes": 10**9,
             "date": "2026-12-03T12:00:00", "wall_s": 1.0,
             "settings": {"d": 16, "embedding": "random-orthogonal", "optimizer": "adamw",
                          "device": "cpu"},
             "tokens_used": 4000, "estimate_bytes": 1, "estimate_parts": {"total": 1}}
    results.put("entries", "train-old", entry)  # from before run configs were kept
    assert bs.main(["--out", str(out), "--re-estimate"]) == 0
    again = bs.Results(out).entries["train-old"]
    want = estimate_train_bytes(500, 16, 16, 2, 20, 35, "vectors", "adamw", 10, fix="both",
                                tokens=4000)
    assert again["estimate_bytes"] == want["total"] and again["estimate_parts"] == want
    assert again["peak_bytes"] == 10**9 and again["run_config"]["model"]["fix"] == "both"
