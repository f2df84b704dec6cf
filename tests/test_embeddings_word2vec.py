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
