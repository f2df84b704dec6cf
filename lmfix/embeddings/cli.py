"""``lmfix build-embeddings``, ``neighbors`` and ``evaluate-embeddings``: flags in, one library
call out.

Examples (from the repository root, WikiText-2 in ../shared/data/wikitext-2)::

    lmfix build-embeddings --method pmi --dim 200 --data ../shared/data/wikitext-2 --out emb/pmi-d200.bin
    lmfix build-embeddings --method word2vec --dim 200 --sg 1 --data ../shared/data/wikitext-2 --out emb/sg-d200.txt
    lmfix neighbors emb/pmi-d200.bin king river France -k 5
    lmfix evaluate-embeddings emb/pmi-d200.bin emb/sg-d200.txt --data ../shared/data/wikitext-2
"""

from __future__ import annotations

import argparse
import time

from ..data import DATA_HELP, load_corpus
from ..errors import LmfixError
from ..flags import EMBEDDING_FLAG_TYPES as TYPES
from ..tokenizer import TokenizerConfig, add_tokenizer_flags
from .vectors import load_embeddings, nearest_neighbors, save_format

METHODS = ("word2vec", "pmi", "random-orthogonal", "hadamard")  # = build.METHODS (a test checks)


# Method flags: dest → (flag, methods it applies to). Defaults live in the config dataclasses.
_METHOD_FLAGS = {
    "window": ("--window", ("pmi", "word2vec")),
    "dyn": ("--dyn/--no-dyn", ("pmi",)),
    "sub": ("--sub", ("pmi",)),
    "cds": ("--cds", ("pmi",)),
    "neg": ("--neg", ("pmi",)),
    "eig": ("--eig", ("pmi",)),
    "w_plus_c": ("--w-plus-c", ("pmi",)),
    "sg": ("--sg", ("word2vec",)),
    "negative": ("--negative", ("word2vec",)),
    "sample": ("--sample", ("word2vec",)),
    "epochs": ("--epochs", ("word2vec",)),
    "workers": ("--workers", ("word2vec",)),
}


