"""scripts/bench_saving.py: the fixed embedding's saving from the allocator's events."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_saving.py"
spec = importlib.util.spec_from_file_location("bench_saving", SCRIPT)
bsv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bsv)


def event(start, name="aten::op", own=0, total=0):
    return SimpleNamespace(time_range=SimpleNamespace(start=start), name=name,
                           self_cpu_memory_usage=own, cpu_memory_usage=total)


def test_peak_sums_own_allocations_and_outside_frees_in_time_order():
    events = [event(3, "[memory]", total=-100),  # a free outside an op, after both ops
              event(1, own=100, total=150),      # parent: its child's 50 count in the child
              event(2, own=50, total=50)]
    assert bsv.tensor_peak(events) == (150, 0, 50)  # no optimizer: no steps


def test_peak_of_a_real_profile():
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = torch.ones(1 << 20)  # 4 MiB
        b = a * 2                # 4 MiB more while a lives
        del a, b
    peak, steps, final = bsv.tensor_peak(prof.events())
    assert peak >= 8 << 20 and steps == 0 and final == 0


def test_steps_peak_is_the_optimizer_steps_window():
    from torch.profiler import ProfilerActivity, profile
    w = torch.nn.Parameter(torch.zeros(1 << 18))  # 1 MiB
    opt = torch.optim.AdamW([w])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        before = torch.ones(4 << 20)  # 16 MiB, freed before the step: outside the window
        del before
        opt.zero_grad(set_to_none=True)
        (w * w).sum().backward()
        opt.step()
    peak, steps, _ = bsv.tensor_peak(prof.events())
    assert peak >= 16 << 20
    assert (3 << 20) <= steps < 16 << 20  # the gradient and Adam's two moments, not the 16 MiB


@pytest.mark.slow
def test_a_tiny_pair_end_to_end(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--vocabs", "400", "--tokens", "30000",
                        "--corpora", str(tmp_path), "--dims", "16", "--optimizers", "adamw",
                        "--train-tokens", "1400", "--eval-tokens", "700"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    runs = {r["embedding"]: r for r in map(json.loads, filter(lambda l: l.startswith('{"vocab"'),
                                                             p.stdout.splitlines()))}
    assert set(runs) == {"learned", bsv.FIXED}
    # a learned table holds its gradient and Adam's moments; a fixed one does not
    assert runs["learned"]["tensor_peak"] > runs[bsv.FIXED]["tensor_peak"]
    assert "| 400 | 16 | adamw |" in p.stdout
