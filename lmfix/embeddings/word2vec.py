"""word2vec (CBOW or skip-gram with negative sampling) via gensim, over the LM's sentences.

The sentences are the corpus lines with their ``<eos>`` kept, and ``min_count=1``, so the
word2vec vocabulary is exactly the set of words in the training text (for WikiText-2: the whole
33,278-word LM vocabulary, ``<eos>`` and ``<unk>`` included).

Example::

    >>> from lmfix.embeddings.word2vec import train_word2vec
    >>> sentences = [["the", "cat", "sat", "<eos>"], ["the", "dog", "sat", "<eos>"]] * 20
    >>> words, vectors = train_word2vec(sentences, dim=8, epochs=2, workers=1, seed=0)
    >>> sorted(words), vectors.shape
    (['<eos>', 'cat', 'dog', 'sat', 'the'], (5, 8))
"""

from __future__ import annotations

import os

import numpy as np
from tqdm.auto import tqdm

from ..errors import LmfixError


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def train_word2vec(
    sentences: list[list[str]],
    dim: int,
    *,
    sg: int = 0,
    window: int = 5,
    negative: int = 5,
    sample: float = 1e-3,
    epochs: int = 5,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Train gensim ``Word2Vec`` and return ``(words, vectors)`` (float32, frequency order).

    ``sg`` 0 = CBOW, 1 = skip-gram; ``negative`` negative samples; ``sample`` the
    down-sampling threshold for frequent words; ``workers`` threads (default
    min(4, CPUs)). Runs are reproducible only with ``workers=1`` (thread scheduling changes
    the order of updates otherwise) and a fixed ``seed``; gensim 4 seeds its initial vectors
    from ``seed`` alone, so this holds across processes too.
    """
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    workers = default_workers() if workers is None else workers
    for name, value, low in (("dim", dim, 1), ("window", window, 1), ("epochs", epochs, 1),
                             ("workers", workers, 1), ("negative", negative, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise LmfixError(f"word2vec {name} must be an integer ≥ {low}, got {value!r}")
    if sg not in (0, 1):
        raise LmfixError(f"word2vec sg must be 0 (CBOW) or 1 (skip-gram), got {sg!r}")
    if not sample >= 0:
        raise LmfixError(f"word2vec sample must be ≥ 0, got {sample}")
    if not any(sentences):
        raise LmfixError("word2vec needs at least one non-empty sentence")

    class _EpochBar(CallbackAny2Vec):
        def __init__(self, bar):
            self.bar = bar

        def on_epoch_end(self, model):
            self.bar.update(1)

    model = Word2Vec(vector_size=dim, window=window, min_count=1, sg=sg, negative=negative,
                     hs=0, sample=sample, workers=workers, seed=seed)
    model.build_vocab(sentences)
    with tqdm(total=epochs, desc=f"word2vec ({'skip-gram' if sg else 'CBOW'})", unit="epoch",
              disable=not progress, leave=False) as bar:
        model.train(sentences, total_examples=model.corpus_count, epochs=epochs,
                    callbacks=[_EpochBar(bar)])
    return list(model.wv.index_to_key), np.ascontiguousarray(model.wv.vectors, dtype=np.float32)
