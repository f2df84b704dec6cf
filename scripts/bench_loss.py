"""Time the LM output layer, forward + backward: plain F.linear + F.cross_entropy versus the
fused, chunked lmfix.loss.linear_cross_entropy with a learned and with a frozen weight.

    python scripts/bench_loss.py [--dims 200 512] [--reps 5] [--chunk-rows 64 256 ...] [--threads 1]

Variants run interleaved, round by round, so load from other processes on a shared machine
hits them all alike; each number is the median over --reps rounds after one warm-up.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lmfix.loss import default_chunk_rows, linear_cross_entropy  # noqa: E402


def variants(n, d, v, chunks, device):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, d, generator=gen).to(device).requires_grad_()
    frozen = (torch.randn(v, d, generator=gen) / d**0.5).to(device)
    learned = frozen.clone().requires_grad_()
    targets = torch.randint(v, (n,), generator=gen).to(device)

    def run(loss_fn, *params):
        def step():
            for p in params:
                p.grad = None
            loss_fn().backward()
        return step

    out = {"plain": run(lambda: F.cross_entropy(F.linear(hidden, learned), targets), hidden, learned)}
    for c in chunks:
        tag = "" if c is None else f"@{c}"
        out["fused learned" + tag] = run(
            lambda c=c: linear_cross_entropy(hidden, learned, targets, chunk_rows=c), hidden, learned
        )
        out["fused frozen" + tag] = run(
            lambda c=c: linear_cross_entropy(hidden, frozen, targets, chunk_rows=c), hidden
        )
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=700)
    ap.add_argument("--vocab", type=int, default=33278)
    ap.add_argument("--dims", type=int, nargs="+", default=[200, 512])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--chunk-rows", type=int, nargs="*", default=None, help="default: the library's")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    chunks = args.chunk_rows or [None]
    default = default_chunk_rows(args.n, args.vocab, torch.float32, device)
    print(f"N={args.n} V={args.vocab} device={device} threads={torch.get_num_threads()} "
          f"default chunk_rows={default}")
    for d in args.dims:
        fns = variants(args.n, d, args.vocab, chunks, device)
        times = {name: [] for name in fns}
        for rnd in range(args.reps + 1):  # round 0 is warm-up
            for name, fn in fns.items():
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                if rnd:
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["plain"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"d={d:4d} {name:22s} {med * 1e3:8.1f} ms   plain/this = {base / med:4.2f}x")


if __name__ == "__main__":
    main()
