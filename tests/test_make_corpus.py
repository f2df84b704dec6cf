"""scripts/make_corpus.py (issue 25): a synthetic WikiText-style corpus of an exact vocabulary,
reproducible, with word-to-word structure an i.i.d. Zipf stream lacks."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from pathlib import Path

import pytest

from lmfix.data import load_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_corpus.py"
spec = importlib.util.spec_from_file_location("make_corpus", SCRIPT)
mc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mc)


def test_vocabulary_counts_and_layout(tmp_path):
    out = tmp_path / "c"
    assert mc.main(["--vocab", "800", "--tokens", "40000", "--out", str(out),
                    "--eval-tokens", "3000", "4000"]) == 0
    corpus = load_corpus(str(out))
    assert len(corpus.vocab) == 800  # words, <unk>, "=" and <eos>: the types asked for
    counts = Counter(corpus.train.tolist())
    assert min(counts.values()) >= 3 and len(counts) == 800  # every type in train, 3+ times
    assert corpus.unk_replaced == {"train": 0, "valid": 0, "test": 0}
    lines = (out / "train.txt").read_text().splitlines()
    assert sum(len(l.split()) for l in lines if "=" not in l.split()) > 0
    assert lines[1] == " " and any(l.startswith(" = ") for l in lines)  # blanks, headings
    assert 2900 <= sum(len(l.split()) for l in (out / "valid.txt").read_text().splitlines()) \
        <= 3400


def test_reproducible_by_seed(tmp_path):
    a = mc.make(300, 5000, seed=7, eval_tokens=(500, 500))
    assert a == mc.make(300, 5000, seed=7, eval_tokens=(500, 500))
    assert a["train"] != mc.make(300, 5000, seed=8, eval_tokens=(500, 500))["train"]


def top_pair_pmi(lines: list[str]) -> float:
    """PMI of the most frequent adjacent word pair: structure shows as PMI well above 0."""
    words = [w for l in lines for w in l.split() if w != "="]
    uni, bi = Counter(words), Counter(zip(words, words[1:]))
    (x, y), n = bi.most_common(1)[0]
    N = len(words)
    return math.log(n * N / (uni[x] * uni[y]))


def test_word_to_word_structure_that_iid_text_lacks():
    chain = mc.make(2000, 60000, seed=1, markov=0.6, eval_tokens=(10, 10))["train"]
    iid = mc.make(2000, 60000, seed=1, markov=0.0, eval_tokens=(10, 10))["train"]
    assert top_pair_pmi(chain) > 1.0 > 0.5 > top_pair_pmi(iid)  # measured: 2.04 and 0.06


def test_impossible_sizes_are_one_line(tmp_path, capsys):
    assert mc.main(["--vocab", "1000", "--tokens", "100", "--out", str(tmp_path / "x")]) == 2
    assert "cannot hold" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 4"):
        mc.make(3, 100)
