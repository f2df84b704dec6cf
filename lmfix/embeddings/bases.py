"""Data-free fixed embeddings: a random orthogonal basis and a Hadamard basis.

Both return a V×d float32 matrix (row i is word i's vector) that depends only on
(V, d, seed); they are the "fixed classifier" of Hoffer, Hubara & Soudry (2018).

Example::

    >>> from lmfix.embeddings.bases import random_orthogonal, hadamard
    >>> Q = random_orthogonal(1000, 64, seed=0)
    >>> bool(abs(Q.T @ Q - __import__("numpy").eye(64)).max() < 1e-5)
    True
    >>> H = hadamard(1024, 64, seed=0)
    >>> sorted({round(float(x) * 8) for x in H.ravel()})   # entries ±1/sqrt(64)
    [-1, 1]
"""

from __future__ import annotations

import numpy as np

from ..errors import LmfixError

_ROW_CHUNK = 4096  # rows computed at a time in hadamard() to bound memory


def random_orthogonal(V: int, d: int, seed: int = 0) -> np.ndarray:
    """A V×d matrix with orthonormal columns, uniformly (Haar) distributed, seeded.

    QR of a seeded standard-Gaussian V×d matrix, with each column's sign flipped so that R
    has a positive diagonal (this makes Q unique, hence deterministic and Haar-distributed).
    Rows have norm sqrt(d/V) on average, not 1. Computed in float32 with torch: numpy's QR
    works in float64 and peaks at ≈0.6 GB for 33,278×512 (torch: ≈0.17 GB) in a run whose
    point is to save memory, for columns that are orthonormal to ~1e-6 either way.
    """
    _check_shape(V, d)
    if d > V:
        raise LmfixError(f"a random orthogonal basis needs dim ≤ vocabulary size, got dim {d} > {V}")
    import torch
    gaussian = torch.randn(V, d, generator=torch.Generator().manual_seed(seed))
    Q, R = torch.linalg.qr(gaussian)
    del gaussian
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    Q *= signs
    return Q.numpy()


def hadamard(V: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows 0..V−1 and d seeded columns of the Sylvester Hadamard matrix, scaled by 1/sqrt(d).

    H_N (N = 2^n, the smallest power of two ≥ max(V, d + 1)) has entries
    ``H[i, j] = (−1)^popcount(i & j)``; they are computed with bit operations, H_N is never
    built. Every entry of the result is ±1/sqrt(d), so every row has norm 1.

    Which columns: never column 0 (all ones). Column j of the truncation sees row i only
    through i & j, so the choice decides (a) whether rows stay distinct and (b) how
    orthogonal the columns stay:

    (a) Rows are distinct iff the chosen column indices, as n-bit vectors, let the rows be
        told apart; lmfix requires them to span GF(2)^n, which makes all N rows distinct
        (columns 1..d with d < 256 would span only 8 bits: 256 distinct rows). This needs
        d ≥ n = log2 N, which is also the least d for which 2^d ≥ V (when V > d).
    (b) V = N (a power of two): columns are exactly orthogonal. V < N: columns a and b have
        inner product S(a ⊕ b)/d with S(x) = Σ_{i<V} (−1)^popcount(i & x), and |S(x)| is
        at most V mod 2^(t+1), t = the lowest set bit of x. A plain random choice of columns
        is bad: for V = 33,278 (N = 65,536) two columns differing only in bit 15 have cosine
        0.97, and 512 random columns contain about two such pairs. So the d columns are
        drawn with *distinct residues mod 2^m* (2^m = the smallest power of two ≥ d; seeded
        residues, seeded random high bits), which keeps t < m for every pair and bounds
        every column cosine by (V mod 2^m) / V < 2^m / V < 2d / V. For WikiText-2
        (V = 33,278): ≤ 0.0076 at d = 200, ≤ 0.0153 at d = 512 (the tests check this
        bound; the largest cosine observed there is 6·10⁻⁵, seed 0, both dims).

    When V ≤ d, the V rows are d-dimensional ±1/sqrt(d) sign vectors; columns cannot all be
    orthogonal in R^V, but rows stay distinct and unit-norm.
    """
    _check_shape(V, d)
    n = (max(V, d + 1) - 1).bit_length()  # N = 2^n, the smallest power of two ≥ max(V, d + 1)
    if d < n:
        raise LmfixError(f"a {d}-column Hadamard basis has at most 2^{d} distinct rows, too few for "
                         f"{V} words; use dim ≥ {n}")
    columns = _hadamard_columns(n, d, np.random.default_rng(seed))
    out = np.empty((V, d), dtype=np.float32)
    scale = np.float32(1.0 / np.sqrt(d))
    for start in range(0, V, _ROW_CHUNK):
        rows = np.arange(start, min(start + _ROW_CHUNK, V), dtype=np.int64)
        parity = np.bitwise_count(rows[:, None] & columns[None, :]) & 1
        out[start:start + rows.size] = (1 - 2 * parity.astype(np.float32)) * scale
    return out


def _hadamard_columns(n: int, d: int, rng: np.random.Generator, tries: int = 1000) -> np.ndarray:
    """d distinct non-zero n-bit column indices, distinct mod 2^m, spanning GF(2)^n."""
    m = max(d - 1, 0).bit_length()  # smallest m with 2^m ≥ d
    for _ in range(tries):
        # Residues: non-zero ones if there are enough, else all 2^m (= d) of them.
        pool = np.arange(1, 1 << m) if (1 << m) - 1 >= d else np.arange(1 << m)
        residues = rng.permutation(pool)[:d].astype(np.int64)
        highs = rng.integers(0, 1 << (n - m), size=d, dtype=np.int64)
        zero = (residues == 0) & (highs == 0)
        highs[zero] = rng.integers(1, 1 << (n - m), size=int(zero.sum()), dtype=np.int64)
        columns = residues | (highs << m)
        if _gf2_rank(columns) == n:
            return columns
    raise LmfixError(f"could not draw {d} Hadamard columns giving distinct rows (n = {n}); "
                     "try another seed or a larger dim")


def _gf2_rank(values: np.ndarray) -> int:
    """Rank over GF(2) of integers seen as bit vectors (xor basis, one slot per top bit)."""
    basis: dict[int, int] = {}
    for value in values.tolist():
        while value:
            top = value.bit_length() - 1
            if top not in basis:
                basis[top] = value
                break
            value ^= basis[top]
    return len(basis)


def _check_shape(V: int, d: int) -> None:
    if not isinstance(V, (int, np.integer)) or V < 1:
        raise LmfixError(f"vocabulary size must be a positive integer, got {V!r}")
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise LmfixError(f"dim must be a positive integer, got {d!r}")
