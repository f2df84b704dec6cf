"""Data-free bases: random orthogonal and Hadamard."""

import numpy as np
import pytest

from lmfix.embeddings.bases import hadamard, random_orthogonal
from lmfix.errors import LmfixError


def sylvester(N):
    """H_N by the textbook recursion H_2k = [[H, H], [H, -H]] (independent of the bit formula)."""
    H = np.array([[1]])
    while len(H) < N:
        H = np.block([[H, H], [H, -H]])
    return H


@pytest.mark.parametrize("V,d", [(500, 64), (64, 64), (1000, 1)])
def test_random_orthogonal_has_orthonormal_columns(V, d):
    Q = random_orthogonal(V, d, seed=3)
    assert Q.shape == (V, d) and Q.dtype == np.float32
    np.testing.assert_allclose(Q.T.astype(np.float64) @ Q, np.eye(d), atol=1e-5)


def test_random_orthogonal_is_deterministic_per_seed():
    np.testing.assert_array_equal(random_orthogonal(300, 20, 7), random_orthogonal(300, 20, 7))
    assert not np.allclose(random_orthogonal(300, 20, 7), random_orthogonal(300, 20, 8))


def test_random_orthogonal_rejects_dim_above_vocab():
    with pytest.raises(LmfixError, match="dim"):
        random_orthogonal(10, 11)


@pytest.mark.parametrize("V,d", [(64, 16), (1000, 32), (33, 200), (5, 3)])
def test_hadamard_columns_come_from_sylvester_and_skip_all_ones(V, d):
    H = hadamard(V, d, seed=0)
    N = 1 << (max(V, d + 1) - 1).bit_length()
    full = sylvester(N)[:V]
    signs = np.rint(H * np.sqrt(d)).astype(int)
    np.testing.assert_allclose(np.abs(H), 1 / np.sqrt(d), rtol=1e-6)  # entries ±1/sqrt(d)
    np.testing.assert_allclose(np.linalg.norm(H, axis=1), 1.0, rtol=1e-5)  # unit rows
    columns = {tuple(col) for col in full.T[1:]}  # every column of H_N but the all-ones one
    assert all(tuple(col) in columns for col in signs.T)
    if V > d:  # d different columns (with V ≤ d rows, columns of H_N can coincide on them)
        assert len({tuple(col) for col in signs.T}) == d


@pytest.mark.parametrize("V,d", [(64, 16), (1024, 100), (4096, 200)])
def test_hadamard_columns_orthogonal_when_vocab_is_power_of_two(V, d):
    H = hadamard(V, d, seed=1).astype(np.float64)
    np.testing.assert_allclose(H.T @ H, np.eye(d) * V / d, atol=1e-6)


@pytest.mark.parametrize("V,d", [(1000, 16), (5000, 64), (10000, 300), (33278, 200), (33278, 512),
                                 (40000, 100), (60000, 50)])
def test_hadamard_truncation_is_nearly_orthogonal_within_the_documented_bound(V, d):
    # Docstring: every column cosine ≤ (V mod 2^m) / V, 2^m the smallest power of two ≥ d.
    H = hadamard(V, d, seed=2).astype(np.float64)
    gram = H.T @ H * d / V  # cosines: columns have squared norm V/d
    np.fill_diagonal(gram, 0)
    m = (d - 1).bit_length()
    bound = (V % (1 << m)) / V
    assert np.abs(gram).max() <= bound + 1e-9
    assert bound < 2 * d / V


@pytest.mark.parametrize("V,d", [(1000, 10), (300, 200), (4096, 12), (33278, 16), (3, 8)])
def test_hadamard_rows_are_distinct(V, d):
    # d = 10 ≥ log2(1024): just enough bits; columns 1..d would give only 2^ceil(log2(d+1)) rows.
    H = hadamard(V, d, seed=0)
    assert len(np.unique(H, axis=0)) == V


def test_hadamard_is_deterministic_per_seed_and_rejects_too_few_columns():
    np.testing.assert_array_equal(hadamard(700, 40, 5), hadamard(700, 40, 5))
    assert not np.array_equal(hadamard(700, 40, 5), hadamard(700, 40, 6))
    with pytest.raises(LmfixError, match="distinct rows"):
        hadamard(1025, 10)  # 2^10 sign patterns < 1025 words
    with pytest.raises(LmfixError):
        hadamard(0, 4)
