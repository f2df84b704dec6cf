"""The PyTorch example's word tokens, encoded at corpus scale: one pass, ids in order of first
appearance, the training file cut into parts that processes encode side by side.

The example's ``Dictionary`` gives each word the next id when it first appears (``<eos>``
after the first line's words). A part of the file, encoded alone, gives its words *local* ids
in the same order; the parts' vocabularies merged in file order (each word keeping its first
id) are the whole file's, and each part's ids map to them through a lookup table. The result
is the serial one, id for id (tests compare them).

Per token the work is a whitespace split and a dict lookup, ~0.5 µs in CPython on the 2-core
machines; WikiText-103's 103M tokens are a minute in one process. A leaf module (numpy only,
no torch), so the worker processes start fast.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .textfile import chunk_chars
from .vocab import EOS

ID_DTYPE = np.dtype("<i4")  # the ids on disk and in memory: 4 bytes a token


def words_of(chunk: str) -> list[str]:
    """The example's tokens of whole lines: each line's whitespace-split words, then <eos>
    (a line end becomes " <eos>" before one split of the whole chunk)."""
    return chunk.replace("\n", f" {EOS}\n").split()


class _FirstSeen(dict):
    """word -> id, a new word getting the next id as it is first looked up."""

    def __missing__(self, word: str) -> int:
        i = self[word] = len(self)
        return i


@dataclass
class Part:
    """A part encoded alone: its words in order of first appearance, and its counts."""

    words: list[str]
    tokens: int
    chars: int
    ids_path: str


def encode_part(part, ids_path: str) -> Part:
    """Encode ``part`` (anything with ``chunks()``) into ``ids_path`` with local ids."""
    index, tokens, chars = _FirstSeen(), 0, 0
    with open(ids_path, "wb") as out:
        for chunk in part.chunks():
            words = words_of(chunk)
            ids = np.fromiter(map(index.__getitem__, words), ID_DTYPE, len(words))
            out.write(memoryview(ids).cast("B"))
            tokens += len(words)
            chars += chunk_chars(chunk)
    return Part(list(index), tokens, chars, ids_path)


def encode_parts(parts: list, scratch: Path, workers: int) -> tuple[dict[str, int], list[Part]]:
    """Encode the parts (in ``workers`` processes when there are several), and merge their
    vocabularies in order: (word -> id, the parts)."""
    paths = [str(scratch / f"part-{k}.ids") for k in range(len(parts))]
    if workers > 1 and len(parts) > 1:
        # fork where there is one: the workers run no torch, and start in milliseconds
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(min(workers, len(parts)), mp_context=ctx) as pool:
            done = list(pool.map(encode_part, parts, paths))
    else:
        done = [encode_part(p, path) for p, path in zip(parts, paths)]
    index: dict[str, int] = {}
    for p in done:
        for w in p.words:
            index.setdefault(w, len(index))
    return index, done


def global_ids(part: Part, index: dict[str, int], block: int = 1 << 23) -> Iterator[np.ndarray]:
    """A part's ids in the merged vocabulary, ``block`` tokens at a time."""
    lut = np.fromiter(map(index.__getitem__, part.words), ID_DTYPE, len(part.words))
    if part.tokens:
        local = np.memmap(part.ids_path, dtype=ID_DTYPE, mode="r")
        for i in range(0, part.tokens, block):
            yield lut[local[i: i + block]]
        del local
    os.unlink(part.ids_path)


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
