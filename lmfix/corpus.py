"""What a corpus is, before and after tokenization: a leaf of the data layer, so reading
(:mod:`lmfix.data`) and the id cache (:mod:`lmfix.corpus_cache`) share it without importing
each other."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import LmfixError
from .textfile import chunk_lines
from .tokenizer import Tokenizer
from .vocab import EOS, Vocab

SPLITS = ("train", "valid", "test")


@dataclass
class RawText:
    """A corpus's lines per split, before tokenization."""

    name: str
    source: str
    lines: dict[str, list[str]]
    train_sha256: str


@dataclass
class Corpus:
    name: str
    source: str
    tokenizer: Tokenizer
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_sha256: str
    unk_replaced: dict[str, int] = field(default_factory=dict)
    # Word-level tokens (the example's count, <eos> included) and characters per split, so
    # perplexity can be compared across tokenizations (lmfix.evaluation).
    words: dict[str, int] = field(default_factory=dict)
    chars: dict[str, int] = field(default_factory=dict)

    @property
    def vocab(self) -> Vocab:
        return self.tokenizer.vocab

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


@dataclass
class CorpusSource:
    """A corpus before reading: where it is, each split's sha256, and its text as chunks of
    whole lines (:func:`text_chunks`), read on demand so no split need be held whole."""

    name: str
    source: str
    sha256: dict[str, str]
    chunks: Callable[[str], Iterator[str]]
    # parts(split, n): up to n objects with chunks(), covering the split in order, that other
    # processes can read (a file's byte ranges); a source that has none gives one part
    parts: Callable[[str, int], list] | None = None

    def split_parts(self, split: str, n: int) -> list:
        return self.parts(split, n) if self.parts else [_Chunks(self, split)]

    @property
    def train_sha256(self) -> str:
        return self.sha256["train"]

    def read(self) -> RawText:
        """Every split's lines (each ending in a newline), in memory."""
        lines = {s: [t for c in self.chunks(s) for t in chunk_lines(c)] for s in SPLITS}
        return RawText(self.name, self.source, lines, self.train_sha256)


@dataclass(frozen=True)
class _Chunks:
    source: CorpusSource
    split: str

    def chunks(self) -> Iterator[str]:
        return self.source.chunks(self.split)


def check_learnable(counts: np.ndarray, eos: int, source: str) -> None:
    """Refuse a training split with fewer than 2 distinct tokens besides <eos> (``counts``:
    occurrences per id)."""
    distinct = int((counts > 0).sum()) - int(eos < counts.size and counts[eos] > 0)
    if distinct < 2:
        # Blank lines only, or one word: a model of it learns nothing, and its perplexity
        # (1.00 for three splits of blank lines) would look like a result.
        raise LmfixError(f"{source}: the training split has {distinct} distinct token(s) "
                         f"besides {EOS}: nothing to learn (at least 2 are needed)")


