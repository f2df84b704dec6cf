"""word2vec through gensim: vocabulary, reproducibility, parameter checks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmfix.embeddings.word2vec import train_word2vec
from lmfix.errors import LmfixError

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [s.split() + ["<eos>"] for s in [
    "the cat sat on the mat", "the dog sat on the log", "a cat and a dog ran to the mat",
    "the <unk> sat", "= Tiny =", "",
]] * 30


def test_vocabulary_is_every_word_including_eos():
    words, vectors = train_word2vec(SENTENCES, dim=8, epochs=1, workers=1, seed=0)
    assert set(words) == {w for s in SENTENCES for w in s}
    assert len(words) == len(set(words)) == vectors.shape[0]
    assert vectors.shape[1] == 8 and vectors.dtype == np.float32
    assert words[0] in ("the", "<eos>")  # frequency order


@pytest.mark.parametrize("sg", [0, 1])
def test_reproducible_with_one_worker_and_a_seed(sg):
    a = train_word2vec(SENTENCES, dim=10, sg=sg, epochs=3, workers=1, seed=5)
    b = train_word2vec(SENTENCES, dim=10, sg=sg, epochs=3, workers=1, seed=5)
    c = train_word2vec(SENTENCES, dim=10, sg=sg, epochs=3, workers=1, seed=6)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[1], c[1])


def test_reproducible_across_processes_with_different_hash_seeds():
    # gensim documents PYTHONHASHSEED as needed; gensim 4 seeds vectors from the seed alone.
    code = ("from lmfix.embeddings.word2vec import train_word2vec\n"
            f"w, v = train_word2vec({SENTENCES[:6]!r} * 10, dim=6, epochs=2, workers=1, seed=1)\n"
            "print(w, v.tobytes().hex())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout
            for h in (1, 2)}
    assert len(outs) == 1


def test_invalid_settings_raise_lmfix_error():
    for kwargs in [{"sg": 2}, {"window": 0}, {"epochs": 0}, {"negative": 0}, {"workers": 0},
                   {"sample": -1.0}, {"dim": 0}]:
        args = {"dim": 4, **kwargs}
        with pytest.raises(LmfixError):
            train_word2vec(SENTENCES, **{k: v for k, v in args.items() if k != "dim"}, dim=args["dim"])
    with pytest.raises(LmfixError):
        train_word2vec([[], []], dim=4)


# Issue 25: at WikiText-103 size the sentences are never held as lists of words: one worker
# streams them from the ids (the iterable mode, so reproducible runs keep their vectors), more
# read gensim's corpus_file.

def _ids():
    from lmfix.vocab import Vocab
    vocab = Vocab(list(dict.fromkeys(w for s in SENTENCES for w in s)))
    ids = np.array([vocab.index[w] for s in SENTENCES for w in s], dtype=np.int32)
    return ids, vocab


def test_streamed_sentences_are_the_lines_with_their_eos(monkeypatch):
    from lmfix.data import sentences
    from lmfix.embeddings.word2vec import Sentences
    import torch
    ids, vocab = _ids()
    monkeypatch.setattr(Sentences, "BLOCK", 7)  # sentences cut across blocks
    stream = Sentences(ids, vocab.words, vocab.index["<eos>"])
    assert list(stream) == list(stream) == sentences(torch.from_numpy(ids), vocab)
    cut = ids[:-3]  # a last line without its <eos>
    tail = list(Sentences(cut, vocab.words, vocab.index["<eos>"]))
    assert tail == sentences(torch.from_numpy(cut), vocab) and tail[-1][-1] != "<eos>"


def test_streamed_sentences_train_as_the_list_did():
    from lmfix.embeddings.word2vec import Sentences
    ids, vocab = _ids()
    a = train_word2vec(SENTENCES, dim=10, epochs=2, workers=1, seed=3)
    b = train_word2vec(Sentences(ids, vocab.words, vocab.index["<eos>"]), dim=10, epochs=2,
                       workers=1, seed=3)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_corpus_file_holds_the_sentences_and_trains(tmp_path, monkeypatch):
    from lmfix.embeddings.word2vec import Sentences, write_corpus_file
    ids, vocab = _ids()
    monkeypatch.setattr(Sentences, "BLOCK", 5)
    path = tmp_path / "train.txt"
    write_corpus_file(ids, vocab.words, vocab.index["<eos>"], str(path))
    lines = path.read_text().split("\n")
    assert lines[-1] == "" and [t.split() for t in lines[:-1]] == SENTENCES
    words, vectors = train_word2vec(None, dim=8, epochs=1, workers=2, seed=0,
                                    corpus_file=str(path))
    assert set(words) == set(vocab.words) and vectors.shape == (len(vocab.words), 8)
    one = [train_word2vec(None, dim=8, epochs=2, workers=1, seed=4, corpus_file=str(path))[1]
           for _ in range(2)]
    np.testing.assert_array_equal(*one)  # corpus_file with one worker is reproducible too


def test_several_workers_read_a_corpus_file_one_streams(tiny_corpus_dir, monkeypatch):
    from lmfix.data import load_corpus
    from lmfix.embeddings import build, word2vec
    seen = []
    real = word2vec.train_word2vec
    monkeypatch.setattr(build, "train_word2vec", lambda sentences, **k: seen.append(
        (type(sentences).__name__, bool(k.get("corpus_file")))) or real(sentences, **k))
    corpus = load_corpus(str(tiny_corpus_dir))
    for workers in (1, 2):
        build.build_embeddings("word2vec", corpus, 8, {"workers": workers, "epochs": 1})
    assert seen == [("Sentences", False), ("NoneType", True)]


def test_corpus_file_equals_the_sentences_joined_for_any_block_and_unicode(tmp_path,
                                                                          monkeypatch):
    from lmfix.embeddings import word2vec
    words = ["<eos>", "naïve", "日本", "a", "<unk>"]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(words), 1000)
    for block, tail in ((7, 0), (1 << 20, 0), (3, 3)):  # ends on <eos>, and on a word
        monkeypatch.setattr(word2vec, "_WRITE_BLOCK", block)
        ids[-1] = tail
        path = tmp_path / f"c{block}.txt"
        word2vec.write_corpus_file(ids, words, 0, str(path))
        want = "".join(words[i] + ("\n" if i == 0 else " ") for i in ids)
        assert path.read_text(encoding="utf-8") == want + ("" if tail == 0 else "\n")


# The vocabulary from the ids (np.bincount) instead of gensim's Python pass over every token:
# the same model, bit for bit, or gensim counts for itself.

def _first_appearance_ids(rng, n_words, size, long_line=0):
    """A stream renumbered in order of first appearance (as lmfix.vocab numbers words), word 0
    the <eos>, with ties in the counts and, if asked, one line longer than gensim's 10,000."""
    raw = rng.zipf(1.3, size) % n_words + 1
    raw[rng.random(size) < 0.1] = 0
    if long_line:
        raw[100: 100 + long_line] = rng.integers(1, n_words, long_line)
    order = {}
    ids = np.array([order.setdefault(w, len(order)) for w in raw.tolist()], dtype=np.int32)
    words = [None] * len(order)
    for w, i in order.items():
        words[i] = "<eos>" if w == 0 else f"w{w}"
    return ids, words, order[0]


