"""scripts/gpu_check.sh (issue 15): its CPU smoke mode runs every step at toy sizes, so the
script cannot rot on machines without a GPU; without CUDA it says so in one line. And --tf32
touches CUDA's settings only."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmfix.cli import build_parser
from lmfix.train import TrainConfig, set_tf32

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def gpu_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **env}, timeout=600)


def test_cpu_smoke_runs_every_step_and_writes_the_summary(tiny_corpus_dir, tmp_path):
    out = tmp_path / "gpu_check"
    r = gpu_check("--cpu-smoke", str(tiny_corpus_dir), str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["tests", "bench", "epoch-fp32", "epoch-transformer-fp32",
                                     "paper"]
    assert all(s[1] == "ok" for s in steps), steps
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("==== gpu_check summary (cpu-smoke)") and summary in r.stdout
    info = json.loads((out / "summary.json").read_text())
    for model in ("lstm", "transformer"):
        assert info["bench"]["precisions"]["fp32"]["models"][model]["16"]["fixed"][
            "train_tok_s"] > 0
    assert info["epochs"]["fp32"]["epoch_seconds"] > 0
    assert sorted(run["name"] for run in info["paper"]["runs"]) == sorted(
        ["learned", "learned-untied", "word2vec", "pmi", "random-orthogonal"])
    assert all("val_ppl" in run for run in info["paper"]["runs"])  # all five finished
    assert info["paper"]["report"] and "--jobs 5" in (out / "paper" / "run.json").read_text()
    log = (out / "log.txt").read_text()
    assert "== paper: ok" in log and "(a) CUDA tests:" in log
    # everything it wrote is in OUT_DIR: nothing next to the data
    assert sorted(p.name for p in tiny_corpus_dir.iterdir()) == ["test.txt", "train.txt",
                                                                  "valid.txt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_cuda_it_prints_one_line_and_exits_0(tiny_corpus_dir, tmp_path):
    out = tmp_path / "gpu_check"
    r = gpu_check(str(tiny_corpus_dir), str(out), GPU_CHECK_CPU="")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("no CUDA GPU: nothing to measure")
    assert not out.exists()


def test_tf32_flag_sets_cuda_backends_only():
    cfg = build_parser().parse_args(["train", "--tf32"])
    assert cfg.tf32 is True and TrainConfig().tf32 is False
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_tf32(torch.device("cpu"), True)  # no effect on a CPU
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
        set_tf32(torch.device("cuda"), True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(torch.device("cuda"), False)  # off means off in cuDNN too (PyTorch allows it)
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
