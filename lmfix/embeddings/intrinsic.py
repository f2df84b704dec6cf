"""Intrinsic quality of word vectors: word similarity and analogies, scored by gensim.

    Embeddings ⇒ KeyedVectors (rows in frequency order)
        ⇒ evaluate_word_pairs     on WordSim-353, SimLex-999   ⇒ Spearman ρ, OOV %
        ⇒ evaluate_word_analogies on the Google analogies      ⇒ accuracy, OOV %

The test sets are the copies gensim ships (``gensim.test.utils.datapath``): ``wordsim353.tsv``
(353 pairs), ``simlex999.txt`` (999 pairs) and ``questions-words.txt`` (19,544 analogy
questions, Mikolov et al. 2013). Nothing is downloaded. The scoring is gensim's own
(``KeyedVectors.evaluate_word_pairs`` / ``evaluate_word_analogies``, 3CosAdd), so the numbers
are comparable with what gensim users report.

Casing. WikiText-2 keeps case ("The" and "the" are two words); the similarity sets are lower
case and the analogies capitalize names ("Athens Greece"). gensim's ``case_insensitive=True``
(its default, kept) compares upper-cased words and, for a word with several casings, uses the
first one in the KeyedVectors' order. Rows are therefore put in training-frequency order when
counts are given (``lmfix run`` and ``evaluate-embeddings --data`` give them), so each word is
looked up in its most frequent casing ("the", not "The"; "Paris", not "paris"); without counts
the file's order is kept (word2vec files are already sorted by frequency; PMI files follow the
vocabulary's order of first appearance).

Out-of-vocabulary. gensim skips pairs and questions with a word the vectors lack; ``oov_pct``
is the share skipped, and ``evaluated`` how many were scored. On a 33k-word vocabulary many
are skipped, so a score is over the covered part of a test set only: compare files on the same
vocabulary.

Example::

    >>> from lmfix.embeddings.vectors import load_embeddings          # doctest: +SKIP
    >>> scores = evaluate(load_embeddings("emb/w2v-d64.bin"))           # doctest: +SKIP
    >>> scores["wordsim353"]["spearman"], scores["analogies"]["accuracy"]  # doctest: +SKIP
    (0.52, 0.11)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import LmfixError
from ..fsutil import read_json, write_json
from .vectors import Embeddings, file_sha256, load_embeddings

# name -> (gensim test-data file, kind)
TEST_SETS = {"wordsim353": ("wordsim353.tsv", "pairs"), "simlex999": ("simlex999.txt", "pairs"),
             "analogies": ("questions-words.txt", "analogies")}
LABELS = {"wordsim353": "WordSim-353 ρ", "simlex999": "SimLex-999 ρ",
          "analogies": "analogy acc"}
_SUFFIX = ".intrinsic.json"


def dataset_path(name: str) -> str:
    """The path of gensim's copy of test set ``name`` (a key of TEST_SETS)."""
    from gensim.test.utils import datapath
    path = datapath(TEST_SETS[name][0])
    if not os.path.isfile(path):
        raise LmfixError(f"gensim's test set {TEST_SETS[name][0]} is missing from this "
                         f"installation (looked for {path})")
    return path


def keyed_vectors(emb: Embeddings, counts: dict[str, int] | None = None):
    """``emb`` as gensim KeyedVectors; rows by descending ``counts`` when given (stable, so
    words of equal count keep the file's order), else the file's order."""
    from gensim.models import KeyedVectors
    order = np.arange(len(emb))
    if counts is not None:
        freq = np.fromiter((counts.get(w, 0) for w in emb.words), dtype=np.int64, count=len(emb))
        order = np.argsort(-freq, kind="stable")
    kv = KeyedVectors(vector_size=emb.dim, count=0, dtype=np.float32)
    kv.add_vectors([emb.words[i] for i in order], emb.vectors[order])
    return kv


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None  # a constant similarity column gives NaN


