"""Token ids on disk: a corpus is encoded once per (its text, the tokenizer settings), then
memory-mapped on every later command.

WikiText-103 is 103M training tokens (~540 MB of text); re-reading and re-encoding it on each
command took over a minute and 2.5 GB. Here the text streams through the tokenizer a chunk at
a time (:meth:`lmfix.tokenizer.TokenizerConfig.fit_encode`) into int32 id files, so the
encoding's memory is the chunk's, not the corpus's; a later command hashes the split files
(to key the cache) and maps the ids (pages are read as batches use them).

One directory per corpus and tokenizer under ``$LMFIX_CACHE/corpus`` (default
``~/.cache/lmfix/corpus``)::

    wikitext-2-<key>/      key: sha256 of the three splits' sha256 and the tokenizer settings
        train.ids valid.ids test.ids    int32, little-endian, one id per token
        vocab.txt | tokenizer.model     the tokenizer (its ``save_into`` file)
        meta.json                       written last: tokens, <unk>s, words, chars per split,
                                        each id file's sha256, the tokenizer's sha256

A directory is used only when its meta.json names the same key and every file has the size
and sha256 it records; anything else (truncated, from another corpus, hand-edited) is
rebuilt, with a warning. A cache that cannot be written (read-only home) costs a warning and
the corpus is kept in memory instead. The sha256 of a file whose size, inode and times have not
changed is not computed again (:func:`file_sha256`, remembered in ``$LMFIX_CACHE``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import word_ids
from .corpus import SPLITS, Corpus, CorpusSource, check_learnable
from .errors import LmfixError
from .fsutil import write_json
from .textfile import chunk_chars
from .tokenizer import Tokenizer, TokenizerConfig, load_tokenizer
from .vocab import EOS

FORMAT = 1
_ID_DTYPE = word_ids.ID_DTYPE


def cache_root() -> Path:
    return Path(os.environ.get("LMFIX_CACHE") or "~/.cache/lmfix").expanduser() / "corpus"


_MEMO = "sha256-memo.json"
_MEMO_ENTRIES = 512
_RACY_S = 2.0  # a file changed this recently may change again within its timestamp's tick


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, remembered (in $LMFIX_CACHE) by its size, inode and
    modification and change times, as git's index remembers them: an unchanged file is not
    read again (hashing WikiText-103's text and ids, ~1 GB, was ~0.5 s of a 3.3 s cached
    load). Any write, and any utime, moves ctime; a file changed within _RACY_S of being
    hashed is not remembered, so a second change in the same clock tick cannot hide."""
    path = Path(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        memo_path = cache_root().parent / _MEMO  # beside corpus/, whose entries are corpora
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
            if not isinstance(memo, dict):
                memo = {}
        except (OSError, ValueError):
            memo = {}
        key = str(path.resolve())
        hit = memo.get(key)
        if isinstance(hit, list) and len(hit) == 6 and hit[:5] == stamp:
            return hit[5]
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_S * 1e9:
        memo.pop(key, None)
        memo[key] = stamp + [digest]
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(memo_path, dict(list(memo.items())[-_MEMO_ENTRIES:]))
        except OSError:
            pass  # a read-only cache only costs the re-hash next time
    return digest


def cache_key(source: CorpusSource, tokenizer: TokenizerConfig) -> str:
    settings = {"format": FORMAT, "sha256": {s: source.sha256[s] for s in SPLITS},
                "tokenizer": tokenizer.settings_key}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def cache_dir(source: CorpusSource, tokenizer: TokenizerConfig) -> Path:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.name)[:64]
    return cache_root() / f"{name}-{cache_key(source, tokenizer)}"


