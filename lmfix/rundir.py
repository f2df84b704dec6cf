"""The run directory: what one training run leaves behind. :class:`RunDir` is the one owner of
its files and of its status; every other module asks it.

    RUN_DIR/
      config.json     every setting (TrainConfig + ModelConfig), the command, corpus identity,
                      the tokenizer file's sha256, and every resume that changed a setting
      status.json     running | interrupted | failed (with the error) | finished
      metrics.jsonl   one line per log interval ("step") and per epoch ("epoch")
      checkpoint.pt   the latest training state (model, optimizer, position, RNG) for --resume
      best.pt         the best-validation model, tested at the end
      summary.json    final figures (perplexities, parameter counts, speed, versions)
      vocab.txt       the word vocabulary (word runs) or tokenizer.model (SentencePiece runs)
      .lock           held (an OS file lock) by the process training here, with its pid

Every file but metrics.jsonl is replaced atomically; metrics.jsonl is appended line by line.
Status transitions: (none) → running → interrupted | failed | finished, and running again on
resume; a run that was killed still says running (its lock is free: :meth:`RunDir.lock`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import LmfixError
from .fsutil import append_line, read_json, write_json
from .tokenizer import SP_MODEL_FILE, VOCAB_FILE

CONFIG, STATUS, METRICS, SUMMARY = "config.json", "status.json", "metrics.jsonl", "summary.json"
LAST, BEST, LOCK = "checkpoint.pt", "best.pt", ".lock"
RUN_FILES = (CONFIG, STATUS, METRICS, LAST, BEST, SUMMARY, SP_MODEL_FILE, VOCAB_FILE)
STATES = ("running", "interrupted", "failed", "finished")

# Locks this process holds: path -> [open file, depth]. flock locks belong to an open file, so
# a second open() of the same lock file in one process would refuse its own holder.
_HELD: dict[str, list] = {}


@dataclass(frozen=True)
class Status:
    state: str | None  # one of STATES, or None: no readable status.json
    error: str | None = None
    updated: str | None = None
    mtime: float | None = None  # when status.json was last written (seconds since the epoch)

    def written_since(self, t: float) -> bool:
        """Written at or after ``t`` (a ``time.time()``), give or take a second of clock."""
        return self.mtime is not None and self.mtime >= t - 1


class RunDir:
    """One run directory, ``RunDir(path)``; nothing is read or written until asked."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    # -- what is there -------------------------------------------------------------------------

    def holds_run(self) -> bool:
        return (self / CONFIG).is_file() or (self / STATUS).is_file()

    def status(self) -> Status:
        path = self / STATUS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            return Status(None)
        if not isinstance(data, dict) or data.get("status") not in STATES:
            return Status(None)
        return Status(data["status"], data.get("error"), data.get("updated"), mtime)

    @property
    def finished(self) -> bool:
        return self.status().state == "finished" and (self / SUMMARY).is_file()

    @property
    def resumable(self) -> bool:
        """Not finished, and a config and a checkpoint to continue from."""
        return not self.finished and (self / CONFIG).is_file() and (self / LAST).is_file()

    # -- status transitions --------------------------------------------------------------------

    def mark_running(self) -> None:
        self._set("running")

    def mark_interrupted(self, why: str) -> None:
        self._set("interrupted", why)

    def mark_failed(self, error: str) -> None:
        """Failed, unless it finished (a late failure report must not undo a result)."""
        if self.status().state != "finished":
            self._set("failed", error)

    def mark_finished(self, summary: dict) -> None:
        write_json(self / SUMMARY, summary)
        self._set("finished")

    def _set(self, state: str, error: str | None = None) -> None:
        write_json(self / STATUS, {"status": state, "error": error,
                                   "updated": _dt.datetime.now().isoformat(timespec="seconds")})

    # -- files ---------------------------------------------------------------------------------

    def prepare(self, force: bool = False) -> None:
        """Make the directory ready for a new run; an existing run is kept unless ``force``."""
        if self.path.exists() and not self.path.is_dir():
            raise LmfixError(f"--out {self.path} exists and is not a directory")
        if self.holds_run():
            if not force:
                state = self.status().state or "unknown"
                raise LmfixError(f"{self.path} already holds a run ({state}); pass --resume to "
                                 "continue it, --force to start over, or choose another --out")
            for name in RUN_FILES:
                (self / name).unlink(missing_ok=True)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise LmfixError(f"cannot write to {self.path}: {e.strerror or e}") from None

    def read_config(self) -> dict:
        if not (self / CONFIG).is_file():
            raise LmfixError(f"{self.path} holds no run (no {CONFIG})")
        cfg = read_json(self / CONFIG)
        if not isinstance(cfg, dict) or not isinstance(cfg.get("train"), dict):
            raise LmfixError(f"{self / CONFIG} is not an lmfix run config")
        return cfg

    def write_config(self, config: dict) -> None:
        write_json(self / CONFIG, config)

    def read_summary(self) -> dict:
        """summary.json, checked to be something a result can be read from."""
        s = read_json(self / SUMMARY)
        check_summary(s, self / SUMMARY)
        return s

    def log(self, record: dict) -> None:
        append_line(self / METRICS, json.dumps(record))

    # -- one process at a time -----------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, what: str = "") -> Iterator[None]:
        """Hold the directory for this process (re-entrant) while the block runs; another
        process holding it is refused in one line naming its pid. An OS lock (flock): a
        process that dies, even by SIGKILL, releases it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LmfixError(f"cannot write to {self.path}: {e.strerror or e}") from None
        key = os.path.realpath(self / LOCK)
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        try:
            f = open(key, "a+", encoding="utf-8")
        except OSError as e:
            raise LmfixError(f"cannot write to {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "pid unknown"
            f.close()
            raise LmfixError(f"{self.path} is in use by another lmfix process ({holder}); "
                             "wait for it to end, or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {what or ' '.join(sys.argv)}\n")
        f.flush()
        _HELD[key] = [f, 1]
        try:
            yield
        finally:
            _HELD.pop(key)
            f.close()  # releases the lock


def check_summary(s, path: Path) -> None:
    """Refuse a summary a result cannot be built from, naming the offending field: the types,
    and the values (perplexities finite and ≥ 1, parameter counts ≥ 0)."""
    def bad(what: str) -> LmfixError:
        return LmfixError(f"{path}: malformed summary.json: {what}")

    def num(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if not isinstance(s, dict):
        raise bad(f"expected a JSON object, got {type(s).__name__}")
    for key in ("name", "embedding"):
        if not isinstance(s.get(key), str) or not s[key]:
            raise bad(f"'{key}' should be a non-empty string, got {s.get(key)!r}")
    if not isinstance(s.get("tied"), bool):
        raise bad(f"'tied' should be true or false, got {s.get('tied')!r}")
    if s.get("fixed") not in ("both", "input", "output", "none"):
        raise bad(f"'fixed' should be both, input, output or none, got {s.get('fixed')!r}")
    if not isinstance(s.get("tokenizer"), dict) or "kind" not in s["tokenizer"]:
        raise bad(f"'tokenizer' should be an object with a kind, got {s.get('tokenizer')!r}")
    if not isinstance(s.get("params"), dict):
        raise bad(f"'params' should be an object, got {s.get('params')!r}")
    for key in ("trainable", "fixed", "total"):
        v = s["params"].get(key)
        if not (num(v) and v >= 0 and v == int(v)):
            raise bad(f"'params.{key}' should be a count (an integer ≥ 0), got {v!r}")
    if not (num(s.get("emsize")) and s["emsize"] >= 1):
        raise bad(f"'emsize' should be a positive number, got {s.get('emsize')!r}")
    for key in ("val_ppl", "test_ppl"):
        v = s.get(key)
        if not (num(v) and math.isfinite(v) and v >= 1):
            raise bad(f"'{key}' should be a perplexity (a finite number ≥ 1), got {v!r}")
