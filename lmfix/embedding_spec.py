"""Turn an ``--embedding`` value into a model mode and, for given vectors, their V×d matrix;
resolve ``--fix`` (once, here) and check that ``--fix``, ``--learn-top`` and ``--delta-rank``
fit it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import FIX_SIDES
from .errors import LmfixError
from .model import DEFAULT_DIM
from .tokenizer import describe, same_tokenizer

LEARNED_SPECS = ("learned", "learned-untied")
BASIS_SPECS = ("random-orthogonal", "hadamard")


@dataclass
class ResolvedEmbedding:
    mode: str  # model mode: learned | learned-untied | vectors
    source: str  # learned | word2vec | pmi | random-orthogonal | hadamard | file
    dim: int | None  # the file's dimension, None when the caller chooses it
    matrix: torch.Tensor | None = None  # V×d rows in vocabulary order (vectors only)
    coverage: dict = field(default_factory=dict)


def planned(spec: str, emsize: int | None) -> tuple[str, int] | None:
    """(model mode, dim) of a learned embedding or a basis before anything is built, so the
    memory check can refuse an impossible size first; None for a file (its dim is its own)."""
    if spec in LEARNED_SPECS:
        return spec, emsize or DEFAULT_DIM
    if spec in BASIS_SPECS:
        return "vectors", emsize or DEFAULT_DIM
    return None


def resolve_fix(spec: str, fix: str | None) -> str | None:
    """The side(s) of given vectors kept fixed: ``--fix``, or both when it is not given; None
    for a learned embedding (which has no vectors to fix). The one place "not given" is read."""
    if spec in LEARNED_SPECS:
        return None
    return fix or "both"


def resolve_embedding(spec: str, vocab_words: list[str], emsize: int | None, seed: int,
                      oov: str = "error", tokenizer: dict | None = None) -> ResolvedEmbedding:
    """``emsize`` None means "take the file's dimension" (DEFAULT_DIM for learned and bases);
    ``tokenizer`` is the corpus tokenizer's identity, checked against the file's."""
    if spec in LEARNED_SPECS:
        return ResolvedEmbedding(spec, "learned", emsize or DEFAULT_DIM)
    if spec in BASIS_SPECS:
        from .embeddings import bases
        d = emsize or DEFAULT_DIM
        make = bases.random_orthogonal if spec == "random-orthogonal" else bases.hadamard
        m = torch.from_numpy(np.asarray(make(len(vocab_words), d, seed), dtype=np.float32))
        return ResolvedEmbedding("vectors", spec, d, m, {"covered": len(vocab_words), "missing": 0,
                                                       "vocab_size": len(vocab_words)})
    path = Path(spec)
    if not path.exists():
        raise LmfixError(f"--embedding {spec!r}: not one of {', '.join(LEARNED_SPECS + BASIS_SPECS)}"
                         " and no such file")
    from .embeddings.vectors import align_to_vocab, load_embeddings
    emb = load_embeddings(path)
    _check_tokenizer(path, (emb.meta or {}).get("tokenizer"), tokenizer)
    d = emb.vectors.shape[1]
    if emsize is not None and emsize != d:
        raise LmfixError(f"{path} has {d}-dimensional vectors but --emsize is {emsize}; "
                         f"drop --emsize or pass --emsize {d}")
    matrix, coverage = align_to_vocab(emb, vocab_words, oov=oov, seed=seed)
    source = str((emb.meta or {}).get("method") or "file")
    return ResolvedEmbedding("vectors", source, d, torch.from_numpy(np.asarray(matrix, np.float32)),
                             coverage)


def check_embedding_options(spec: str, fix: str | None = None, learn_top: int = 0,
                            delta_rank: int = 0, vocab_size: int | None = None,
                            dim: int | None = None) -> None:
    """One :class:`LmfixError` if the options do not fit the ``--embedding`` value ``spec``:
    ``--fix`` needs given vectors, ``--learn-top``/``--delta-rank`` a fixed tied table
    (``--fix both``, the default), ``--learn-top`` at most the vocabulary's words and
    ``--delta-rank`` at most min(V, d), the highest rank a V × d correction has (each checked
    once the vocabulary size and dimension are known)."""
    if fix is not None and fix not in FIX_SIDES:
        raise LmfixError(f"--fix {fix!r}: use one of {', '.join(FIX_SIDES)}")
    learned = spec in LEARNED_SPECS
    if fix is not None and learned:
        raise LmfixError(f"--fix {fix} applies to given vectors (an embedding file, "
                         f"random-orthogonal or hadamard), not to --embedding {spec}, whose "
                         "tables are all learned; drop --fix")
    parts = [f"--{name} {n}" for name, n in (("learn-top", learn_top), ("delta-rank", delta_rank))
             if n]
    if parts and (learned or fix not in (None, "both")):
        has = f"--embedding {spec}" if learned else f"--fix {fix}"
        raise LmfixError(f"{' and '.join(parts)} train(s) parts of a fixed tied embedding: they "
                         f"need vectors used with --fix both (the default), not {has}")
    if vocab_size is not None and learn_top > vocab_size:
        raise LmfixError(f"--learn-top {learn_top} is more than the {vocab_size:,} words of the "
                         "vocabulary")
    known = {k: n for k, n in (("V", vocab_size), ("d", dim)) if n is not None}
    if known and delta_rank > min(known.values()):
        sizes = ", ".join(f"{k} = {n:,}" for k, n in known.items())
        raise LmfixError(f"--delta-rank {delta_rank} is above min(V, d) ({sizes}): a correction "
                         "A·B of the V × d embedding has no higher rank, and the parameters "
                         "beyond it would be counted without being usable")


def _check_tokenizer(path: Path, built_with: dict | None, corpus_tok: dict | None) -> None:
    """Vectors of one tokenizer's pieces mean nothing to another's, even where strings match."""
    if built_with is None or corpus_tok is None:
        return  # a file from another tool: rows are matched by word and coverage reported
    if not same_tokenizer(built_with, corpus_tok):
        raise LmfixError(f"{path} was built over {describe(built_with)}, but this run uses "
                         f"{describe(corpus_tok)}; build it with the same --tokenizer settings")
