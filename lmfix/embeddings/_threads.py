"""Run OpenBLAS single-threaded for a while (the SVD and QR steps of the embedding builds).

Measured on the 2-core machine while other processes kept it busy (load ≈ 2-4): with
OpenBLAS's default 2 threads, a QR of a 33,278 × 210 float32 matrix took 9.5 s and svds for 200
dimensions of the WikiText-2 PPMI 59 s; with 1 thread, 0.19 s and 24 s. The threads wait for
each other when one of them has lost its core. Sparse products (most of the work left) are
single-threaded in scipy anyway, so one BLAS thread costs little even on a quiet machine.

numpy and scipy each bundle an OpenBLAS; both are found through /proc/self/maps and set with
their ``*_set_num_threads`` entry points (what threadpoolctl does). Elsewhere this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Iterator

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "")


def _openblas_controls() -> list[tuple]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            mapped = {fields[-1] for fields in map(str.split, f) if len(fields) >= 6}
    except OSError:
        return []
    paths = sorted(p for p in mapped if "openblas" in p.lower() and ".so" in p)
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            names = [(f"{prefix}_get_num_threads{s}", f"{prefix}_set_num_threads{s}") for s in _SUFFIXES]
            found = next(((getattr(lib, g), getattr(lib, s)) for g, s in names
                          if hasattr(lib, g) and hasattr(lib, s)), None)
            if found:
                controls.append(found)
                break
    return controls


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Within the block, OpenBLAS uses at most ``n`` threads; the old setting is restored after."""
    controls = _openblas_controls()
    before = [get() for get, _ in controls]
    for (_, set_threads), old in zip(controls, before):
        set_threads(min(n, old))
    try:
        yield
    finally:
        for (_, set_threads), old in zip(controls, before):
            set_threads(old)
