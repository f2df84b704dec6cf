"""How far the rows a --learn-top run trained moved from their fixed start (README numbers).

    python scripts/learn_top_norms.py runs/frontier/runs/word2vec-learn-top-1000 \
        --start runs/frontier/runs/word2vec

RUN is a finished ``--learn-top K`` run, ``--start`` the fixed run of the same embedding file
and norm (its input table is where the trained rows started). Prints the median and largest
norm of the K trained rows, the median norm of the others, and the trained rows' mean cosine
to their start. Uses only the public API (``lmfix.load``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import lmfix
from lmfix.errors import LmfixError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished --learn-top run directory")
    ap.add_argument("--start", required=True, help="the fixed run of the same embedding file")
    args = ap.parse_args(argv)
    try:
        model = lmfix.load(args.run)
        start = lmfix.load(args.start).embedding().vectors
    except LmfixError as e:
        print(f"learn_top_norms: error: {e}", file=sys.stderr)
        return 2
    ids = [v for k, v in model.model.state_dict().items() if k.endswith("top_rows.ids")]
    vectors = model.embedding().vectors
    if not ids or start.shape != vectors.shape:
        print(f"learn_top_norms: error: {args.run} is not a --learn-top run of the vectors "
              f"{args.start} holds", file=sys.stderr)
        return 2
    ids = ids[0].numpy()
    norms = np.linalg.norm(vectors, axis=1)
    others = np.setdiff1d(np.arange(len(vectors)), ids)
    cosine = ((vectors[ids] * start[ids]).sum(1)
              / (norms[ids] * np.linalg.norm(start[ids], axis=1)))
    print(f"{len(ids):,} trained rows: median norm {np.median(norms[ids]):.2f}, largest "
          f"{norms[ids].max():.2f}; the other {len(others):,}: median "
          f"{np.median(norms[others]):.2f}; trained rows' mean cosine to their start "
          f"{cosine.mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
