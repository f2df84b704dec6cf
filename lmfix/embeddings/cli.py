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

from ..config import add_train_flags, help_text
from ..data import load_corpus
from ..errors import LmfixError
from ..flags import EMBEDDING_FLAG_TYPES as TYPES
from ..tokenizer import TokenizerConfig
from .methods import METHODS, method_settings
from .vectors import load_embeddings, nearest_neighbors, save_format

# Method flags, from the settings' one definition (lmfix.embeddings.methods): name -> (the
# dataclass field, the methods it applies to).
_METHOD_SETTINGS = method_settings()
_GROUPS = {("word2vec", "pmi"): "pmi and word2vec", ("pmi",): "pmi (hyperwords names)",
           ("word2vec",): "word2vec (gensim names)"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_method_flags(p: argparse.ArgumentParser) -> None:
    for methods, title in _GROUPS.items():
        g = p.add_argument_group(title)
        for name, (f, has) in _METHOD_SETTINGS.items():
            if tuple(sorted(has, reverse=True)) != methods:
                continue
            s = f.metadata["setting"]
            shown = s.none_means if f.default is None else (
                ("on" if f.default else "off") if isinstance(f.default, bool) else f.default)
            allowed = f"; {s.range.allowed}" if s.range is not None else ""
            kw = dict(dest=name, default=None, help=f"{s.help} (default: {shown}{allowed})")
            if isinstance(f.default, bool):
                kw["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
            else:
                kw["type"] = s.range
            g.add_argument(_flag(name), **kw)


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
    p.add_argument("--data", default=None, help=help_text("data"))
    p.add_argument("--out", required=True,
                   help="output file: .bin is word2vec binary, anything else word2vec text "
                        "(unless --format says otherwise); FILE.json gets the metadata")
    p.add_argument("--format", choices=("text", "binary"), default=None,
                   help="output format (default: binary for .bin, else text)")
    p.add_argument("--seed", type=TYPES["seed"], default=0,
                   help="random seed: SVD start vector, subsampling, word2vec init, bases "
                        "(default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_train_flags(p, only=("tokenizer", "sp_model_type", "sp_vocab_size"))
    _add_method_flags(p)
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
    params = {name: getattr(args, name) for name in _METHOD_SETTINGS
              if getattr(args, name) is not None}
    build_command(args.method, args.dim, args.data, args.out, args.format, args.seed, params,
                  progress=not args.quiet, tokenizer=TokenizerConfig.from_settings(args))


def _cmd_neighbors(args: argparse.Namespace) -> None:
    print_neighbors(args.file, args.words, args.k)


def _cmd_evaluate_embeddings(args: argparse.Namespace) -> None:
    from .intrinsic import evaluate_command  # gensim loads only for this command
    evaluate_command(args.files, args.data, args.json)


def build_command(method: str, dim: int, data: str | None, out: str, fmt: str | None, seed: int,
                  params: dict, progress: bool = True, tokenizer: TokenizerConfig | None = None):
    """Load the corpus, build, save, and print what was built. Returns the Embeddings."""
    from .build import build_and_save  # scipy and gensim load only for this command
    misplaced = [_flag(k) for k in params if method not in _METHOD_SETTINGS[k][1]]
    if misplaced:
        own = [_flag(k) for k, (_, methods) in _METHOD_SETTINGS.items() if method in methods]
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
