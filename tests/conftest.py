"""Shared fixtures: a tiny corpus written by the tests, and the real WikiText-2 if present."""

import os
from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from a second thread, and OpenMP threads that spin-wait on a busy
# 2-core machine can make them many times slower; subprocesses inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

WIKITEXT2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"

TINY_TRAIN = """ = Tiny = \n \n the cat sat on the mat . \n the dog sat on the log . \n""" \
    """ a cat and a dog ran to the mat . \n the <unk> sat . \n"""


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """Corpus ids and SentencePiece models cached by the tests go to a directory of the
    session's, not the user's ~/.cache/lmfix (subprocesses inherit the variable)."""
    if "LMFIX_CACHE" not in os.environ:
        os.environ["LMFIX_CACHE"] = str(tmp_path_factory.mktemp("lmfix-cache"))
    yield


@pytest.fixture
def wikitext2() -> Path:
    if not (WIKITEXT2 / "train.txt").is_file():
        pytest.skip(f"WikiText-2 not found at {WIKITEXT2}")
    return WIKITEXT2


@pytest.fixture
def tiny_corpus_dir(tmp_path) -> Path:
    """A small corpus in the WikiText layout; valid/test hold a word train lacks ("bird")."""
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "train.txt").write_text(TINY_TRAIN * 40)
    (d / "valid.txt").write_text(" the cat sat on the log . \n the bird ran . \n" * 20)
    (d / "test.txt").write_text(" a dog sat on the mat . \n \n" * 20)
    return d


# The fast lane (scripts/test.sh --fast) leaves out what these markers name; CI runs all.
_MODULE_MARKS = {"test_distributed.py": "torchrun", "test_distributed_comm.py": "torchrun",
                 "test_gpu_check.py": "gpu_script", "test_flags_fuzz.py": "fuzz"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (mark := _MODULE_MARKS.get(item.path.name)) is not None:
            item.add_marker(mark)
        if hasattr(getattr(item, "obj", None), "hypothesis"):  # a property test
            item.add_marker("fuzz")
        if "wikitext2" in getattr(item, "fixturenames", ()):
            item.add_marker("slow")
