"""PPMI + SVD (lmfix.embeddings.pmi) against hand-computed values and SVD properties."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from lmfix.embeddings import pmi
from lmfix.errors import LmfixError

A, B, C = 0, 1, 2


def dense(m):
    return np.asarray(m.todense())


def test_counts_by_hand_fixed_window():
    # "a b a c", window 1: right pairs (a,b) (b,a) (a,c); the symmetric window adds their mirror.
    counts = dense(pmi.cooccurrence(np.array([A, B, A, C]), 3, window=1, dyn=False))
    expected = np.zeros((3, 3))
    expected[A, B] = expected[B, A] = 2  # a-b at positions (0,1) and (1,2)
    expected[A, C] = expected[C, A] = 1  # a-c at (2,3)
    np.testing.assert_array_equal(counts, expected)


def test_a_window_past_the_corpus_counts_as_the_whole_stream():
    # --window 99999999999999999999 overflowed len(range(...)) in tqdm: a traceback.
    ids = np.array([A, B, A, C])
    whole = dense(pmi.cooccurrence(ids, 3, window=3, dyn=False))
    for window in (4, 10**20):
        np.testing.assert_array_equal(dense(pmi.cooccurrence(ids, 3, window=window, dyn=False)),
                                      whole)
    assert dense(pmi.cooccurrence(np.array([A]), 3, window=10**20)).sum() == 0


def test_counts_by_hand_dynamic_window():
    # "a b c", window 2, dyn: distance 1 weighs 1, distance 2 weighs (2 - 2 + 1) / 2 = 0.5.
    counts = dense(pmi.cooccurrence(np.array([A, B, C]), 3, window=2, dyn=True))
    expected = np.array([[0, 1, 0.5], [1, 0, 1], [0.5, 1, 0]])
    np.testing.assert_allclose(counts, expected)
    # without dyn every distance weighs 1
    np.testing.assert_allclose(dense(pmi.cooccurrence(np.array([A, B, C]), 3, window=2, dyn=False)),
                               [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


def naive_counts(ids, V, window, dyn):
    """Reference: a Python loop over every token and every context position."""
    out = np.zeros((V, V))
    for i, w in enumerate(ids):
        for j in range(max(0, i - window), min(len(ids), i + window + 1)):
            if j != i:
                dist = abs(i - j)
                out[w, ids[j]] += (window - dist + 1) / window if dyn else 1.0
    return out


@pytest.mark.parametrize("window,dyn", [(1, False), (3, True), (5, True), (4, False)])
def test_vectorized_counts_match_a_loop(window, dyn):
    ids = np.random.default_rng(window).integers(0, 7, size=60)
    np.testing.assert_allclose(dense(pmi.cooccurrence(ids, 7, window=window, dyn=dyn)),
                               naive_counts(ids, 7, window, dyn), atol=1e-12)


def test_subsampling_is_seeded_and_drops_frequent_words():
    rng = np.random.default_rng(0)
    ids = np.where(rng.random(5000) < 0.5, 0, rng.integers(1, 50, 5000))  # word 0 is half the text
    full = pmi.cooccurrence(ids, 50, window=2, dyn=False)
    one = pmi.cooccurrence(ids, 50, window=2, dyn=False, sub=1e-2, seed=1)
    again = pmi.cooccurrence(ids, 50, window=2, dyn=False, sub=1e-2, seed=1)
    other = pmi.cooccurrence(ids, 50, window=2, dyn=False, sub=1e-2, seed=2)
    assert (one != again).nnz == 0 and (one != other).nnz > 0
    # keep probability of word 0 is sqrt(0.01 / 0.5) ≈ 0.14: its counts shrink a lot
    assert one[0].sum() < 0.3 * full[0].sum()
    assert (dense(one) <= dense(full) + 1e-12).all()


def hand_pmi(counts, cds, neg):
    """PMI cell by cell with plain Python arithmetic, straight from the definition."""
    V = len(counts)
    n_w = [sum(counts[w]) for w in range(V)]
    n_c = [sum(counts[w][c] for w in range(V)) ** cds for c in range(V)]
    total = sum(n_c)
    out = [[0.0] * V for _ in range(V)]
    for w in range(V):
        for c in range(V):
            if counts[w][c] > 0:
                value = math.log(counts[w][c] * total / (n_w[w] * n_c[c])) - math.log(neg)
                out[w][c] = max(value, 0.0)
    return out


def test_ppmi_by_hand_plain():
    # counts of "a b a c", window 1 (above): #(a)=3, #(b)=2, #(c)=1, total 6, cds 1:
    # PMI(a,b) = log(2·6 / (3·2)) = log 2, and likewise for (b,a), (a,c), (c,a).
    counts = pmi.cooccurrence(np.array([A, B, A, C]), 3, window=1, dyn=False)
    out = dense(pmi.ppmi(counts, cds=1.0, neg=1))
    expected = np.zeros((3, 3))
    expected[A, B] = expected[B, A] = expected[A, C] = expected[C, A] = math.log(2)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_ppmi_by_hand_cds_and_shift():
    counts = pmi.cooccurrence(np.array([A, B, A, C]), 3, window=1, dyn=False)
    # cds 0.75: contexts weigh 3^.75, 2^.75, 1; T = their sum ≈ 4.9613.
    T = 3 ** 0.75 + 2 ** 0.75 + 1
    pmi_ab = math.log(2 * T / (3 * 2 ** 0.75))  # ≈ 0.676
    pmi_ba = math.log(2 * T / (2 * 3 ** 0.75))  # ≈ 0.778
    pmi_ac = math.log(1 * T / (3 * 1))  # ≈ 0.503
    pmi_ca = math.log(1 * T / (1 * 3 ** 0.75))  # ≈ 0.778
    out = dense(pmi.ppmi(counts, cds=0.75, neg=1))
    assert out[A, B] == pytest.approx(pmi_ab, rel=1e-6)
    assert out[B, A] == pytest.approx(pmi_ba, rel=1e-6)
    assert out[A, C] == pytest.approx(pmi_ac, rel=1e-6)
    assert out[C, A] == pytest.approx(pmi_ca, rel=1e-6)
    # neg 2 subtracts log 2 ≈ 0.693: (a,b) and (a,c) become negative, so 0 and not stored.
    shifted = pmi.ppmi(counts, cds=0.75, neg=2)
    assert shifted.nnz == 2
    assert shifted[B, A] == pytest.approx(pmi_ba - math.log(2), rel=1e-5)
    assert shifted[C, A] == pytest.approx(pmi_ca - math.log(2), rel=1e-5)
    assert shifted[A, B] == 0 and shifted[A, C] == 0


def test_ppmi_matches_definition_on_random_counts():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, size=(6, 6)) * (rng.random((6, 6)) < 0.6)
    counts[4] = 0  # a word without context
    for cds, neg in [(1.0, 1), (0.75, 1), (0.5, 5)]:
        got = dense(pmi.ppmi(sp.csr_matrix(counts.astype(float)), cds=cds, neg=neg))
        np.testing.assert_allclose(got, hand_pmi(counts.tolist(), cds, neg), rtol=1e-5, atol=1e-6)
        assert np.isfinite(got).all() and (got[4] == 0).all()


def test_ppmi_in_small_blocks_keeps_empty_and_all_negative_rows_in_place(monkeypatch):
    """ppmi() writes each block's kept entries after the earlier blocks' and sets the row
    ends from them: rows with no counts or no positive PMI, at block edges too, stay empty."""
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 5, size=(40, 40)) * (rng.random((40, 40)) < 0.3)
    counts[[0, 7, 8, 21, 39]] = 0
    counts[13] = 1  # a row of uniform counts: its PMI is ≤ 0 throughout
    want = hand_pmi(counts.tolist(), 0.75, 1)
    for block in (1, 3, 10, 10**9):
        monkeypatch.setattr(pmi, "PPMI_BLOCK", block)
        got = pmi.ppmi(sp.csr_matrix(counts.astype(float)), cds=0.75, neg=1)
        assert got.has_canonical_format and got.nnz == np.count_nonzero(want)
        np.testing.assert_allclose(dense(got), want, rtol=1e-5, atol=1e-6)


def test_ppmi_rejects_bad_parameters():
    counts = sp.csr_matrix(np.ones((2, 2)))
    with pytest.raises(LmfixError):
        pmi.ppmi(counts, cds=0)
    with pytest.raises(LmfixError):
        pmi.ppmi(counts, neg=0)
    with pytest.raises(LmfixError):
        pmi.cooccurrence(np.array([0, 5]), 3)
    with pytest.raises(LmfixError):
        pmi.cooccurrence(np.array([0, 1]), 3, window=0)


def random_sparse(n, m, density, seed):
    return sp.random(n, m, density=density, format="csr", random_state=seed, dtype=np.float64)


@pytest.mark.parametrize("shape,dim,solver", [((40, 30), 30, "dense"), ((40, 30), 8, "dense"),
                                              ((300, 250), 12, "svds")])
def test_svd_properties(shape, dim, solver, monkeypatch):
    if solver == "svds":  # small matrices normally go to LAPACK; force the sparse solver
        monkeypatch.setattr(pmi, "_DENSE_SVD_MAX", 100)
    M = random_sparse(*shape, density=0.05, seed=1)
    U, S, Vt = pmi.svd(M, dim, seed=0)
    assert U.shape == (shape[0], dim) and S.shape == (dim,) and Vt.shape == (dim, shape[1])
    assert (np.diff(S) <= 1e-9).all()  # descending
    np.testing.assert_allclose(U.T @ U, np.eye(dim), atol=1e-8)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(dim), atol=1e-8)
    exact = np.linalg.svd(M.toarray(), compute_uv=False)
    np.testing.assert_allclose(S, exact[:dim], rtol=1e-8, atol=1e-10)
    if dim == min(shape):  # full rank: exact reconstruction
        np.testing.assert_allclose(U @ np.diag(S) @ Vt, M.toarray(), atol=1e-10)
    else:  # M v_i = s_i u_i for every computed pair
        np.testing.assert_allclose(M @ Vt.T, U * S, atol=1e-8)
    U2, S2, Vt2 = pmi.svd(M, dim, seed=0)
    np.testing.assert_array_equal(U, U2)  # deterministic, signs fixed


def test_svd_rejects_impossible_dims():
    M = random_sparse(10, 8, 0.5, 0)
    with pytest.raises(LmfixError):
        pmi.svd(M, 9)
    with pytest.raises(LmfixError):
        pmi.svd(M, 0)


def test_eig_weighting_and_w_plus_c():
    M = random_sparse(30, 30, 0.3, 2)
    U, S, Vt = pmi.svd(M, 5)
    np.testing.assert_allclose(pmi.vectors(U, S, Vt, eig=0), U, rtol=1e-6)
    np.testing.assert_allclose(pmi.vectors(U, S, Vt, eig=1), U * S, rtol=1e-6)
    np.testing.assert_allclose(pmi.vectors(U, S, Vt, eig=0.5), U * np.sqrt(S), rtol=1e-6)
    np.testing.assert_allclose(pmi.vectors(U, S, Vt, eig=0.5, w_plus_c=True),
                               U * np.sqrt(S) + Vt.T * np.sqrt(S), rtol=1e-5, atol=1e-7)
    assert pmi.vectors(U, S, Vt).dtype == np.float32


def test_words_without_context_give_zero_rows_not_nan():
    # word 3 never occurs; with neg large every PMI is ≤ 0 and the whole matrix is empty.
    ids = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    counts = pmi.cooccurrence(ids, 4, window=2)
    W = pmi.vectors(*pmi.svd(pmi.ppmi(counts), 3, seed=0))
    assert np.isfinite(W).all() and (W[3] == 0).all()
    empty = pmi.ppmi(counts, neg=1000)
    assert empty.nnz == 0
    W = pmi.vectors(*pmi.svd(empty, 2))
    assert np.isfinite(W).all() and (W == 0).all()


def test_pipeline_groups_words_by_context():
    # Two "topics" sharing no context: words 0-4 and words 5-9.
    rng = np.random.default_rng(0)
    ids = np.concatenate([rng.integers(0, 5, 200) if k % 2 == 0 else rng.integers(5, 10, 200)
                          for k in range(20)])
    W = pmi.vectors(*pmi.svd(pmi.ppmi(pmi.cooccurrence(ids, 10, window=2)), 4, seed=0))
    unit = W / np.linalg.norm(W, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert cos[:5, :5].mean() > cos[:5, 5:].mean() + 0.3


def test_extreme_cds_or_eig_is_an_error_not_nan_vectors():
    """--cds 1e300 made every PMI NaN (reported as "no positive PMI, neg too large"); --eig
    1e300 / -1e300 sent U·S^eig to 0 or inf (reported as "embeddings contain no words")."""
    ids = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 0] * 5)
    counts = pmi.cooccurrence(ids, 4, window=2)
    with pytest.raises(LmfixError, match="cds = 1e[+]300 is too large"):
        pmi.ppmi(counts, cds=1e300)
    assert np.isfinite(pmi.ppmi(counts, cds=50).data).all()  # large but representable
    U, S, Vt = pmi.svd(pmi.ppmi(counts), 3, seed=0)
    S = np.linspace(0.5, 3, len(S))  # both sides of 1: both signs of a huge eig overflow
    for eig in (1e300, -1e300):
        with pytest.raises(LmfixError, match="overflow float32"):
            pmi.vectors(U, S, Vt, eig=eig)
    small = S / (2 * S.max())  # every singular value below 1: S^1e300 = 0
    with pytest.raises(LmfixError, match="all zero"):
        pmi.vectors(U, small, Vt, eig=1e300)


# Issue 25: counting in blocks within a memory bound, and the large-matrix SVD.

def _markov_ids(n=60_000, V=400, seed=0):
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, V, (V, 4))
    ids = np.empty(n, dtype=np.int32)
    ids[0] = 0
    follow = rng.random(n) < 0.7
    pick, uni = rng.integers(0, 4, n), rng.zipf(1.3, n) % V
    for i in range(1, n):
        ids[i] = succ[ids[i - 1], pick[i]] if follow[i] else uni[i]
    return ids


def test_counting_in_blocks_is_bit_identical_to_one_block(monkeypatch):
    ids = _markov_ids()
    whole = pmi.cooccurrence(ids.astype(np.int64), 400, window=5, dyn=True, sub=1e-3, seed=2)
    monkeypatch.setattr(pmi, "COUNT_BLOCK", 997)  # blocks cut anywhere, pairs across them
    blocks = pmi.cooccurrence(ids, 400, window=5, dyn=True, sub=1e-3, seed=2)
    assert (whole != blocks).nnz == 0 and np.array_equal(whole.data, blocks.data)
    a, b = pmi.ppmi(whole), None
    monkeypatch.setattr(pmi, "PPMI_BLOCK", 50)
    b = pmi.ppmi(blocks)
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("blocks", [1, 3, 16, 1000])
def test_the_symmetric_sum_by_blocks_is_the_whole_sum_and_gives_memory_back(blocks):
    """right + right.T a row block at a time: the same values in the same places, and the
    operands' arrays emptied as it goes (scipy's sums return views, which cannot be resized:
    unhandled, the counting's peak stayed 5.9 GB instead of 4.0 on the 103M-token corpus)."""
    rng = np.random.default_rng(0)
    n = 300
    right = sp.csr_matrix((rng.random(5000), (rng.integers(0, n, 5000), rng.integers(0, n, 5000))),
                          shape=(n, n))
    right = right + 0.5 * right  # as in the offset loop: a view of a longer array
    assert not right.data.flags.owndata
    want = (right + right.T).tocsr()
    got = pmi._symmetric_sum(right, blocks=blocks)
    assert right.data.size == 0 and right.indices.size == 0  # given back
    assert got.has_sorted_indices
    got_sorted = got.copy()
    got_sorted.has_sorted_indices = False
    got_sorted.sort_indices()  # the flag is true: the indices were sorted already
    assert np.array_equal(got_sorted.indices, got.indices)
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)


