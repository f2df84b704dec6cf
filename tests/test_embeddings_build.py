"""build_embeddings (every method, provenance) and the build-embeddings / neighbors commands."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from lmfix.data import load_corpus
from lmfix.embeddings import cli as emb_cli
from lmfix.embeddings.build import build_embeddings
from lmfix.embeddings.methods import METHODS, PMIConfig, Word2VecConfig
from lmfix.embeddings.vectors import align_to_vocab, load_embeddings
from lmfix.errors import LmfixError

WIKITEXT2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


@pytest.fixture
def tiny(tiny_corpus_dir):
    return load_corpus(str(tiny_corpus_dir))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_covers_the_tiny_vocabulary_with_provenance(tiny, method):
    params = {"workers": 1, "epochs": 2} if method == "word2vec" else {}
    emb = build_embeddings(method, tiny, 6, params, seed=3)
    assert emb.dim == 6 and set(emb.words) == set(tiny.vocab.words)
    meta = emb.meta
    json.dumps(meta)  # plain JSON
    assert meta["method"] == method and meta["dim"] == 6 and meta["seed"] == 3
    assert meta["corpus"]["sha256"] == tiny.train_sha256 and meta["corpus"]["name"] == "tiny"
    assert meta["vocab_size"] == len(tiny.vocab)
    assert meta["coverage"]["covered"] == len(tiny.vocab) and meta["coverage"]["missing"] == 0
    assert set(meta["versions"]) >= {"lmfix", "numpy", "scipy", "gensim"}
    assert meta["build_seconds"] >= 0
    matrix, _ = align_to_vocab(emb, tiny.vocab.words)
    assert np.isfinite(matrix).all()


def test_params_are_recorded_with_defaults(tiny):
    emb = build_embeddings("pmi", tiny, 4, {"window": 2, "cds": 1.0}, seed=0)
    assert emb.meta["params"] == {**PMIConfig().__dict__, "window": 2, "cds": 1.0}
    emb = build_embeddings("word2vec", tiny, 4, {"epochs": 1}, seed=0)
    assert emb.meta["params"]["workers"] >= 1  # resolved, not None
    assert set(emb.meta["params"]) == set(Word2VecConfig().__dict__)


def test_unknown_method_or_setting(tiny):
    with pytest.raises(LmfixError, match="unknown embedding method"):
        build_embeddings("glove", tiny, 4, {}, 0)
    with pytest.raises(LmfixError, match="pmi has no setting sg"):
        build_embeddings("pmi", tiny, 4, {"sg": 1}, 0)
    with pytest.raises(LmfixError, match="no setting window"):
        build_embeddings("hadamard", tiny, 4, {"window": 1}, 0)
    with pytest.raises(LmfixError):
        build_embeddings("random-orthogonal", tiny, len(tiny.vocab) + 1, {}, 0)


def test_pmi_words_without_positive_pmi_are_reported_missing_not_zero(tiny):
    emb = build_embeddings("pmi", tiny, 3, {"neg": 3}, seed=0)  # shift log 3 empties some rows
    cov = emb.meta["coverage"]
    assert 0 < cov["missing"] < len(tiny.vocab) and cov["covered"] == len(emb)
    assert (np.linalg.norm(emb.vectors, axis=1) > 0).all()
    with pytest.raises(LmfixError, match="PPMI matrix is empty"):
        build_embeddings("pmi", tiny, 3, {"neg": 100}, seed=0)


def test_word2vec_build_is_reproducible_with_one_worker(tiny):
    a = build_embeddings("word2vec", tiny, 5, {"workers": 1, "epochs": 2, "sg": 1}, seed=1)
    b = build_embeddings("word2vec", tiny, 5, {"workers": 1, "epochs": 2, "sg": 1}, seed=1)
    np.testing.assert_array_equal(a.vectors, b.vectors)


# ------------------------------------------------------------------------------ commands


def parser():
    p = argparse.ArgumentParser(prog="lmfix")
    register_into = p.add_subparsers(dest="cmd", required=True)
    emb_cli.register(register_into)
    return p


def run(argv):
    args = parser().parse_args(argv)
    args.func(args)


def test_every_flag_has_help_text():
    sub = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)][0]
    for name in ("build-embeddings", "neighbors"):
        for action in sub.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} lacks help"


def test_build_and_neighbors_commands(tiny_corpus_dir, tmp_path, capsys):
    out = tmp_path / "emb" / "pmi.bin"
    run(["build-embeddings", "--method", "pmi", "--dim", "5", "--data", str(tiny_corpus_dir),
         "--out", str(out), "--window", "3", "--no-dyn", "--cds", "1", "--quiet"])
    printed = capsys.readouterr().out
    assert "coverage:" in printed and "100.00%" in printed and " s" in printed
    emb = load_embeddings(out)
    assert emb.meta["params"]["window"] == 3 and emb.meta["params"]["dyn"] is False
    assert emb.meta["file"]["format"] == "binary"

    run(["neighbors", str(out), "cat", "dog", "-k", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cat:" and lines[4] == "dog:" and len(lines) == 8
    with pytest.raises(LmfixError, match="zebra"):
        run(["neighbors", str(out), "cat", "zebra"])


def test_build_command_text_format_and_word2vec_flags(tiny_corpus_dir, tmp_path):
    out = tmp_path / "w2v.bin"
    run(["build-embeddings", "--method", "word2vec", "--dim", "4", "--data", str(tiny_corpus_dir),
         "--out", str(out), "--format", "text", "--sg", "1", "--epochs", "1", "--workers", "1",
         "--quiet"])
    assert out.read_bytes()[:1].isdigit() and b"\x00" not in out.read_bytes()
    meta = load_embeddings(out, fmt="text").meta
    assert meta["params"]["sg"] == 1 and meta["params"]["epochs"] == 1


def test_flags_of_another_method_are_refused_before_building(tiny_corpus_dir, tmp_path):
    with pytest.raises(LmfixError, match="--cds .*--method word2vec"):
        run(["build-embeddings", "--method", "word2vec", "--dim", "4", "--data",
             str(tiny_corpus_dir), "--out", str(tmp_path / "x.txt"), "--cds", "0.5"])
    with pytest.raises(LmfixError, match="--sg"):
        run(["build-embeddings", "--method", "hadamard", "--dim", "4", "--data",
             str(tiny_corpus_dir), "--out", str(tmp_path / "x.txt"), "--sg", "1"])
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("flag", ["--cds=1e300", "--eig=1e300", "--eig=-1e300"])
def test_extreme_pmi_settings_end_in_one_line_and_write_nothing(tiny_corpus_dir, tmp_path,
                                                                capsys, flag):
    from lmfix.cli import main

    out = tmp_path / "emb" / "p.bin"
    out.parent.mkdir()
    assert main(["build-embeddings", "--method", "pmi", "--dim", "4", "--data",
                 str(tiny_corpus_dir), "--out", str(out), "--quiet", flag]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("lmfix: error: ") and flag[2:5] in err[0], err
    assert list(out.parent.iterdir()) == []


def test_non_finite_vectors_are_never_written(tiny, monkeypatch):
    """The last guard for any method: NaN/inf vectors are an error, not a result."""
    from lmfix.embeddings import bases

    monkeypatch.setattr(bases, "hadamard", lambda V, d, seed: np.full((V, d), np.nan))
    with pytest.raises(LmfixError, match="hadamard vectors are not finite"):
        build_embeddings("hadamard", tiny, 4)


def test_main_cli_reports_user_errors_in_one_line(tiny_corpus_dir, tmp_path, capsys):
    from lmfix.cli import main

    out = tmp_path / "h.txt"
    assert main(["build-embeddings", "--method", "hadamard", "--dim", "8", "--data",
                 str(tiny_corpus_dir), "--out", str(out), "--quiet"]) == 0
    assert main(["neighbors", str(out), "nosuchword"]) != 0
    err = capsys.readouterr().err
    assert "nosuchword" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ WikiText-2


@pytest.fixture(scope="module")
def wikitext2():
    if not (WIKITEXT2 / "train.txt").is_file():
        pytest.skip(f"WikiText-2 not found at {WIKITEXT2}")
    return load_corpus(str(WIKITEXT2))


def test_wikitext2_pmi_and_bases_cover_the_whole_vocabulary(wikitext2):
    V = len(wikitext2.vocab)
    assert V == 33278
    emb = build_embeddings("pmi", wikitext2, 8, {"window": 2}, seed=0)
    assert emb.meta["coverage"]["covered"] == V and np.isfinite(emb.vectors).all()
    had = build_embeddings("hadamard", wikitext2, 64, {}, seed=0)
    assert len(np.unique(had.vectors, axis=0)) == V


def test_cli_names_the_methods_without_loading_the_builders():
    """The CLI imports the methods' one list (lmfix.embeddings.methods), not the builders
    (scipy, gensim), at start-up."""
    import subprocess
    import sys
    code = ("import sys, lmfix.cli; from lmfix.embeddings import cli, methods; "
            "assert cli.METHODS is methods.METHODS; "
            "print(sorted(m for m in ('scipy', 'gensim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
