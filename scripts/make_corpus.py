"""Write a synthetic WikiText-style corpus of a chosen vocabulary size and token count.

    python scripts/make_corpus.py --vocab 267735 --tokens 103227021 --out data-synth/wt103
    python scripts/make_corpus.py --vocab 33278 --tokens 2088628 --out data-synth/wt2 --seed 1

WikiText-103 cannot be downloaded on the machines this project runs on; this makes a corpus of
its size (or any other), reproducibly (``--seed``), for measuring how lmfix's costs grow. What
it keeps of real text:

- **Zipfian word frequencies** (exponent ``--zipf``, 1.0 by default) over ``--vocab`` types, of
  which ``<unk>`` is one (real WikiText's own rare-word token), ``<eos>`` another (a line end)
  and the headings' ``=`` a third, and every word occurs in the training split at least ``--min-count`` times (as every
  WikiText-103 word occurs at least 3 times);
- **word-to-word structure**: a sparse Markov chain. Each word has ``--successors`` likely next
  words (drawn by frequency); a token follows its predecessor's list with probability
  ``--markov`` and is drawn from the unigram distribution otherwise. An i.i.d. Zipf stream has
  no co-occurrence structure at all, so its PPMI matrix is noise and an SVD has nothing to
  find; this one has the few strong contexts per word real text has;
- **lines of realistic length**: paragraphs of log-normally distributed length (median ~50
  tokens), headings ``= w12 w7 =``, and the blank line after each that WikiText has.

valid.txt and test.txt follow the same process (another seed) with WikiText's valid/test sizes
by default (``--eval-tokens``), so their words are the training vocabulary's. Words are
``w0``, ``w1``, ... by frequency rank.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

EVAL_TOKENS = (217_646, 245_569)  # WikiText-2/103's valid and test splits


def zipf_probs(n: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return p / p.sum()


def token_stream(n: int, probs: np.ndarray, successors: np.ndarray, slot_p: np.ndarray,
                 markov: float, rng: np.random.Generator, streams: int = 4096) -> np.ndarray:
    """``n`` word ids (0..V−1 by rank) from the chain, made as ``streams`` parallel chains,
    vectorized over them one step at a time, then concatenated."""
    steps = -(-n // streams)
    cdf = np.cumsum(probs)
    out = np.empty((streams, steps), dtype=np.int32)
    prev = np.minimum(np.searchsorted(cdf, rng.random(streams)), len(probs) - 1)
    slots = np.cumsum(slot_p)
    for t in range(steps):
        follow = rng.random(streams) < markov
        uni = np.minimum(np.searchsorted(cdf, rng.random(streams)), len(probs) - 1)
        slot = np.minimum(np.searchsorted(slots, rng.random(streams)), len(slot_p) - 1)
        prev = np.where(follow, successors[prev, slot], uni)
        out[:, t] = prev
    return out.reshape(-1)[:n]


def lines_of(ids: np.ndarray, words: np.ndarray, rng: np.random.Generator) -> list[str]:
    """WikiText-style lines: a heading now and then, paragraphs, a blank line after each."""
    out, i = [], 0
    while i < len(ids):
        if rng.random() < 0.08:  # a heading of 1–4 words
            k = int(rng.integers(1, 5))
            out += [" = " + " ".join(words[ids[i: i + k]]) + " = ", " "]
        else:
            k = max(1, int(rng.lognormal(np.log(50), 0.8)))
            out += [" " + " ".join(words[ids[i: i + k]]) + " ", " "]
        i += k
    return out


def make(vocab: int, tokens: int, seed: int = 0, zipf: float = 1.0, successors: int = 16,
         markov: float = 0.6, min_count: int = 3,
         eval_tokens: tuple[int, int] = EVAL_TOKENS) -> dict[str, list[str]]:
    """The three splits' lines (each line ends without its newline)."""
    if vocab < 4:
        raise ValueError("--vocab must leave room for <unk>, <eos>, '=' and a word: at least 4")
    n_words = vocab - 2  # <eos> (the line end) and the headings' "=" are types too
    if tokens < n_words * min_count:
        raise ValueError(f"--tokens {tokens:,} cannot hold {n_words:,} words {min_count} times "
                         "each; lower --vocab or --min-count, or raise --tokens")
    rng = np.random.default_rng(seed)
    probs = zipf_probs(n_words, zipf)
    cdf = np.cumsum(probs)
    succ = np.minimum(np.searchsorted(cdf, rng.random((n_words, successors))), n_words - 1)
    slot_p = zipf_probs(successors, 1.0)
    words = np.array([f"w{r}" for r in range(n_words)], dtype=object)
    words[min(100, n_words - 1)] = "<unk>"  # WikiText's rare-word token, a common one
    # the words a Zipf stream of this length would miss, min_count times each, at random
    # places: the training split then holds the whole vocabulary
    ids = token_stream(tokens, probs, succ, slot_p, markov, rng)
    extra = np.empty(0, dtype=ids.dtype)
    while True:  # (cutting the stream back to --tokens can leave a word short again)
        kept = ids[: tokens - len(extra)]
        counts = np.bincount(kept, minlength=n_words) + np.bincount(extra, minlength=n_words)
        short = np.repeat(np.arange(n_words), np.maximum(0, min_count - counts))
        if not len(short):
            break
        extra = np.concatenate([extra, short.astype(ids.dtype)])
    ids = np.insert(kept, np.sort(rng.integers(0, len(kept) + 1, len(extra))), extra)
    splits = {"train": lines_of(ids, words, rng)}
    for name, n, s in (("valid", eval_tokens[0], 1), ("test", eval_tokens[1], 2)):
        sub = np.random.default_rng(seed + 1_000_003 * s)
        splits[name] = lines_of(token_stream(n, probs, succ, slot_p, markov, sub), words, sub)
    return splits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, required=True, help="types, <unk> and <eos> included")
    ap.add_argument("--tokens", type=int, required=True,
                    help="words of the training split (the example's token count adds an "
                         "<eos> per line)")
    ap.add_argument("--out", type=Path, required=True, help="directory for train/valid/test.txt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zipf", type=float, default=1.0, help="frequency exponent (1.0)")
    ap.add_argument("--successors", type=int, default=16, help="likely next words per word")
    ap.add_argument("--markov", type=float, default=0.6,
                    help="chance a token follows its predecessor's list (0.6)")
    ap.add_argument("--min-count", type=int, default=3, help="occurrences of every word (3)")
    ap.add_argument("--eval-tokens", type=int, nargs=2, default=list(EVAL_TOKENS),
                    metavar=("VALID", "TEST"))
    a = ap.parse_args(argv)
    try:
        splits = make(a.vocab, a.tokens, a.seed, a.zipf, a.successors, a.markov, a.min_count,
                      tuple(a.eval_tokens))
    except ValueError as e:
        print(f"make_corpus: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        tmp = a.out / f".{name}.txt.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for i in range(0, len(lines), 100_000):
                f.write("\n".join(lines[i: i + 100_000]) + "\n")
        tmp.replace(a.out / f"{name}.txt")
    print(f"wrote {a.out}/train.txt, valid.txt, test.txt ({a.tokens:,} training words, "
          f"vocabulary {a.vocab:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