def test_counting_past_the_memory_bound_is_one_clear_error():
    ids = _markov_ids(20_000)
    with pytest.raises(LmfixError, match="outgrow the memory bound.*smaller --window"):
        pmi.cooccurrence(ids, 400, window=5, memory_limit=10_000)
    pmi.cooccurrence(ids, 400, window=5, memory_limit=10**9)  # room enough: counts


def test_an_svd_that_cannot_fit_is_refused_before_it_starts():
    m = pmi.ppmi(pmi.cooccurrence(_markov_ids(20_000), 400))
    with pytest.raises(LmfixError, match="rank-50 SVD.*lower --dim"):
        pmi.check_svd_fits(m, 50, available=1_000_000)
    pmi.check_svd_fits(m, 50, available=10**10)


def test_the_large_matrix_svd_matches_the_exact_one(monkeypatch):
    """The float32, multi-threaded, tolerance-bounded PROPACK used above LARGE_NNZ finds the
    exact solve's singular values and subspace (on a matrix small enough to solve both)."""
    m = pmi.ppmi(pmi.cooccurrence(_markov_ids(), 400))
    U, S, Vt = pmi.svd(m, 30, seed=0)
    monkeypatch.setattr(pmi, "LARGE_NNZ", 100)
    monkeypatch.setattr(pmi, "_DENSE_SVD_MAX", 10)
    calls = []
    real = pmi._svd_large
    monkeypatch.setattr(pmi, "_svd_large", lambda *a: calls.append(1) or real(*a))
    U2, S2, Vt2 = pmi.svd(m, 30, seed=0)
    assert calls and U2.shape == U.shape and Vt2.shape == Vt.shape
    np.testing.assert_allclose(S2, S, rtol=1e-4)
    # the same top-20 subspace: principal angles' cosines ~1
    cos = np.linalg.svd(U[:, :20].T @ U2[:, :25], compute_uv=False)
    assert cos.min() > 0.999
    assert np.all(np.abs(U2).max(axis=0) == U2.max(axis=0))  # signs fixed as the exact path's