@pytest.mark.parametrize("from_file", [False, True])
def test_vocabulary_from_the_ids_trains_the_same_model_as_gensims_count(tmp_path, monkeypatch,
                                                                        from_file):
    from lmfix.embeddings import word2vec
    monkeypatch.setattr(word2vec, "_WRITE_BLOCK", 997)  # counted across blocks
    rng = np.random.default_rng(0)
    ids, words, eos = _first_appearance_ids(rng, 300, 40_000, long_line=25_000)
    vocabulary = word2vec.vocabulary_counts(ids, words, eos, from_file)
    assert vocabulary is not None
    if from_file:
        path = str(tmp_path / "train.txt")
        word2vec.write_corpus_file(ids, words, eos, path)
        source = dict(sentences=None, corpus_file=path)
    else:
        source = dict(sentences=word2vec.Sentences(ids, words, eos))
    from gensim.models import Word2Vec
    scanned = Word2Vec(min_count=1)
    scanned.build_vocab(**{"corpus_file": path} if from_file else
                        {"corpus_iterable": source["sentences"]})
    counts, sentences = vocabulary
    assert sentences == scanned.corpus_count  # the long line counts as 3 pieces in a file
    assert sum(counts.values()) == scanned.corpus_total_words == ids.size
    runs = [word2vec.train_word2vec(**source, dim=8, epochs=2, workers=1, seed=2, vocabulary=v)
            for v in (None, vocabulary)]
    assert runs[0][0] == runs[1][0]  # the same words in the same order, ties included
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_vocabulary_from_the_ids_is_refused_where_gensim_would_count_otherwise():
    from lmfix.embeddings.word2vec import vocabulary_counts
    ids, words, eos = _first_appearance_ids(np.random.default_rng(1), 50, 2_000)
    assert vocabulary_counts(ids, words, eos, True) is not None
    swapped = np.where(ids == 1, 2, np.where(ids == 2, 1, ids))  # 2 appears before 1
    assert vocabulary_counts(swapped, words, eos, False) is None
    spaced = list(words)
    spaced[3] = "two words"  # a file's reader would split it
    assert vocabulary_counts(ids, spaced, eos, True) is None
    assert vocabulary_counts(ids, spaced, eos, False) is not None  # a stream keeps it whole
    assert vocabulary_counts(ids[:0], words, eos, False) is None
