"""word2vec (CBOW or skip-gram with negative sampling) via gensim, over the LM's sentences.

The sentences are the corpus lines with their ``<eos>`` kept, and ``min_count=1``, so the
word2vec vocabulary is exactly the set of words in the training text (for WikiText-2: the whole
33,278-word LM vocabulary, ``<eos>`` and ``<unk>`` included).

How gensim reads them, one decision (:func:`reads_file`): with several workers, from a file
(``corpus_file``, one sentence a line), which each worker thread reads on its own part of;
gensim's iterable mode feeds all workers from one Python thread, which holds them near one
core's speed. With one worker (the reproducible runs, such as ``lmfix run``'s builds) from a
stream of the sentences (:class:`Sentences`, made from the ids as gensim asks, never held
whole), which is the iterable mode lmfix always used, so those vectors are unchanged.

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


def reads_file(workers: int) -> bool:
    """Whether training reads a ``corpus_file`` (several workers) or a sentence stream."""
    return workers > 1


class Sentences:
    """The id stream's sentences (cut after each <eos>, which each keeps) as lists of words,
    made block by block each time gensim iterates: a restartable iterable of bounded memory,
    the same sentences as :func:`lmfix.data.sentences`."""

    BLOCK = 1 << 22

    def __init__(self, ids: np.ndarray, words: list[str], eos: int):
        self.ids, self.words, self.eos = ids, np.array(words, dtype=object), eos

    def __iter__(self):
        carry: list[str] = []
        for start in range(0, self.ids.size, self.BLOCK):
            block = np.asarray(self.ids[start: start + self.BLOCK])
            prev = 0
            for cut in (np.flatnonzero(block == self.eos) + 1).tolist():
                yield carry + self.words[block[prev:cut]].tolist()
                carry, prev = [], cut
            carry += self.words[block[prev:]].tolist()
        if carry:
            yield carry


def write_corpus_file(ids: np.ndarray, words: list[str], eos: int, path: str) -> None:
    """The sentences in gensim's ``corpus_file`` format (LineSentence): a line each, words
    separated by spaces; each line ends with its <eos>.

    Written as bytes gathered by numpy from one table of the words' UTF-8 (each with its
    separator), not by joining Python strings: at WikiText-103's 106M tokens lmfix's build
    went from 292 s to 252 s with this, against 252 s and 238 s for gensim's training alone
    (docs/scale.md)."""
    encoded = [(w + " ").encode("utf-8") for w in words]
    encoded[eos] = (words[eos] + "\n").encode("utf-8")
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    table = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    with open(path, "wb") as f:
        for first in range(0, ids.size, _WRITE_BLOCK):
            block = np.asarray(ids[first: first + _WRITE_BLOCK])
            size = lengths[block]
            ends = np.cumsum(size)
            # byte j of the block's text is table[start of its word + (j − where it begins)]
            where = np.repeat(starts[block] - (ends - size), size) + np.arange(ends[-1])
            f.write(table[where].tobytes())
        if ids.size and ids[-1] != eos:
            f.write(b"\n")


_WRITE_BLOCK = 1 << 20  # tokens per gather: ~8 MB of text, a 64 MB index


def vocabulary_counts(ids: np.ndarray, words: list[str], eos: int,
                      reads_file: bool) -> tuple[dict[str, int], int] | None:
    """What gensim's ``build_vocab`` would count in its own pass over the sentences, taken
    from the ids instead: each word's count, in order of first appearance (the order gensim's
    dict gets them in, which settles ties in its frequency sort and so which word gets which
    initial vector), and the number of sentences (in a corpus file, its lines cut into pieces
    of up to 10,000 words, as gensim's LineSentence reads them). That pass is a Python loop
    over every token: 59 s of gensim's 257 s for one epoch at WikiText-103 size
    (docs/scale.md).

    None where the ids cannot give gensim's answer: ids not numbered in order of first
    appearance (lmfix's vocabulary is, :mod:`lmfix.vocab`; a subword one is not), or, for a
    file, a word that whitespace would split. Then gensim counts for itself."""
    from gensim.models.word2vec import MAX_WORDS_IN_BATCH

    if ids.size == 0:
        return None
    counts = np.zeros(len(words), dtype=np.int64)
    eos_at, seen = [], -1
    for start in range(0, ids.size, _WRITE_BLOCK):
        block = np.asarray(ids[start: start + _WRITE_BLOCK])
        # first appearance in id order ⇔ a word never seen before is always the next id
        highest = np.maximum(np.maximum.accumulate(block), seen)
        if block[0] > seen + 1 or np.any(block[1:] > highest[:-1] + 1):
            return None
        seen = int(highest[-1])
        counts += np.bincount(block, minlength=len(words))
        eos_at.append(np.flatnonzero(block == eos) + start)
    if reads_file and any(w.split() != [w] for w in words[: seen + 1]):
        return None
    ends = np.concatenate(eos_at + ([np.array([ids.size - 1])] if ids[-1] != eos else []))
    lengths = np.diff(ends, prepend=-1)
    sentences = int((-(-lengths // MAX_WORDS_IN_BATCH)).sum()) if reads_file else lengths.size
    return dict(zip(words[: seen + 1], counts[: seen + 1].tolist())), sentences


def train_word2vec(
    sentences,
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
    corpus_file: str | None = None,
    vocabulary: tuple[dict[str, int], int] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Train gensim ``Word2Vec`` and return ``(words, vectors)`` (float32, frequency order).

    ``sg`` 0 = CBOW, 1 = skip-gram; ``negative`` negative samples; ``sample`` the
    down-sampling threshold for frequent words; ``workers`` threads (default
    min(4, CPUs)); ``sentences`` an iterable of word lists, or None with ``corpus_file``
    (a file in gensim's LineSentence format); ``vocabulary`` what :func:`vocabulary_counts`
    returns for them, which spares gensim its counting pass (the same vocabulary). Runs are
    reproducible only with ``workers=1`` (thread scheduling changes the order of updates
    otherwise) and a fixed ``seed``; gensim 4 seeds its initial vectors
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
    if corpus_file is None and not any(sentences):
        raise LmfixError("word2vec needs at least one non-empty sentence")

    class _EpochBar(CallbackAny2Vec):
        def __init__(self, bar):
            self.bar = bar

        def on_epoch_end(self, model):
            self.bar.update(1)

    model = Word2Vec(vector_size=dim, window=window, min_count=1, sg=sg, negative=negative,
                     hs=0, sample=sample, workers=workers, seed=seed)
    source = {"corpus_file": corpus_file} if corpus_file else {"corpus_iterable": sentences}
    if vocabulary is None:
        model.build_vocab(**source)
    else:
        word_counts, sentence_count = vocabulary
        model.build_vocab_from_freq(word_counts, corpus_count=sentence_count)
        model.corpus_total_words = sum(word_counts.values())  # build_vocab sets it, this not
    # gensim decays the learning rate by the examples (sentences) done when given their
    # number, as lmfix's iterable mode always has; corpus_file mode counts words
    total = {"total_words": model.corpus_total_words} if corpus_file else \
        {"total_examples": model.corpus_count}
    if not model.wv.index_to_key:
        raise LmfixError("word2vec needs at least one non-empty sentence")
    with tqdm(total=epochs, desc=f"word2vec ({'skip-gram' if sg else 'CBOW'})", unit="epoch",
              disable=not progress, leave=False) as bar:
        model.train(**source, **total, epochs=epochs, callbacks=[_EpochBar(bar)])
    return list(model.wv.index_to_key), np.ascontiguousarray(model.wv.vectors, dtype=np.float32)
