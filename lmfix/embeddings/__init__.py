"""Fixed word embeddings: build them, store them, line them up with an LM vocabulary.

    corpus ⇒ { word2vec.py | pmi.py: counts ⇒ PPMI ⇒ SVD | bases.py } ⇒ build.py
           ⇒ vectors.Embeddings(words, vectors, meta) ⇒ save/load (word2vec text/binary,
             GloVe, fastText .vec, .npy) ⇒ align_to_vocab ⇒ V×d matrix for the model

``cli.py`` adds the ``build-embeddings`` and ``neighbors`` commands to ``lmfix``.
"""

from .vectors import (
    Embeddings,
    align_to_vocab,
    coverage,
    load_embeddings,
    nearest_neighbors,
    save_embeddings,
)

__all__ = ["Embeddings", "align_to_vocab", "coverage", "load_embeddings", "nearest_neighbors",
           "save_embeddings"]