def load_encoded(source: CorpusSource, tokenizer: TokenizerConfig) -> Corpus:
    """The corpus's ids from the cache, encoding (and caching) them first if needed."""
    where = cache_dir(source, tokenizer)
    if (where / "meta.json").exists():
        try:
            return _open(where, source, cache_key(source, tokenizer))
        except _Damaged as e:
            _warn(f"the corpus cache {where} is damaged ({e}); rebuilding it")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{where.name}.", dir=where.parent))
    except OSError as e:
        _warn(f"cannot write the corpus cache under {where.parent} ({e.strerror or e}); "
              "encoding in memory (set LMFIX_CACHE to a writable directory to cache it)")
        return _encode_in_memory(source, tokenizer)
    try:
        _encode_into(work, source, tokenizer, cache_key(source, tokenizer))
        _publish(work, where)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        return _open(where, source, cache_key(source, tokenizer))
    except _Damaged as e:  # written a moment ago: the disk, or another process, failed it
        raise LmfixError(f"the corpus cache {where} could not be read back ({e})") from None


class _Damaged(Exception):
    pass


def _warn(message: str) -> None:
    print(f"lmfix: warning: {message}", file=sys.stderr, flush=True)


class _Stats:
    """What the encoding of one split adds up (the sink of ``fit_encode``): its ids (to a
    file, or kept), their sha256, occurrences per id, and the counts meta.json keeps."""

    def __init__(self, f=None):
        self.f, self.parts, self.tokens, self.unk, self.words, self.chars = f, [], 0, 0, 0, 0
        self.sha = hashlib.sha256()
        self.counts = np.zeros(0, np.int64)

    def __call__(self, ids: np.ndarray, n_unk: int, words: int, chars: int) -> None:
        data = ids.astype(_ID_DTYPE, copy=False)
        if self.f is not None:
            self.f.write(memoryview(data).cast("B"))
        else:
            self.parts.append(data)
        self.sha.update(memoryview(data).cast("B"))
        counts = np.bincount(data)
        if counts.size > self.counts.size:
            counts[: self.counts.size] += self.counts
            self.counts = counts
        else:
            self.counts[: counts.size] += counts
        self.tokens += data.size
        self.unk += n_unk
        self.words += words
        self.chars += chars


def _encode_splits(source: CorpusSource, tokenizer: TokenizerConfig, work: Path,
                   keep_in_memory: bool) -> tuple[Tokenizer, dict[str, _Stats]]:
    """Fit on and encode train (in parts, side by side), then encode valid and test; the ids
    go to ``work/<split>.ids`` unless kept in memory."""
    stats = {}
    for s in SPLITS:
        f = None if keep_in_memory else open(work / f"{s}.ids", "wb")
        try:
            stats[s] = st = _Stats(f)
            if s == "train":
                workers = word_ids.default_workers()
                fitted = tokenizer.fit_encode(source.split_parts("train", workers),
                                              source.train_sha256, st, work, workers)
            else:
                for chunk in source.chunks(s):
                    st(*fitted.encode_text(chunk), chunk_chars(chunk))
        finally:
            if f is not None:
                f.close()
        if not st.tokens:
            raise LmfixError(f"{source.source}: the {s} split is empty (no tokens)")
    check_learnable(stats["train"].counts, fitted.vocab.index[EOS], source.source)
    return fitted, stats


def _encode_in_memory(source: CorpusSource, tokenizer: TokenizerConfig) -> Corpus:
    with tempfile.TemporaryDirectory(prefix="lmfix-encode-") as scratch:
        fitted, stats = _encode_splits(source, tokenizer, Path(scratch), keep_in_memory=True)
    ids = {s: torch.from_numpy(np.concatenate(st.parts or [np.empty(0, _ID_DTYPE)]))
           for s, st in stats.items()}
    return Corpus(source.name, source.source, fitted, ids["train"], ids["valid"], ids["test"],
                  source.train_sha256, {s: st.unk for s, st in stats.items()},
                  {s: st.words for s, st in stats.items()},
                  {s: st.chars for s, st in stats.items()})


