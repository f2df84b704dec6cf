"""The fixed embedding's memory saving, measured by the allocator instead of process memory.

bench_scale.py's training rows give the saving as peak(learned) − peak(fixed) of two whole
processes; each peak moves by tens of MB from run to run, so where the saving itself is
53–400 MB (V = 33k, 100k) that difference cannot be checked against the formula to 5%.
Here each ``lmfix train`` run (the same settings as bench_scale.py's rows) runs under
``torch.profiler`` with ``profile_memory``: every CPU tensor allocation and free is an event,
and the live bytes summed over the events in time order have a peak that does not depend on
the machine's load or the allocator's slack. The saving is the difference of the two peaks,
beside the difference of ``lmfix.memory.estimate_train_bytes`` for the two runs' recorded
settings (its ``runtime`` part, no tensor, is the same in both)::

    python scripts/bench_saving.py --vocabs 33278,100000,267735 --dims 200,512

Output: one JSON line a run, and a Markdown table at the end. Each run is its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import (ESTIMATE_CODE, LR, MAKE_CORPUS, PROBE_CODE, _choices, _ints,  # noqa: E402
                         _positive, corpus_name, train_args)
from scale_report import OPTIMIZERS  # noqa: E402

FIXED = "random-orthogonal"


def tensor_peak(events) -> tuple[int, int, int]:
    """(peak, steps peak, final) live bytes of the CPU tensors allocated while profiling: each
    op's own allocations less its frees (``self_cpu_memory_usage``, so nested ops count
    once), and the frees outside any op (``[memory]`` events), in order of time. The steps
    peak is the largest live total from the first step's ``zero_grad`` to the end of the
    last optimizer step: the training steps, without building the model or evaluating it."""
    events = sorted(events, key=lambda e: e.time_range.start)
    marks = [e for e in events if e.name.startswith("Optimizer.")]
    first = min((e.time_range.start for e in marks if "zero_grad" in e.name), default=None)
    last = max((e.time_range.end for e in marks if ".step" in e.name), default=None)
    live = peak = steps = 0
    for e in events:
        live += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, live)
        if first is not None and first <= e.time_range.start <= last:
            steps = max(steps, live)
    return peak, steps, live


def paper_saving(vocab: int, d: int, optimizer: str) -> int:
    """The paper's arithmetic for a tied V × d table, float32: its gradient, and Adam's two
    moments (SGD without momentum keeps no state)."""
    return vocab * d * 4 * (1 if optimizer == "sgd" else 3)


def child(data: str, embedding: str, d: int, optimizer: str, train_tokens: int,
          eval_tokens: int, out: str) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lmfix.cli import main

    with tempfile.TemporaryDirectory(prefix="lmfix-saving-") as scratch:
        run = Path(scratch) / "run"
        args = train_args(data, {"embedding": embedding, "d": d, "optimizer": optimizer,
                                 "lr": LR[optimizer], "train_tokens": train_tokens,
                                 "eval_tokens": eval_tokens, "log_interval": 2,
                                 "device": "cpu"}, str(run))
        torch.set_num_threads(2)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            rc = main(args)
        if rc:
            raise SystemExit(f"lmfix train exited {rc}")
        peak, steps, final = tensor_peak(prof.events())
        sizes = Path(scratch) / "sizes.json"
        subprocess.run([sys.executable, "-c", PROBE_CODE, data, str(sizes)], check=True)
        est = Path(scratch) / "estimate.json"
        subprocess.run([sys.executable, "-c", ESTIMATE_CODE, str(run / "config.json"),
                        str(sizes), str(est)], check=True)
        estimate = json.loads(est.read_text())
    Path(out).write_text(json.dumps({
        "embedding": embedding, "d": d, "optimizer": optimizer, "tensor_peak": peak,
        "steps_peak": steps, "tensor_final": final, "estimate": estimate["estimate_bytes"],
        "estimate_parts": estimate["estimate_parts"]}))


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench_saving", description=__doc__.split("\n")[0])
    ap.add_argument("--vocabs", type=_ints(4), default=[33278, 100000])
    ap.add_argument("--dims", type=_ints(1), default=[200, 512])
    ap.add_argument("--optimizers", type=_choices(OPTIMIZERS), default=list(OPTIMIZERS))
    ap.add_argument("--tokens", type=_positive, default=2_000_000,
                    help="each corpus's training words")
    ap.add_argument("--corpora", type=Path, default=Path("/work/synth"))
    ap.add_argument("--train-tokens", type=_positive, default=2800,
                    help="training tokens a run (4 steps of 20 × 35)")
    ap.add_argument("--eval-tokens", type=_positive, default=1400)
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        data, emb, d, opt, tt, et, out = a.child
        child(data, emb, int(d), opt, int(tt), int(et), out)
        return 0
    rows = []
    for vocab in a.vocabs:
        data = a.corpora / corpus_name(vocab, a.tokens)
        if not (data / "train.txt").exists():
            if subprocess.run([sys.executable, str(MAKE_CORPUS), "--vocab", str(vocab),
                               "--tokens", str(a.tokens), "--out", str(data)]).returncode:
                print(f"bench_saving: error: make_corpus.py could not write {data}",
                      file=sys.stderr)
                return 1
        for d in a.dims:
            for opt in a.optimizers:
                pair = {}
                for emb in ("learned", FIXED):
                    with tempfile.NamedTemporaryFile(suffix=".json") as f:
                        rc = subprocess.run([sys.executable, __file__, "--child", str(data),
                                             emb, str(d), opt, str(a.train_tokens),
                                             str(a.eval_tokens), f.name]).returncode
                        if rc:  # the run's own error line is above
                            print(f"bench_saving: error: the {emb} run (V {vocab:,}, d {d}, "
                                  f"{opt}) exited {rc}", file=sys.stderr)
                            return 1
                        pair[emb] = json.loads(Path(f.name).read_text())
                    print(json.dumps({"vocab": vocab, **pair[emb]}), flush=True)
                learned, fixed = pair["learned"], pair[FIXED]
                rows.append((vocab, d, opt, learned["tensor_peak"] - fixed["tensor_peak"],
                             learned["estimate"] - fixed["estimate"],
                             learned["steps_peak"], fixed["steps_peak"],
                             learned["steps_peak"] - fixed["steps_peak"],
                             paper_saving(vocab, d, opt)))
    print("\n| V | d | optimizer | whole run: saving | estimate's difference | steps: learned "
          "peak | fixed peak | saving | V·d·4·(1 + moments) | saving / that |\n"
          "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    for vocab, d, opt, whole, est, lp, fp, s, paper in rows:
        print(f"| {vocab:,} | {d} | {opt} | {mb(whole)} | {mb(est)} | {mb(lp)} | {mb(fp)} "
              f"| {mb(s)} | {mb(paper)} | {s / paper:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
