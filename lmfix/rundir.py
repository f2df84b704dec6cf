"""The run directory: what one training run leaves behind, and how it records its progress.

    RUN_DIR/
      config.json     every setting (TrainConfig + ModelConfig), the command, corpus identity
      status.json     running | interrupted | failed (with the error) | finished
      metrics.jsonl   one line per log interval ("step") and per epoch ("epoch")
      checkpoint.pt   the latest training state (model, optimizer, position, RNG) for --resume
      best.pt         the best-validation model, tested at the end
      summary.json    final figures (perplexities, parameter counts, speed, versions)

Every file but metrics.jsonl is replaced atomically; metrics.jsonl is appended line by line.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import platform
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

import torch

from .errors import LmfixError
from .fsutil import append_line, read_json, write_json
from .tokenizer import SP_MODEL_FILE, VOCAB_FILE

LAST = "checkpoint.pt"
BEST = "best.pt"
RUN_FILES = ("config.json", "status.json", "metrics.jsonl", LAST, BEST, "summary.json",
             SP_MODEL_FILE, VOCAB_FILE)


def prepare(out: Path, force: bool = False) -> None:
    """Make ``out`` ready for a new run; an existing run there is kept unless ``force``."""
    if out.exists() and not out.is_dir():
        raise LmfixError(f"--out {out} exists and is not a directory")
    if (out / "config.json").exists() or (out / "status.json").exists():
        if not force:
            status = read_status(out).get("status", "unknown")
            raise LmfixError(f"{out} already holds a run ({status}); pass --resume to continue "
                             "it, --force to start over, or choose another --out")
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise LmfixError(f"cannot write to {out}: {e.strerror or e}") from None


def load_config(out: Path) -> dict:
    if not (out / "config.json").exists():
        raise LmfixError(f"{out} holds no run to resume (no config.json)")
    cfg = read_json(out / "config.json")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("train"), dict):
        raise LmfixError(f"{out / 'config.json'} is not an lmfix run config")
    return cfg


def write_config(out: Path, config: dict) -> None:
    write_json(out / "config.json", config)


def read_status(out: Path) -> dict:
    try:
        return json.loads((out / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def set_status(out: Path, status: str, error: str | None = None) -> None:
    write_json(out / "status.json", {"status": status, "error": error,
                                     "updated": _dt.datetime.now().isoformat(timespec="seconds")})


def log(out: Path, record: dict) -> None:
    append_line(out / "metrics.jsonl", json.dumps(record))


def finish(out: Path, summary: dict) -> None:
    write_json(out / "summary.json", summary)
    set_status(out, "finished")


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[], str | None]]:
    """SIGINT/SIGTERM set a flag the training loop polls, so it can checkpoint before exiting."""
    got: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum, frame):
        got.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: got[0] if got else None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
