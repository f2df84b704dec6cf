"""Intrinsic scores (lmfix.embeddings.intrinsic) on tiny made-up vectors: gensim's own test
sets, OOV shares counted by hand, an analogy built to be solved exactly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lmfix.cli import main
from lmfix.embeddings.intrinsic import (
    dataset_path,
    ensure_scores,
    evaluate,
    intrinsic_path,
    keyed_vectors,
)
from lmfix.embeddings.vectors import Embeddings, save_embeddings

# (capital, country): every question built from two of these pairs is exactly solvable below
CAPITALS = [("Athens", "Greece"), ("Baghdad", "Iraq"), ("Bangkok", "Thailand"),
            ("Beijing", "China")]


def first_pairs(name: str, n: int) -> list[tuple[str, str]]:
    lines = [l.split("\t") for l in open(dataset_path(name), encoding="utf8")
             if not l.startswith("#")]
    return [(a, b) for a, b, _ in lines[:n]]


DIM = 64


@pytest.fixture(scope="module")
def tiny():
    """Words of the first similarity pairs (WordSim in lower case, SimLex upper-cased to test
    case-insensitivity), random; and the capitals: countries orthonormal vectors c, capitals
    c + o, o a unit offset orthogonal to them all. gensim's 3CosAdd works on unit vectors,
    and b̂ − â + ĉ then points to the expected country far closer than to any other word."""
    rng = np.random.default_rng(0)
    words = sorted({w for p in first_pairs("wordsim353", 12) for w in p}
                   | {w.upper() for p in first_pairs("simlex999", 12) for w in p})
    words = [w for w in words if w.lower() not in {x.lower() for c in CAPITALS for x in c}]
    vecs = list(rng.standard_normal((len(words), DIM)) / np.sqrt(DIM))
    basis = np.linalg.qr(rng.standard_normal((DIM, len(CAPITALS) + 1)))[0].T
    offset = basis[-1]
    for (capital, country), c in zip(CAPITALS, basis):
        words += [country, capital]
        vecs += [c, c + offset]
    return Embeddings(words, np.asarray(vecs, dtype=np.float32), {})


def answerable(words: list[str]) -> int:
    """Analogy questions whose four words are all known (case-insensitively), by hand."""
    known = {w.upper() for w in words}
    return sum(all(w.upper() in known for w in line.split())
               for line in open(dataset_path("analogies"), encoding="utf8")
               if not line.startswith(":"))


def covered(name: str, words: list[str]) -> tuple[int, int]:
    """(pairs with both words known, case-insensitively; all pairs), counted here by hand."""
    known = {w.upper() for w in words}
    pairs = first_pairs(name, 10_000)
    return sum(a.upper() in known and b.upper() in known for a, b in pairs), len(pairs)


def test_three_scores_and_sane_oov(tiny):
    s = evaluate(tiny)
    for name in ("wordsim353", "simlex999"):
        evaluated, total = covered(name, tiny.words)
        r = s[name]
        assert (r["evaluated"], r["total"]) == (evaluated, total) and evaluated >= 12
        assert r["oov_pct"] == pytest.approx(100 * (total - evaluated) / total)
        assert 0 < r["oov_pct"] < 100 and -1 <= r["spearman"] <= 1
    assert s["wordsim353"]["total"] == 353 and s["simlex999"]["total"] == 999
    a = s["analogies"]
    assert a["total"] == 19544
    # capital-common-countries and capital-world: ordered pairs of the four
    assert a["evaluated"] == answerable(tiny.words) == answerable(
        [w for c in CAPITALS for w in c]) >= 12
    assert a["accuracy"] == 1.0  # every one solved: the capitals' geometry above
    assert a["oov_pct"] == pytest.approx(100 * (19544 - a["evaluated"]) / 19544)
    assert (s["words"], s["dim"], s["frequency_order"]) == (len(tiny), DIM, False)


def test_gensim_agrees_on_the_oov_share(tiny):
    kv = keyed_vectors(tiny)
    _, _, oov = kv.evaluate_word_pairs(dataset_path("wordsim353"))
    assert evaluate(tiny)["wordsim353"]["oov_pct"] == pytest.approx(oov)


def test_no_known_pair_gives_no_score_not_an_error():
    emb = Embeddings(["zzz", "yyy"], np.eye(2, dtype=np.float32), {})
    s = evaluate(emb)
    assert s["wordsim353"]["spearman"] is None and s["wordsim353"]["oov_pct"] == 100.0
    assert s["analogies"]["accuracy"] is None and s["analogies"]["evaluated"] == 0


def test_frequency_order_picks_the_most_frequent_casing():
    emb = Embeddings(["Tiger", "tiger", "cat"], np.eye(3, dtype=np.float32), {})
    assert keyed_vectors(emb).index_to_key == ["Tiger", "tiger", "cat"]
    kv = keyed_vectors(emb, {"tiger": 50, "Tiger": 3, "cat": 10})
    assert kv.index_to_key == ["tiger", "cat", "Tiger"]


def test_scores_are_cached_beside_the_file_and_redone_when_it_changes(tiny, tmp_path):
    path = tmp_path / "v.txt"
    save_embeddings(tiny, path)
    first = ensure_scores(path)
    cached = intrinsic_path(path)
    assert cached == tmp_path / "v.txt.intrinsic.json" and cached.is_file()
    mtime = cached.stat().st_mtime_ns
    assert ensure_scores(path) == first and cached.stat().st_mtime_ns == mtime
    save_embeddings(Embeddings(tiny.words, -tiny.vectors, {}), path)
    os.utime(cached, ns=(mtime, mtime))
    again = ensure_scores(path)
    assert again["file_sha256"] != first["file_sha256"]
    assert json.loads(cached.read_text())["file_sha256"] == again["file_sha256"]


def test_cli_prints_one_table_for_several_files(tiny, tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    save_embeddings(tiny, a)
    save_embeddings(Embeddings(tiny.words[:20], tiny.vectors[:20], {}), b)
    assert main(["evaluate-embeddings", str(a), str(b), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["file", "words", "dim", "WS-353"]
    assert out[1].startswith(str(a)) and out[2].startswith(str(b))
    assert "1.000" in out[1]  # the analogy accuracy column
    assert set(json.loads((tmp_path / "s.json").read_text())) == {str(a), str(b)}