def register(subparsers) -> None:
    """Add ``build-embeddings`` and ``neighbors`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "build-embeddings", help="build fixed word embeddings (word2vec, PMI, random bases)",
        description="Build word embeddings for the corpus vocabulary and save them in word2vec "
                    "format (text or binary) with a JSON sidecar FILE.json recording how they "
                    "were made. Method flags left out keep the defaults shown.")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="word2vec (gensim CBOW/skip-gram), pmi (shifted PPMI + truncated SVD, "
                        "Levy & Goldberg 2014), random-orthogonal or hadamard (data-free bases)")
    p.add_argument("--dim", type=TYPES["dim"], required=True, help="vector dimension d")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--out", required=True,
                   help="output file: .bin is word2vec binary, anything else word2vec text "
                        "(unless --format says otherwise); FILE.json gets the metadata")
    p.add_argument("--format", choices=("text", "binary"), default=None,
                   help="output format (default: binary for .bin, else text)")
    p.add_argument("--seed", type=TYPES["seed"], default=0,
                   help="random seed: SVD start vector, subsampling, word2vec init, bases "
                        "(default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_tokenizer_flags(p)

    g = p.add_argument_group("pmi and word2vec")
    g.add_argument("--window", type=TYPES["window"], default=None,
                   help="context window on each side (default 5)")
    g = p.add_argument_group("pmi (hyperwords names)")
    g.add_argument("--dyn", action=argparse.BooleanOptionalAction, default=None,
                   help="weight contexts by distance, (window - dist + 1) / window, the expected "
                        "weight of word2vec's dynamic window (default on)")
    g.add_argument("--sub", type=TYPES["sub"], default=None,
                   help="subsampling threshold t: drop tokens of words with frequency f > t with "
                        "probability 1 - sqrt(t/f) (default 0: off)")
    g.add_argument("--cds", type=TYPES["cds"], default=None,
                   help="context distribution smoothing: context counts raised to this power "
                        "(default 0.75)")
    g.add_argument("--neg", type=TYPES["neg"], default=None,
                   help="PMI shift k: PPMI = max(PMI - log k, 0) (default 1: plain PPMI)")
    g.add_argument("--eig", type=TYPES["eig"], default=None,
                   help="eigenvalue weighting p: vectors U * S^p (default 0.5; 0 = U alone)")
    g.add_argument("--w-plus-c", action="store_true", default=None,
                   help="add the context vectors V * S^p to the word vectors (default off)")
    g = p.add_argument_group("word2vec (gensim names)")
    g.add_argument("--sg", type=int, choices=(0, 1), default=None,
                   help="0 = CBOW, 1 = skip-gram (default 0)")
    g.add_argument("--negative", type=TYPES["negative"], default=None,
                   help="negative samples per positive example, 1 to 1000 (default 5)")
    g.add_argument("--sample", type=TYPES["sample"], default=None,
                   help="down-sampling threshold for frequent words (default 1e-3; 0 = off)")
    g.add_argument("--epochs", type=TYPES["epochs"], default=None,
                   help="passes over the corpus (default 5)")
    g.add_argument("--workers", type=TYPES["workers"], default=None,
                   help="training threads (default min(4, CPUs); 1 makes runs reproducible)")
    p.set_defaults(func=_cmd_build_embeddings)

    p = subparsers.add_parser(
        "neighbors", help="nearest neighbours of words by cosine similarity",
        description="Print the words closest (cosine) to each WORD in an embedding file "
                    "(word2vec text/binary, GloVe, fastText .vec, .npy + vocabulary).")
    p.add_argument("file", metavar="FILE", help="embedding file")
    p.add_argument("words", metavar="WORD", nargs="+", help="words to look up")
    p.add_argument("-k", type=TYPES["k"], default=10, help="neighbours per word (default %(default)s)")
    p.set_defaults(func=_cmd_neighbors)

    p = subparsers.add_parser(
        "evaluate-embeddings", help="word similarity and analogy scores of embedding files",
        description="Score embedding files with gensim's own evaluate_word_pairs (WordSim-353, "
                    "SimLex-999: Spearman rho) and evaluate_word_analogies (Google analogies: "
                    "accuracy) on the test sets gensim ships, case-insensitively; OOV % is the "
                    "share of pairs/questions skipped for a word the file lacks. Prints one "
                    "table. See lmfix.embeddings.intrinsic.")
    p.add_argument("files", metavar="FILE", nargs="+", help="embedding files")
    p.add_argument("--data", default=None,
                   help="corpus whose training frequencies order the words, so a word with "
                        "several casings (The/the) is looked up in its most frequent one "
                        "(default: the file's order, which word2vec files sort by frequency)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the scores as JSON")
    p.set_defaults(func=_cmd_evaluate_embeddings)


def _cmd_build_embeddings(args: argparse.Namespace) -> None:
    params = {dest: getattr(args, dest) for dest in _METHOD_FLAGS if getattr(args, dest) is not None}
    build_command(args.method, args.dim, args.data, args.out, args.format, args.seed, params,
                  progress=not args.quiet, tokenizer=TokenizerConfig.from_flags(args))


def _cmd_neighbors(args: argparse.Namespace) -> None:
    print_neighbors(args.file, args.words, args.k)


def _cmd_evaluate_embeddings(args: argparse.Namespace) -> None:
    from .intrinsic import evaluate_command  # gensim loads only for this command
    evaluate_command(args.files, args.data, args.json)


def build_command(method: str, dim: int, data: str | None, out: str, fmt: str | None, seed: int,
                  params: dict, progress: bool = True, tokenizer: TokenizerConfig | None = None):
    """Load the corpus, build, save, and print what was built. Returns the Embeddings."""
    from .build import build_and_save  # scipy and gensim load only for this command
    misplaced = [_METHOD_FLAGS[k][0] for k in params if method not in _METHOD_FLAGS[k][1]]
    if misplaced:
        own = [flag for flag, methods in _METHOD_FLAGS.values() if method in methods]
        raise LmfixError(f"{', '.join(misplaced)} do(es) not apply to --method {method}; "
                         f"its flags: {', '.join(own) or '(none)'}")
    if dim < 1:
        raise LmfixError(f"--dim must be positive, got {dim}")
    fmt = save_format(out, fmt)  # fail before a long build, not after
    started = time.perf_counter()
    corpus = load_corpus(data, tokenizer)
    loaded = time.perf_counter()
    emb = build_and_save(method, corpus, dim, out, params, seed, fmt, progress=progress)
    saved = time.perf_counter()
    cov = emb.meta["coverage"]
    built = loaded + emb.meta["build_seconds"]
    print(f"{method}: {len(emb):,} x {emb.dim} vectors built in {emb.meta['build_seconds']:.1f} s "
          f"(corpus loaded in {loaded - started:.1f} s, saved in {saved - built:.1f} s)")
    line = (f"coverage: {cov['covered']:,} of {cov['vocab_size']:,} vocabulary words "
            f"({100 * cov['covered'] / cov['vocab_size']:.2f}%)")
    if cov["missing"]:
        line += f"; missing {cov['missing']:,}, e.g. {' '.join(cov['examples_missing'])}"
    print(line)
    print(f"wrote {out} ({fmt}) and {out}.json")
    return emb


def print_neighbors(path: str, words: list[str], k: int = 10) -> None:
    emb = load_embeddings(path)
    known = set(emb.words)
    unknown = [w for w in words if w not in known]
    if unknown:
        raise LmfixError(f"not in {path}: {' '.join(unknown)}")
    for word in words:
        print(f"{word}:")
        for other, cosine in nearest_neighbors(emb, word, k):
            print(f"  {cosine:7.4f}  {other}")