def _encode_into(work: Path, source: CorpusSource, tokenizer: TokenizerConfig, key: str) -> None:
    fitted, stats = _encode_splits(source, tokenizer, work, keep_in_memory=False)
    tokenizer_sha = fitted.save_into(work)
    write_json(work / "meta.json", {
        "format": FORMAT, "key": key, "name": source.name, "source": source.source,
        "sha256": source.sha256, "tokenizer": fitted.identity(), "tokenizer_sha256": tokenizer_sha,
        "vocab_size": len(fitted.vocab),
        "splits": {s: {"tokens": st.tokens, "ids_sha256": st.sha.hexdigest(), "unk": st.unk,
                       "words": st.words, "chars": st.chars} for s, st in stats.items()}})


def _publish(work: Path, where: Path) -> None:
    """Move the finished directory into place (a rename: readers see all of it or none)."""
    if where.exists():  # damaged (it was checked) or just written by another process
        stale = where.with_name(f".{where.name}.stale-{os.getpid()}")
        try:
            where.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    try:
        work.rename(where)
    except OSError:
        if not (where / "meta.json").exists():  # not a concurrent writer's finished copy
            raise


# Linux's MADV_PAGEOUT (5.4+; Python's mmap module names it only when built against such
# headers). Unlike MADV_DONTNEED it never changes what the pages hold: a copy-on-write page
# that was written is kept (or swapped), a clean one is re-read from the file when touched.
_MADV_PAGEOUT = getattr(__import__("mmap"), "MADV_PAGEOUT", 21 if sys.platform == "linux" else None)


def release_pages(ids: torch.Tensor | np.ndarray) -> None:
    """Hand back the memory a mapped split's pages hold once a command is done reading them.

    A pass over a cached split (PMI's counting reads the 103M-token training ids five
    times) leaves every page of its file resident in the process: 0.42 GB of the PMI
    build's peak at WikiText-103's size (docs/scale.md). The contents stay the same and
    readable; where the kernel cannot do it, nothing happens."""
    import ctypes

    array = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    start = -(-array.ctypes.data // page) * page  # whole pages inside the array only
    end = (array.ctypes.data + array.nbytes) // page * page
    if _MADV_PAGEOUT is None or end <= start:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start),
                     ctypes.c_int(_MADV_PAGEOUT))  # EINVAL on older kernels: ignored
    except (OSError, AttributeError):
        pass


def _open(where: Path, source: CorpusSource, key: str) -> Corpus:
    try:
        meta = json.loads((where / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("key") != key:
            raise _Damaged("its meta.json is for another corpus or tokenizer")
        splits = meta["splits"]
        ids = {}
        for s in SPLITS:
            path, want = where / f"{s}.ids", splits[s]
            size = path.stat().st_size
            if size != want["tokens"] * _ID_DTYPE.itemsize:
                raise _Damaged(f"{path.name} holds {size:,} bytes, not the "
                               f"{want['tokens'] * _ID_DTYPE.itemsize:,} of its tokens")
            if file_sha256(path) != want["ids_sha256"]:
                raise _Damaged(f"{path.name} is not the file meta.json records (sha256)")
            # copy-on-write: torch gets a writable array, the file is never changed
            ids[s] = torch.from_numpy(np.memmap(path, dtype=_ID_DTYPE, mode="c")) \
                if want["tokens"] else torch.empty(0, dtype=torch.int32)
        fitted: Tokenizer = load_tokenizer(meta["tokenizer"], where, meta["tokenizer_sha256"])
    except (OSError, KeyError, TypeError, ValueError, LmfixError) as e:
        raise _Damaged(str(e) if isinstance(e, LmfixError) else f"{type(e).__name__}: {e}") \
            from None
    if len(fitted.vocab) != meta.get("vocab_size"):
        raise _Damaged("its tokenizer file does not match meta.json")
    return Corpus(source.name, source.source, fitted, ids["train"], ids["valid"], ids["test"],
                  source.train_sha256, {s: splits[s]["unk"] for s in SPLITS},
                  {s: splits[s]["words"] for s in SPLITS},
                  {s: splits[s]["chars"] for s in SPLITS})
