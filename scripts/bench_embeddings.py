#!/usr/bin/env python
"""Wall time of `lmfix build-embeddings` on WikiText-2 (whole command: start-up, corpus, build,
save), median of several runs per setting.

    python scripts/bench_embeddings.py --data ../shared/data/wikitext-2 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "pmi --dim 200": ["--method", "pmi", "--dim", "200"],
    "pmi --dim 512": ["--method", "pmi", "--dim", "512"],
    "word2vec --dim 200 (CBOW)": ["--method", "word2vec", "--dim", "200"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in SETTINGS.items():
            times = []
            for i in range(a.runs):
                cmd = [sys.executable, "-m", "lmfix", "build-embeddings", *flags, "--data", a.data,
                       "--out", f"{tmp}/e{i}.bin", "--quiet"]
                t = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - t)
            print(f"{name:28} median {statistics.median(times):6.1f} s wall "
                  f"(runs: {', '.join(f'{x:.1f}' for x in times)})", flush=True)


if __name__ == "__main__":
    main()
