"""Atomic, durable file writes: a crash leaves the old file or the new one, never half of one.

Each writer goes to a temporary file in the destination's directory (same filesystem, so the
rename is atomic), fsyncs it, renames it over the destination and fsyncs the directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import LmfixError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling path for a writer that wants a file name (gensim, torch); on
    success it is fsynced and renamed over ``path``, on failure removed."""
    path = Path(path)
    if path.is_dir():
        raise LmfixError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide outputs from other users
        os.close(fd)
    except OSError as e:
        raise LmfixError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise LmfixError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and fsync; a crash can lose at most this line, never earlier ones."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise LmfixError(f"cannot write {path}: {e.strerror or e}") from None


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning a missing or malformed file into one clear error."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LmfixError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmfixError(f"{path}: not a readable JSON file ({e})") from None


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as None: strict JSON has no NaN or inf (a table keeps
    showing them as "nan"/"inf")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
