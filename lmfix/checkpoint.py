"""Checkpoints: written atomically, read without executing pickled code.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers, so a planted
checkpoint cannot run code; anything it refuses is reported as a bad checkpoint.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LmfixError, first_line
from .fsutil import atomic_open


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict:
    """``mmap``: map the tensors from the file instead of reading them into memory (CPU only;
    for a state that is copied into a model at once, so that no second copy is resident)."""
    path = Path(path)
    if not path.is_file():
        raise LmfixError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True,
                           mmap=mmap and torch.device(map_location).type == "cpu")
    except pickle.UnpicklingError as e:
        raise LmfixError(f"checkpoint {path} was refused: it holds objects other than tensors "
                         f"and plain containers, which lmfix never loads ({first_line(e)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise LmfixError(f"checkpoint {path} is corrupt or truncated ({first_line(e)})"
                         ) from None
    if not isinstance(state, dict):
        raise LmfixError(f"checkpoint {path} is not an lmfix checkpoint")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as tensors and plain values (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