def test_the_large_matrix_svd_reorthogonalizes_with_classical_gram_schmidt(monkeypatch):
    """svds' PROPACK reorthogonalizes a vector at a time (modified Gram-Schmidt); the large
    path asks for classical Gram-Schmidt, 52 s of 273 s faster at WikiText-103's size. If
    scipy moves its private wrapper, this fails instead of the SVD silently slowing down."""
    import scipy.sparse.linalg._svdp as svdp
    m = pmi.ppmi(pmi.cooccurrence(_markov_ids(), 400))
    seen = []
    real = svdp._svdp
    monkeypatch.setattr(svdp, "_svdp", lambda *a, **k: seen.append(k) or real(*a, **k))
    monkeypatch.setattr(pmi, "LARGE_NNZ", 100)
    monkeypatch.setattr(pmi, "_DENSE_SVD_MAX", 10)
    U, S, Vt = pmi.svd(m, 30, seed=0)
    assert [k["cgs"] for k in seen] == [True] and S.shape == (30,)
    np.testing.assert_allclose(S, np.sort(S)[::-1])


def test_the_large_path_is_sized_for_its_float32_bases(monkeypatch):
    """At V = 268k, d = 512 the float64 arithmetic asked for 17.7 GB, refusing a 16 GB
    machine an SVD that needs about 8 GB in float32."""
    m = pmi.ppmi(pmi.cooccurrence(_markov_ids(20_000), 400))
    V, C = m.shape
    exact = m.nnz * 12 + 250 * (V + C) * 8 + 50 * (V + C) * 16
    large = m.nnz * 16 + 250 * (V + C) * 4 + 50 * (V + C) * 12
    assert large < exact
    between = int((large + exact) / 2 / 0.9)
    with pytest.raises(LmfixError, match="rank-50 SVD"):
        pmi.check_svd_fits(m, 50, available=between)  # the exact path's need is over it
    monkeypatch.setattr(pmi, "LARGE_NNZ", 100)
    pmi.check_svd_fits(m, 50, available=between)  # the large path's is under
