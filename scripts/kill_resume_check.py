#!/usr/bin/env python
"""Kill a WikiText-2 training run with SIGKILL mid-epoch, resume it, and compare its final
metrics with an uninterrupted run of the same seed (they should be identical on CPU).

    python scripts/kill_resume_check.py --data ../shared/data/wikitext-2 --out runs/killcheck
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmfix.checkpoint import load_checkpoint
from lmfix.errors import LmfixError


def lmfix(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmfix", *args])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/killcheck")
    ap.add_argument("--embedding", default="learned")
    a = ap.parse_args()
    out = Path(a.out)
    train = ["train", "--data", a.data, "--embedding", a.embedding, "--max-train-tokens", "60000",
             "--max-eval-tokens", "20000", "--epochs", "2", "--quiet", "--force"]
    ref, killed = out / "uninterrupted", out / "killed"
    assert lmfix(*train, "--out", str(ref)).wait() == 0
    # checkpoints every ~3 s, so the kill lands after one inside epoch 2
    p = lmfix(*train, "--out", str(killed), "--checkpoint-every", "0.05")
    while True:
        time.sleep(0.2)
        if p.poll() is not None:
            raise SystemExit("the run finished before it could be killed")
        try:
            st = load_checkpoint(killed / "checkpoint.pt")["state"]
        except LmfixError:
            continue
        if st["epoch"] == 2 and 0 < st["batch"]:
            break
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    st = load_checkpoint(killed / "checkpoint.pt")["state"]
    print(f"killed with SIGKILL; last checkpoint: epoch {st['epoch']}, batch {st['batch']}")
    assert lmfix("train", "--resume", "--out", str(killed), "--quiet").wait() == 0
    rows = []
    for name, d in (("uninterrupted", ref), ("killed + resumed", killed)):
        s = json.loads((d / "summary.json").read_text())
        rows.append((name, s["val_loss"], s["val_ppl"], s["test_loss"], s["test_ppl"]))
    print(f"{'run':18} {'val loss':>18} {'val ppl':>10} {'test loss':>18} {'test ppl':>10}")
    for r in rows:
        print(f"{r[0]:18} {r[1]:18.15f} {r[2]:10.4f} {r[3]:18.15f} {r[4]:10.4f}")
    print("identical" if rows[0][1:] == rows[1][1:] else "DIFFERENT")


if __name__ == "__main__":
    main()
