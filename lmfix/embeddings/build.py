"""Build fixed embeddings for a corpus: one function, four methods, full provenance.

    corpus ⇒ { word2vec | counts ⇒ PPMI ⇒ SVD | random basis } ⇒ Embeddings(words, vectors, meta)

``meta`` records everything needed to trace the vectors back to how they were made: method,
dim, seed, every hyper-parameter (defaults included), the corpus (name, source, sha256 of the
training text, token count), vocabulary size, coverage of the LM vocabulary, build seconds and
library versions.

Example::

    >>> from lmfix.data import load_corpus                                  # doctest: +SKIP
    >>> emb = build_embeddings("pmi", load_corpus("../shared/data/wikitext-2"), 200,
    ...                        {"window": 5, "cds": 0.75}, seed=0)         # doctest: +SKIP
    >>> emb.meta["coverage"]["covered"], emb.meta["build_seconds"]         # doctest: +SKIP
    (33278, 12.7)
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone

import numpy as np

from ..corpus_cache import release_pages
from ..vocab import EOS
from ..errors import LmfixError
from ..memory import check_vectors_fit
from ..provenance import versions
from . import bases, pmi
from .methods import PMIConfig, Word2VecConfig, make_config
from .vectors import Embeddings, coverage, save_embeddings
from .word2vec import (Sentences, default_workers, reads_file, train_word2vec,
                       vocabulary_counts, write_corpus_file)


def build_embeddings(method: str, corpus, dim: int, params: dict | None = None, seed: int = 0,
                     progress: bool = False) -> Embeddings:
    """Build ``method`` embeddings of dimension ``dim`` for ``corpus`` (a :class:`lmfix.data.Corpus`:
    uses its ``name``, ``source``, ``vocab.words``, ``train`` ids and ``train_sha256``).

    word2vec and PMI learn from the training split; the bases only need the vocabulary size.
    Words with no vector (word2vec: absent from the training text; PMI: no positive PPMI
    entry, or a zero row after truncation) are left out rather than given zeros, and
    ``meta["coverage"]`` reports them.
    """
    config = make_config(method, dict(params or {}))
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise LmfixError(f"dim must be a positive integer, got {dim!r}")
    vocab_words = list(corpus.vocab.words)
    check_vectors_fit(method, len(vocab_words), dim)
    ids = corpus.train.numpy()
    started = time.perf_counter()
    if method == "pmi":
        words, vectors = _build_pmi(ids, vocab_words, dim, config, seed, progress)
    elif method == "word2vec":
        workers = default_workers() if config.workers is None else config.workers
        config = Word2VecConfig(**{**asdict(config), "workers": workers})
        words, vectors = _build_word2vec(corpus, dim, config, seed, progress)
    elif method == "random-orthogonal":
        words, vectors = vocab_words, bases.random_orthogonal(len(vocab_words), dim, seed)
    else:
        words, vectors = vocab_words, bases.hadamard(len(vocab_words), dim, seed)
    seconds = time.perf_counter() - started
    if not np.isfinite(vectors).all():  # never write inf/NaN vectors as if they were a result
        raise LmfixError(f"the {method} vectors are not finite (inf or NaN) with the settings "
                         f"{asdict(config)}; use settings nearer the defaults")

    emb = Embeddings(words, vectors, {})
    emb.meta = {
        "method": method,
        "dim": dim,
        "seed": seed,
        "params": asdict(config),
        "corpus": {"name": corpus.name, "source": corpus.source, "sha256": corpus.train_sha256,
                   "train_tokens": int(ids.size)},
        "vocab_size": len(vocab_words),
        "coverage": coverage(emb, vocab_words),
        "build_seconds": round(seconds, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions("numpy", "scipy", "gensim"),
    }
    return emb


def _build_word2vec(corpus, dim: int, config: Word2VecConfig, seed: int,
                    progress: bool) -> tuple[list[str], np.ndarray]:
    ids, words = corpus.train.numpy(), corpus.vocab.words
    eos = corpus.vocab.index[EOS]
    from_file = reads_file(config.workers)
    train = functools.partial(train_word2vec, dim=dim, sg=config.sg, window=config.window,
                              negative=config.negative, sample=config.sample,
                              epochs=config.epochs, workers=config.workers, seed=seed,
                              progress=progress,
                              vocabulary=vocabulary_counts(ids, words, eos, from_file))
    if not from_file:
        return train(Sentences(ids, words, eos))
    with tempfile.TemporaryDirectory(prefix="lmfix-word2vec-") as scratch:
        path = os.path.join(scratch, "train.txt")
        write_corpus_file(ids, words, eos, path)
        release_pages(ids)  # gensim reads the file, not the ids
        return train(None, corpus_file=path)


def _build_pmi(ids: np.ndarray, vocab_words: list[str], dim: int, config: PMIConfig, seed: int,
               progress: bool) -> tuple[list[str], np.ndarray]:
    counts = pmi.cooccurrence(ids, len(vocab_words), window=config.window, dyn=config.dyn,
                              sub=config.sub, seed=seed, progress=progress)
    release_pages(ids)  # counted: the ids are not read again
    matrix = pmi.ppmi(counts, cds=config.cds, neg=config.neg)
    del counts  # the SVD's memory is the PPMI matrix's and its own, not the counts' too
    has_context = np.diff(matrix.indptr) > 0
    if config.w_plus_c:
        has_context |= np.diff(matrix.tocsc().indptr) > 0
    if not has_context.any():  # before the SVD: a zero matrix has no vectors to scale
        raise LmfixError("the PPMI matrix is empty: no word pair has positive PMI (corpus too "
                         f"small, or neg = {config.neg} too large)")
    U, S, Vt = pmi.svd(matrix, dim, seed=seed, progress=progress)
    vectors = pmi.vectors(U, S, Vt, eig=config.eig, w_plus_c=config.w_plus_c)
    # A zero vector is no vector: rows without positive PPMI, and (with dim below the rank) rows
    # orthogonal to the top-dim singular subspace. They are left out and show in the coverage.
    norms = np.linalg.norm(vectors, axis=1)
    has_vector = has_context & (norms > 1e-6 * norms.max())
    return [w for w, keep in zip(vocab_words, has_vector) if keep], vectors[has_vector]


def build_and_save(method: str, corpus, dim: int, out: str | os.PathLike, params: dict | None = None,
                   seed: int = 0, fmt: str | None = None, progress: bool = False) -> Embeddings:
    """Build, record the corpus's tokenizer, save (``out`` and ``out.json``), and save the
    tokenizer beside the file, so the vectors stay usable and checkable without any cache."""
    emb = build_embeddings(method, corpus, dim, params, seed, progress=progress)
    emb.meta["tokenizer"] = corpus.tokenizer.identity()  # pieces only match the same tokenizer
    save_embeddings(emb, out, fmt)
    corpus.tokenizer.save_beside(out)
    return emb
