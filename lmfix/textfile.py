"""Corpus text read in bounded chunks of whole lines, whole or as byte ranges of a file.

A leaf module (no torch): the processes that encode parts of a large training file in
parallel (:mod:`lmfix.word_ids`) import only this and numpy.

Lines are read as corpus files always were: UTF-8, a leading byte-order mark dropped,
universal newlines (CRLF and CR read as LF), no line longer than MAX_LINE_CHARS (an endless
line, such as /dev/zero's, would otherwise fill memory).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import LmfixError

MAX_LINE_CHARS = 10_000_000  # WikiText-103's longest line is ~50k; an endless one must stop
CHUNK_CHARS = 1 << 23  # text is read 8M characters at a time: bounded memory at any size


def text_chunks(f, name: str, end_newline: bool = True) -> Iterator[str]:
    """An open text file as chunks of whole lines, each line ending in a newline (the last
    line gets one if it lacks it, unless ``end_newline`` is off), no line longer than
    MAX_LINE_CHARS."""
    carry, first, lines = "", True, 0
    while block := f.read(CHUNK_CHARS):
        if first:  # a file opened as plain utf-8 keeps its BOM
            block, first = block.removeprefix("\ufeff"), False
        block = carry + block
        cut = block.rfind("\n") + 1
        chunk, carry = block[:cut], block[cut:]
        if len(carry) > MAX_LINE_CHARS or (len(chunk) > MAX_LINE_CHARS and max(
                map(len, chunk.split("\n"))) > MAX_LINE_CHARS):
            long_at = lines + 1 + next((i for i, t in enumerate(block.split("\n"))
                                        if len(t) > MAX_LINE_CHARS), 0)
            raise LmfixError(f"{name}: line {long_at:,} is longer than "
                             f"{MAX_LINE_CHARS:,} characters (not line-based text?)")
        if chunk:
            lines += chunk.count("\n")
            yield chunk
    if carry:
        yield carry + "\n" if end_newline else carry


def chunk_lines(chunk: str) -> list[str]:
    """A chunk's lines as readline gives them: each with its newline, a last one without.
    (Not str.splitlines, which also cuts at form feeds and other separators that a corpus
    line may hold.)"""
    parts = chunk.split("\n")
    return [t + "\n" for t in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def lines_chunk(lines) -> str:
    """Lines joined into one chunk of whole lines, each ending in a newline."""
    return "".join(t if t.endswith("\n") else t + "\n" for t in lines)


def chunk_chars(chunk: str) -> int:
    """Characters of a chunk of whole lines as :func:`lmfix.data.count_chars` counts them:
    each line's, leading and trailing blanks not counted, plus one per line end."""
    return sum(map(len, map(str.strip, chunk[:-1].split("\n")))) + chunk.count("\n")


@dataclass(frozen=True)
class FileRange:
    """Bytes ``start``..``end`` of a text file, cut at line starts: a part of a split that a
    separate process can read (it pickles as three values)."""

    path: str
    start: int
    end: int

    def chunks(self) -> Iterator[str]:
        where = self.path if self.start == 0 else f"{self.path} (from byte {self.start:,})"
        try:
            with open(self.path, "rb") as raw:
                raw.seek(self.start)
                # only the BOM at the file's start is one; elsewhere U+FEFF is text
                f = io.TextIOWrapper(io.BufferedReader(_Range(raw, self.end - self.start)),
                                     encoding="utf-8-sig" if self.start == 0 else "utf-8",
                                     newline=None)
                yield from text_chunks(f, where)
        except UnicodeDecodeError as e:
            raise LmfixError(f"{where}: not UTF-8 text (byte {e.start} of a block); lmfix "
                             "expects word-level WikiText-style text files") from None
        except OSError as e:
            raise LmfixError(f"{self.path}: cannot read ({e.strerror or e})") from None


class _Range(io.RawIOBase):
    """At most ``size`` bytes of an open binary file, from where it stands."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.f.readinto(memoryview(buf)[: max(0, min(len(buf), self.left))])
        self.left -= n
        return n


def file_parts(path: str | os.PathLike, parts: int) -> list[FileRange]:
    """Up to ``parts`` ranges of about equal size, each starting just after a line feed (a
    CRLF is never cut; a file of CR-only line ends stays whole)."""
    path = str(path)
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(cuts[-1], size * k // parts))
            f.readline()  # to the end of the line the cut falls in
            if (at := f.tell()) < size and at > cuts[-1]:
                cuts.append(at)
    cuts.append(size)
    return [FileRange(path, a, b) for a, b in zip(cuts, cuts[1:])]
