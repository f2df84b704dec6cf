"""The short sweep that chose the Transformer's training defaults (lmfix.config.MODEL_DEFAULTS).

    python scripts/sweep_transformer.py --data ../shared/data/wikitext-2 --out runs/sweep-tf

Every point trains `lmfix train --model transformer` at the quick preset's size and budget
(d = 64, nhid 64, 2 layers, 2 heads, no dropout, the first 300k training tokens once), one
thread each, validation on the first 50k tokens, into OUT/NAME; then `lmfix report OUT` makes
the table (docs/results.md shows it). The points: the example's SGD at lr 20 and 5 (its README
suggests 5 for the Transformer), AdamW at 3e-4 … 1e-2, with and without a linear warm-up, the
clip, pre- vs post-LayerNorm and learned vs sinusoidal positions at 3e-3. Each point gives every
setting the Transformer's defaults touch, so none inherits a default. Finished
points are kept (rerun to resume); ``--jobs`` runs several at once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE = ["--model", "transformer", "--emsize", "64", "--nhid", "64", "--nhead", "2",
        "--dropout", "0", "--epochs", "1", "--max-train-tokens", "300000",
        "--max-eval-tokens", "50000", "--log-interval", "50", "--quiet"]
# Every training setting the model defaults touch is given, so no point inherits a default.
SGD = ["--optimizer", "sgd", "--clip", "0.25", "--warmup", "0"]
PRE = ["--norm", "pre", "--positions", "sinusoidal"]


def adamw(lr: str, warmup: int = 0, clip: str = "1", arch: list[str] = PRE) -> list[str]:
    return ["--optimizer", "adamw", "--lr", lr, "--warmup", str(warmup), "--clip", clip, *arch]


POINTS = {  # name -> flags beside BASE
    "sgd-lr20": [*SGD, "--lr", "20", *PRE],
    "sgd-lr5": [*SGD, "--lr", "5", *PRE],
    "adamw-3e-4": adamw("3e-4"),
    "adamw-1e-3": adamw("1e-3"),
    "adamw-3e-3": adamw("3e-3"),
    "adamw-1e-2": adamw("1e-2"),
    "adamw-3e-3-warmup100": adamw("3e-3", 100),
    "adamw-1e-2-warmup100": adamw("1e-2", 100),
    "adamw-3e-3-clip0.25": adamw("3e-3", clip="0.25"),
    "adamw-3e-3-post": adamw("3e-3", arch=["--norm", "post", "--positions", "sinusoidal"]),
    "adamw-3e-3-learned-pos": adamw("3e-3", arch=["--norm", "pre", "--positions", "learned"]),
}


def run_point(name: str, flags: list[str], data: str, out: Path) -> tuple[str, int]:
    run = out / name
    args = ["--resume", str(run)] if (run / "config.json").is_file() else \
        ["--data", data, "--out", str(run), *BASE, *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(out / f"{name}.log", "a", encoding="utf-8") as log:
        p = subprocess.run([sys.executable, "-m", "lmfix", "train", *args], stdout=log,
                           stderr=subprocess.STDOUT, env=env)
    return name, p.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="these points only")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    points = {k: v for k, v in POINTS.items() if not a.only or k in a.only}
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        for name, rc in pool.map(lambda kv: run_point(*kv, a.data, a.out), points.items()):
            print(f"{name}: {'ok' if rc == 0 else f'exit {rc} (see {a.out / name}.log)'}",
                  flush=True)
    return subprocess.run([sys.executable, "-m", "lmfix", "report", str(a.out)]).returncode


if __name__ == "__main__":
    sys.exit(main())
