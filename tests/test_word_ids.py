"""lmfix.word_ids.ChunkEncoder: the per-token dict loop done in numpy must give the serial
loop's ids, and give new words their ids in the same order, on any text."""

import random

import numpy as np
import pytest

from lmfix import word_ids
from lmfix.word_ids import KEY_BYTES, ChunkEncoder, _FirstSeen, words_of

# every kind of separator str.split() knows, and words that stress the byte keys: 8, 16 and
# 17 bytes (the key's edges), multi-byte characters, NUL inside a word, the literal <eos>
SPACES = [" ", "  ", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0",
          "\u2028", "\u3000", "\u2009"]
WORDS = ["the", "a", "a\x00", "\x00", "<eos>", "<unk>", "12345678", "123456789",
         "x" * KEY_BYTES, "x" * (KEY_BYTES + 1), "y" * 40, "é", "ée", "ééééééééé", "日本語",
         "naïve", "\ud800", "=", "@-@", "1234567812345678", "12345678123456781"]


def _serial(chunks):
    index = _FirstSeen()
    return [[index[w] for w in words_of(c)] for c in chunks], list(index)


def _random_chunks(seed, n_chunks=4, lines=60):
    rng = random.Random(seed)
    vocab = WORDS + ["".join(rng.choice("abcdéz\x00") for _ in range(rng.randint(1, 20)))
                     for _ in range(50)]
    chunks = []
    for _ in range(n_chunks):
        out = []
        for _ in range(lines):
            k = rng.choice([0, 0, 1, 5, 30])
            out.append(rng.choice(["", " ", "\xa0"]) + "".join(
                rng.choice(vocab) + rng.choice(SPACES) for _ in range(k)) + "\n")
        chunks.append("".join(out))
    return chunks


@pytest.mark.parametrize("seed", range(6))
def test_the_chunk_encoder_gives_the_serial_ids_and_first_seen_order(seed):
    chunks = _random_chunks(seed)
    want, want_words = _serial(chunks)
    encoder = ChunkEncoder()
    got = [encoder.encode(c).tolist() for c in chunks]
    assert got == want
    assert list(encoder.index) == want_words


def test_blank_and_empty_chunks():
    encoder = ChunkEncoder()
    assert encoder.encode("").tolist() == []
    assert encoder.encode(" \t\xa0 ").tolist() == []
    assert encoder.encode("\n\n").tolist() == [0, 0] and list(encoder.index) == ["<eos>"]


def test_a_hash_collision_falls_back_to_the_exact_loop(monkeypatch):
    """Every word given one hash: the check sees different words in one group and the
    chunk is encoded word by word, with the same result."""
    chunks = _random_chunks(7)
    want, want_words = _serial(chunks)
    monkeypatch.setattr(word_ids, "_group_key", lambda lo, hi, n: np.zeros(lo.size, np.uint64))
    encoder = ChunkEncoder()
    assert [encoder.encode(c).tolist() for c in chunks] == want
    assert list(encoder.index) == want_words


def test_words_seen_in_earlier_chunks_and_after_a_fallback_keep_their_ids(monkeypatch):
    """Chunks that repeat earlier words (found in the sorted array, not the dict), one chunk
    encoded word by word in between (its new words reach the array later)."""
    chunks = _random_chunks(8, n_chunks=6)
    want, want_words = _serial(chunks)
    encoder = ChunkEncoder()
    got = []
    for k, c in enumerate(chunks):
        if k == 2:
            with monkeypatch.context() as m:
                m.setattr(word_ids, "_group_key", lambda lo, hi, n: np.zeros(lo.size, np.uint64))
                got.append(encoder.encode(c).tolist())
        else:
            got.append(encoder.encode(c).tolist())
    assert got == want and list(encoder.index) == want_words
    assert encoder._hash.size and np.all(np.diff(encoder._hash.astype(np.float64)) >= 0)


def test_a_hash_shared_by_two_known_words_keeps_them_apart(monkeypatch):
    """Two short words with one 64-bit hash: the array keeps the first, the other is looked
    up in the dict every time, with its own id."""
    def key(lo, hi, n):  # "aa" and "bb" share a hash
        h = lo.copy()
        h[lo == int.from_bytes(b"bb", "little")] = int.from_bytes(b"aa", "little")
        return h
    monkeypatch.setattr(word_ids, "_group_key", key)
    chunks = ["aa x\n", "bb y\n", "bb\n", "x aa\n"]  # one of the two a chunk
    want, _ = _serial(chunks)
    encoder = ChunkEncoder()
    assert [encoder.encode(c).tolist() for c in chunks] == want
    assert encoder._hash.size == 4  # aa, x, <eos>, y: bb is not in the array


def test_windows_of_lines_give_the_whole_chunk_ids(monkeypatch):
    """A chunk is encoded a window of whole lines at a time; a line longer than the window is
    taken whole, and a last line without its newline too."""
    monkeypatch.setattr(word_ids, "WINDOW_BYTES", 64)
    chunks = _random_chunks(9) + ["a " * 100 + "b\n" + "tail without newline"]
    want, want_words = _serial(chunks)
    encoder = ChunkEncoder()
    assert [encoder.encode(c).tolist() for c in chunks] == want
    assert list(encoder.index) == want_words