def _pairs(kv, path: str) -> dict:
    # gensim returns ρ and the OOV share but not how many pairs it scored: count them here,
    # reading the file as it does (tab-separated "word word score", "#" comments skipped).
    known = {w.upper() for w in kv.index_to_key}
    total = evaluated = 0
    with open(path, encoding="utf8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if line.startswith("#") or len(fields) != 3:
                continue
            total += 1
            evaluated += fields[0].upper() in known and fields[1].upper() in known
    if evaluated < 3:  # gensim raises ValueError below 2 pairs; 2 ranks say nothing either
        return {"spearman": None, "pearson": None,
                "oov_pct": 100.0 * (total - evaluated) / total if total else 100.0,
                "evaluated": evaluated, "total": total}
    pearson, spearman, _ = kv.evaluate_word_pairs(path, case_insensitive=True)
    return {"spearman": _finite(spearman[0]), "pearson": _finite(pearson[0]),
            "oov_pct": 100.0 * (total - evaluated) / total, "evaluated": evaluated,
            "total": total}


def _analogies(kv, path: str) -> dict:
    total = sum(1 for line in open(path, encoding="utf8")
                if line.strip() and not line.startswith(":"))
    _, sections = kv.evaluate_word_analogies(path, case_insensitive=True)
    overall = sections[-1]  # gensim appends "Total accuracy"
    correct, incorrect = len(overall["correct"]), len(overall["incorrect"])
    evaluated = correct + incorrect
    return {"accuracy": correct / evaluated if evaluated else None,
            "oov_pct": 100.0 * (total - evaluated) / total if total else 100.0,
            "evaluated": evaluated, "total": total}


def evaluate(emb: Embeddings, counts: dict[str, int] | None = None) -> dict:
    """Scores of ``emb`` on every test set: ``{"wordsim353": {spearman, pearson, oov_pct,
    evaluated, total}, "simlex999": {...}, "analogies": {accuracy, oov_pct, evaluated,
    total}, "words", "dim", "frequency_order"}``. Scores a test set cannot give are None."""
    kv = keyed_vectors(emb, counts)
    out = {}
    for name, (_, kind) in TEST_SETS.items():
        path = dataset_path(name)
        out[name] = _pairs(kv, path) if kind == "pairs" else _analogies(kv, path)
    out.update({"words": len(emb), "dim": emb.dim, "frequency_order": counts is not None,
                "case_insensitive": True})
    return out


def intrinsic_path(embedding_path: str | os.PathLike) -> Path:
    """Where ``lmfix run`` keeps an embedding file's scores: FILE.intrinsic.json beside it."""
    p = Path(embedding_path)
    return p.with_name(p.name + _SUFFIX)


def ensure_scores(embedding_path: str | os.PathLike,
                  counts: dict[str, int] | None = None) -> dict:
    """The scores of an embedding file, from FILE.intrinsic.json when it was made from this
    very file (same sha256), else computed and written there."""
    path = Path(embedding_path)
    cached = intrinsic_path(path)
    digest = file_sha256(path)
    if cached.is_file():
        old = read_json(cached)
        if isinstance(old, dict) and old.get("file_sha256") == digest \
                and old.get("frequency_order") == (counts is not None):
            return old
    scores = {"file": path.name, "file_sha256": digest,
              **evaluate(load_embeddings(path), counts)}
    write_json(cached, scores)
    return scores


def read_scores(embedding_path: str | os.PathLike) -> dict | None:
    """FILE.intrinsic.json's scores if present and readable, else None (for the report)."""
    cached = intrinsic_path(embedding_path)
    try:
        scores = read_json(cached) if cached.is_file() else None
    except (LmfixError, OSError, ValueError):
        return None
    return scores if isinstance(scores, dict) else None


def headline(scores: dict) -> dict[str, float | None]:
    """The three numbers a table shows: WordSim-353 ρ, SimLex-999 ρ, analogy accuracy."""
    return {"wordsim353": (scores.get("wordsim353") or {}).get("spearman"),
            "simlex999": (scores.get("simlex999") or {}).get("spearman"),
            "analogies": (scores.get("analogies") or {}).get("accuracy")}


def format_table(results: list[tuple[str, dict]]) -> str:
    """A plain-text table, one row per file: ρ and OOV % per similarity set, accuracy and
    OOV % for analogies."""
    head = ["file", "words", "dim", "WS-353 ρ", "OOV %", "SimLex ρ", "OOV %", "analogy acc",
            "OOV %"]
    rows = []
    for name, s in results:
        ws, sl, an = s["wordsim353"], s["simlex999"], s["analogies"]
        rows.append([name, f"{s['words']:,}", str(s["dim"]), _f(ws["spearman"], 3),
                     _f(ws["oov_pct"], 1), _f(sl["spearman"], 3), _f(sl["oov_pct"], 1),
                     _f(an["accuracy"], 3), _f(an["oov_pct"], 1)])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head)] + [line(r) for r in rows])


def _f(x, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def word_counts(corpus) -> dict[str, int]:
    """Training-split frequency of every vocabulary word of a :class:`lmfix.data.Corpus`."""
    import torch
    counts = torch.bincount(corpus.train.flatten().long(), minlength=len(corpus.vocab))
    return dict(zip(corpus.vocab.words, counts.tolist()))


def evaluate_command(paths: list[str], data: str | None = None, json_out: str | None = None,
                     tokenizer=None) -> list[tuple[str, dict]]:
    """``lmfix evaluate-embeddings``: score every file, print one table (and write JSON)."""
    counts = None
    if data is not None:
        from ..data import load_corpus
        counts = word_counts(load_corpus(data, tokenizer))
    results = []
    for p in paths:
        results.append((str(p), evaluate(load_embeddings(p), counts)))
    print(format_table(results))
    order = "training frequency" if counts is not None else "the files' own"
    print(f"(gensim's test sets, case-insensitive, each word in its first casing in {order} "
          "order; OOV % = share of pairs/questions skipped for an unknown word)")
    if json_out:
        write_json(Path(json_out), {name: scores for name, scores in results})
        print(f"wrote {json_out}")
    return results
