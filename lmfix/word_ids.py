"""The PyTorch example's word tokens, encoded at corpus scale: one pass, ids in order of first
appearance, the training file cut into parts that processes encode side by side.

The example's ``Dictionary`` gives each word the next id when it first appears (``<eos>``
after the first line's words). A part of the file, encoded alone, gives its words *local* ids
in the same order; the parts' vocabularies merged in file order (each word keeping its first
id) are the whole file's, and each part's ids map to them through a lookup table. The result
is the serial one, id for id (tests compare them).

A whitespace split and a dict lookup per token cost ~0.37 µs in CPython on the 2-core
machines (WikiText-103's 103M tokens: 23 s in each of two processes). :class:`ChunkEncoder`
does the per-token work in numpy instead: it finds the words in the chunk's UTF-8 bytes,
keys each word of up to 16 bytes exactly by its bytes (two 8-byte loads and its length),
groups equal keys with one sort, and looks up only each distinct word in the dict, in order
of first appearance, so that new words get their ids in the serial order. A leaf module
(numpy only, no torch), so the worker processes start fast.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import re
import sys
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


# str.split()'s separators (str.isspace): in ASCII, these bytes; beyond it, characters that
# ChunkEncoder turns into spaces first (which changes no split). UTF-8 puts ASCII bytes only
# where ASCII characters are, so the words of the bytes are the words of the text.
def _is_space(b: np.ndarray) -> np.ndarray:
    """str.isspace of each ASCII byte: 9-13, 28-31 and 32 (uint8 arithmetic wraps)."""
    return (b == 32) | (b - np.uint8(9) <= 4) | (b - np.uint8(28) <= 3)


@functools.cache
def _wide_space() -> re.Pattern:
    return re.compile("[" + "".join(chr(c) for c in range(128, sys.maxunicode + 1)
                                    if chr(c).isspace()) + "]")


KEY_BYTES = 16  # longer words (rare) are looked up one by one
WINDOW_BYTES = 1 << 20  # text encoded at a time (whole lines; a longer line whole)
_LOW = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


class ChunkEncoder:
    """Ids in order of first appearance for chunk after chunk of whole lines: ``encode(chunk)``
    is ``[index[w] for w in words_of(chunk)]`` with ``index`` a ``_FirstSeen`` shared by the
    chunks, computed in numpy. Each word of up to KEY_BYTES bytes is keyed exactly by its
    bytes (two 8-byte loads, masked, and its length); one sort groups the chunk's equal keys
    (a 64-bit hash of the key, its low bits replaced by the position so that the sort also
    orders each group, every group then checked key for key); the distinct words are looked
    up in a sorted array of the words seen before, and only the rest (new words, longer
    words) in ``index``, in order of position, so new words get their ids as the serial loop
    gives them."""

    def __init__(self):
        self.index = _FirstSeen()
        # the known short words, sorted by hash: hash, key (lo, hi, length), id
        self._hash = np.empty(0, np.uint64)
        self._lo = np.empty(0, np.uint64)
        self._hi = np.empty(0, np.uint64)
        self._len = np.empty(0, np.int64)
        self._ids = np.empty(0, ID_DTYPE)

    def encode(self, chunk: str) -> np.ndarray:
        text = chunk.replace("\n", f" {EOS}\n")
        if not text.isascii():
            text = _wide_space().sub(" ", text)
        raw = text.encode("utf-8", "surrogatepass")
        # a window of whole lines at a time: its arrays are ~2 MB each, not the chunk's ~13 MB
        # (a dozen of them live at once); smaller windows cost more time per token
        pieces, start = [], 0
        while start < len(raw):
            end = raw.rfind(b"\n", start, start + WINDOW_BYTES) + 1 or raw.find(b"\n", start) + 1
            end = end or len(raw)
            pieces.append(self._encode_bytes(raw[start:end]))
            start = end
        return np.concatenate(pieces) if pieces else np.empty(0, ID_DTYPE)

    def _encode_bytes(self, raw: bytes) -> np.ndarray:
        size = len(raw)
        # 8-byte words of the text (zeros past its end): a word's first 16 bytes are spread
        # over 3 of them, gathered aligned and shifted into place
        words8 = np.zeros(size // 8 + 3, dtype="<u8")
        b = words8.view(np.uint8)
        b[:size] = np.frombuffer(raw, dtype=np.uint8)
        inside = np.zeros(size + 2, dtype=np.int8)  # 1 in a word, 0 in a space and past the ends
        inside[1:-1] = ~_is_space(b[:size])
        bounds = np.flatnonzero(np.diff(inside))
        del inside
        starts, ends = bounds[0::2], bounds[1::2]  # a word starts, then ends, in turn
        lengths = ends - starts
        short = np.flatnonzero(lengths <= KEY_BYTES)
        if short.size == starts.size:
            s, n = starts, lengths
        else:
            s, n = starts[short], lengths[short]
        q, r = s >> 3, (s & 7).astype(np.uint64) << np.uint64(3)
        w0, w1, w2 = words8[q], words8[q + 1], words8[q + 2]
        left = np.uint64(63) - r  # (x << (64 - r)) as two shifts: a shift by 64 is undefined
        lo = (w0 >> r | (w1 << left) << np.uint64(1)) & _LOW[np.minimum(n, 8)]
        hi = (w1 >> r | (w2 << left) << np.uint64(1)) & _LOW[np.clip(n - 8, 0, 8)]
        del words8, b, q, r, w0, w1, w2, left
        h = _group_key(lo, hi, n)
        first, inverse = _group(h)
        ulo, uhi, un, uh = lo[first], hi[first], n[first], h[first]
        if not (np.array_equal(ulo[inverse], lo) and np.array_equal(uhi[inverse], hi)
                and np.array_equal(un[inverse], n)):
            return self._word_by_word(raw)  # two words, one group: never seen (2^-40-rare)
        del lo, hi, n, h
        at_known = np.minimum(np.searchsorted(self._hash, uh), max(self._hash.size - 1, 0))
        if self._hash.size:
            known = self._hash[at_known] == uh
            hit = (known & (self._lo[at_known] == ulo) & (self._hi[at_known] == uhi)
                   & (self._len[at_known] == un))
        else:
            known = hit = np.zeros(uh.size, dtype=bool)
        unique_ids = np.empty(uh.size, ID_DTYPE)
        unique_ids[hit] = self._ids[at_known[hit]]
        miss = np.flatnonzero(~hit)
        long_ = np.flatnonzero(lengths > KEY_BYTES)
        # the dict, in order of position: new words get the next ids as they first appear
        lookups = np.concatenate((short[first[miss]], long_))
        order = np.argsort(lookups, kind="stable")
        where = lookups[order]
        index = self.index
        found = np.fromiter((index[raw[a:z].decode("utf-8", "surrogatepass")] for a, z in
                             zip(starts[where].tolist(), ends[where].tolist())),
                            ID_DTYPE, where.size)
        looked = np.empty_like(found)
        looked[order] = found
        unique_ids[miss] = looked[: miss.size]
        ids = np.empty(starts.size, ID_DTYPE)
        ids[short] = unique_ids[inverse]
        ids[long_] = looked[miss.size:]
        # remember the short words looked up (a hash already taken by another word: not)
        add = miss[~known[miss]]
        if add.size:
            add = add[np.argsort(uh[add])]
            slots = np.searchsorted(self._hash, uh[add])
            for name, values in (("_hash", uh), ("_lo", ulo), ("_hi", uhi), ("_len", un),
                                 ("_ids", unique_ids)):
                setattr(self, name, np.insert(getattr(self, name), slots, values[add]))
        return ids

    def _word_by_word(self, raw: bytes) -> np.ndarray:
        words = raw.decode("utf-8", "surrogatepass").split()
        return np.fromiter(map(self.index.__getitem__, words), ID_DTYPE, len(words))


def _group(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal hashes with one sort of uint64 values: each hash with its low bits
    replaced by the element's position, so that a group comes out in order of position.
    Returns (each group's first element, each element's group), groups in hash order. Hashes
    that differ only in the replaced bits are grouped together: the caller checks every
    group key for key."""
    if not h.size:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    bits = int(h.size).bit_length()
    low = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    keyed = np.sort((h & ~low) | np.arange(h.size, dtype=np.uint64))
    order = (keyed & low).astype(np.intp)
    starts = np.empty(h.size, dtype=bool)
    starts[0] = True
    np.not_equal(keyed[1:] >> np.uint64(bits), keyed[:-1] >> np.uint64(bits), out=starts[1:])
    inverse = np.empty(h.size, dtype=np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return order[starts], inverse


def _group_key(lo: np.ndarray, hi: np.ndarray, n: np.ndarray) -> np.ndarray:
    """One uint64 per word key (multiplicative hashing, wrapping), sorted to group them."""
    return lo * np.uint64(0x9E3779B97F4A7C15) ^ (hi + n.astype(np.uint64)) * np.uint64(
        0xC2B2AE3D27D4EB4F)


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
    encoder, tokens, chars = ChunkEncoder(), 0, 0
    with open(ids_path, "wb") as out:
        for chunk in part.chunks():
            ids = encoder.encode(chunk)
            out.write(memoryview(ids).cast("B"))
            tokens += ids.size
            chars += chunk_chars(chunk)
    return Part(list(encoder.index), tokens, chars, ids_path)


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
