#!/usr/bin/env python
"""Tokens/s of lmfix's variants and the PyTorch example's algorithm, in several precisions, in
one process (part (b) of scripts/gpu_check.sh; the timing itself is scripts/bench.py's).

    fp32   exact float32: TF32 off in cuBLAS and cuDNN (lmfix's default)
    tf32   float32 with TF32 tensor cores allowed (lmfix --tf32; no effect on a CPU)
    bf16   bfloat16 autocast around forward + loss (lmfix --amp), TF32 off

    python scripts/gpu_bench.py --data ../shared/data/wikitext-2 --device cuda --dims 512 \\
        --out runs/gpu_check/bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (scripts/bench.py)

from lmfix.errors import LmfixError  # noqa: E402
from lmfix.device import check_amp, set_tf32  # noqa: E402

PRECISIONS = ("fp32", "tf32", "bf16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="corpus directory")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dims", type=int, nargs="+", default=[512])
    ap.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    ap.add_argument("--steps", type=int, default=4, help="batches per window")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per variant (median)")
    ap.add_argument("--matmul-n", type=int, default=2048, help="size of the peak-rate matmul")
    ap.add_argument("--models", nargs="+", choices=("lstm", "transformer"),
                    default=["lstm", "transformer"], help="each against the example's own")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    a = ap.parse_args()
    device = torch.device(a.device)
    stream, V, data_name = bench.load_stream(a.data)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    results = {"machine": {"device": str(device), "device_name": name, "torch": torch.__version__,
                           "data": data_name, "vocab": V, "steps": a.steps,
                           "windows": a.windows}, "precisions": {}}
    print(f"{name}, torch {torch.__version__}, data {data_name} (V = {V}), batch 20 x bptt 35 "
          f"(eval batch 10), median of {a.windows} windows of {a.steps} batches")
    for p in a.precisions:
        set_tf32(device, p == "tf32")
        amp = p == "bf16"
        if amp:
            try:
                check_amp(device)
            except LmfixError as e:
                results["precisions"][p] = {"skipped": str(e)}
                print(f"\n{p}: skipped: {e}")
                continue
        note = " (TF32 has no effect on a CPU: same as fp32)" if p == "tf32" and \
            device.type != "cuda" else ""
        models = {}
        for model in a.models:
            rate, models[model] = bench.bench_dims(a.dims, stream, V, a.steps, a.windows,
                                                   a.device, amp, a.matmul_n, model=model)
        results["precisions"][p] = {"matmul_gflops": rate / 1e9, "models": models}
        print(f"\n{p}{note}: matmul {rate / 1e9:.0f} GFLOP/s ({a.matmul_n}^3)")
        for model, dims in models.items():
            for d, rows in dims.items():
                print(f"{model}, d = {d}\n{'variant':16} {'train tok/s':>11} {'ratio':>6} "
                      f"{'%peak':>6} {'eval tok/s':>11} {'ratio':>6} {'%peak':>6}")
                for n, r in rows.items():
                    print(f"{n:16} {r['train_tok_s']:11.0f} {r['train_ratio']:6.2f} "
                          f"{100 * r['train_flop_frac']:5.0f}% {r['eval_tok_s']:11.0f} "
                          f"{r['eval_ratio']:6.2f} {100 * r['eval_flop_frac']:5.0f}%")
    set_tf32(device, False)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
