"""Word vectors from a factorized shifted-PPMI matrix (Levy & Goldberg 2014; "hyperwords").

The pipeline reads as data flow, one function per arrow, hyper-parameters named as in
hyperwords (Levy, Goldberg & Dagan 2015)::

    ids (V-word token stream)
      ⇒ cooccurrence(window, dyn, sub)  ⇒ counts   V×V sparse, symmetric window
      ⇒ ppmi(cds, neg)                  ⇒ PPMI     V×V sparse, max(PMI − log neg, 0)
      ⇒ svd(dim)                        ⇒ U (V×dim), S (dim,), Vt (dim×V)
      ⇒ vectors(eig, w_plus_c)          ⇒ W = U·S^eig  (+ Vtᵀ·S^eig)   float32 V×dim

Everything is vectorized over the whole token stream (no Python loop over tokens): counting
takes one pass per window offset, so WikiText-2 (2.1M tokens, V = 33,278) counts in seconds.

Example::

    >>> import numpy as np
    >>> from lmfix.embeddings import pmi
    >>> ids = np.array([0, 1, 2, 0, 1, 3, 0, 1, 2])
    >>> counts = pmi.cooccurrence(ids, vocab_size=4, window=2)
    >>> U, S, Vt = pmi.svd(pmi.ppmi(counts, cds=0.75, neg=1), dim=2, seed=0)
    >>> pmi.vectors(U, S, Vt, eig=0.5).shape
    (4, 2)
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..errors import LmfixError
from ..flags import F32_MAX
from ._threads import blas_threads

# Below this size the SVD is done densely with LAPACK (exact, and svds cannot return all
# min(shape) components anyway).
_DENSE_SVD_MAX = 2000


def cooccurrence(
    ids: np.ndarray,
    vocab_size: int,
    window: int = 5,
    dyn: bool = True,
    sub: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> sp.csr_matrix:
    """Word–context co-occurrence counts of a token stream, as a V×V float64 CSR matrix.

    ``counts[w, c]`` sums, over every position i holding w and every j with
    1 ≤ |i − j| ≤ window holding c, the weight of distance |i − j|: 1 when ``dyn`` is off,
    ``(window − dist + 1) / window`` when it is on. That is the expected weight under
    word2vec's (and hyperwords' ``--dyn``) dynamic window, whose size is drawn uniformly
    from 1..window; lmfix uses the expectation, so counting needs no randomness.
    The matrix is symmetric. The stream is counted whole, so windows run across the
    ``<eos>`` tokens that end each line (``<eos>`` is an ordinary word here, as it is for the
    language model).

    ``sub`` > 0 subsamples frequent words as hyperwords does: a token of a word with corpus
    frequency f > sub is dropped with probability 1 − sqrt(sub / f) (seeded by ``seed``);
    dropped tokens keep their position ("dirty" subsampling, hyperwords' default), so
    distances do not change. ``sub = 0`` (default) keeps every token.

    Built one offset at a time: for offset o the pairs are (ids[:-o], ids[o:]), summed by a
    COO → CSR conversion; the transpose adds the left contexts.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise LmfixError(f"token ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if vocab_size < 1:
        raise LmfixError(f"vocab_size must be at least 1, got {vocab_size}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise LmfixError(f"token ids must lie in [0, {vocab_size}); found {ids.min()}..{ids.max()}")
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise LmfixError(f"window must be a positive integer, got {window!r}")
    if not 0 <= sub < 1:
        raise LmfixError(f"sub (subsampling threshold) must be in [0, 1), got {sub}")

    keep = _subsample_mask(ids, vocab_size, sub, seed) if sub > 0 else None
    shape = (vocab_size, vocab_size)
    right = sp.csr_matrix(shape, dtype=np.float64)  # counts[w, c] for c to the right of w
    # Offsets past the stream's length hold no pairs (and a huge --window would overflow len()).
    for offset in tqdm(range(1, min(window, ids.size - 1) + 1), desc="co-occurrence",
                       unit="offset", disable=not progress, leave=False):
        words, contexts = ids[:-offset], ids[offset:]
        if keep is not None:
            both = keep[:-offset] & keep[offset:]
            words, contexts = words[both], contexts[both]
        weight = (window - offset + 1) / window if dyn else 1.0
        pairs = sp.coo_matrix((np.ones(words.size), (words, contexts)), shape=shape).tocsr()
        right = right + weight * pairs  # tocsr() summed the repeated pairs
    counts = (right + right.T).tocsr()
    counts.sum_duplicates()
    counts.sort_indices()
    return counts


def _subsample_mask(ids: np.ndarray, vocab_size: int, sub: float, seed: int) -> np.ndarray:
    """True for the tokens kept by hyperwords-style subsampling (drop p = 1 − sqrt(sub/f))."""
    freq = np.bincount(ids, minlength=vocab_size) / ids.size
    drop = np.zeros(vocab_size)
    frequent = freq > sub
    drop[frequent] = 1.0 - np.sqrt(sub / freq[frequent])
    return np.random.default_rng(seed).random(ids.size) >= drop[ids]


def ppmi(counts: sp.spmatrix, cds: float = 0.75, neg: float = 1.0) -> sp.csr_matrix:
    """Shifted positive PMI of a co-occurrence matrix, as a V×V float32 CSR matrix.

    With #(w) = Σ_c counts[w, c] and the context counts #(c) = Σ_w counts[w, c] smoothed by
    ``cds`` (context distribution smoothing, α)::

        PMI(w, c)  = log( counts[w, c] · Σ_c' #(c')^α / (#(w) · #(c)^α) )
        PPMI(w, c) = max(PMI(w, c) − log(neg), 0)

    exactly as hyperwords' ``PositiveExplicit(neg, cds)``. Pairs never seen stay 0 (they are
    not stored); rows of words with no context stay empty, never NaN.
    """
    if not cds > 0:
        raise LmfixError(f"cds (context distribution smoothing) must be > 0, got {cds}")
    if not neg > 0:
        raise LmfixError(f"neg (PMI shift k) must be > 0, got {neg}")
    counts = sp.csr_matrix(counts, dtype=np.float64)
    counts.sum_duplicates()
    counts.eliminate_zeros()
    if counts.data.size and counts.data.min() < 0:
        raise LmfixError("co-occurrence counts must be non-negative")
    word_totals = np.asarray(counts.sum(axis=1)).ravel()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked below
        context_smoothed = np.asarray(counts.sum(axis=0)).ravel() ** cds
        total = context_smoothed.sum()
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        cols = counts.indices
        values = (np.log(counts.data) + np.log(total) - np.log(word_totals[rows])
                  - np.log(context_smoothed[cols]) - math.log(neg))
    # A huge α overflows #(c)^α: every PMI was NaN, reported as "no positive PMI".
    if not math.isfinite(total) or (values.size and not np.abs(values).max() <= F32_MAX):
        raise LmfixError(f"cds = {cds:g} is too large: context counts to that power overflow "
                         "(hyperwords uses 0.75)")
    positive = values > 0
    out = sp.csr_matrix((values[positive].astype(np.float32), (rows[positive], cols[positive])),
                        shape=counts.shape)
    out.sort_indices()
    return out


def svd(matrix: sp.spmatrix, dim: int, seed: int = 0, progress: bool = False):
    """Truncated SVD ``matrix ≈ U · diag(S) · Vt`` with the ``dim`` largest singular values.

    Returns float64 ``U`` (V×dim), ``S`` (dim,) sorted descending, ``Vt`` (dim×V). Signs are
    fixed so that each column of ``U`` has its largest-magnitude entry positive, which makes
    the result independent of the solver's sign choice. An all-zero matrix gives zeros.

    Solver: ``scipy.sparse.linalg.svds(solver="propack")`` (Lanczos bidiagonalization with
    partial reorthogonalization, like the SVDLIBC that hyperwords used) from a seeded start
    vector, with OpenBLAS single-threaded (see ``_threads``). Measured on WikiText-2's
    33,278 × 33,278 PPMI (window 5, dyn, cds 0.75: 4.39M non-zeros), on the 2-core machine
    while other jobs kept it busy (load 2-3), one BLAS thread:

        dim 200: PROPACK 11.0 s   ARPACK (svds default) 24.1 s   randomized 9.9 s
        dim 512: PROPACK 42.5 s   ARPACK 112 s                   randomized 37.7 s

    (randomized: Halko et al., 2·dim columns, 4 LU-normalized power iterations, float32.)
    PROPACK's singular values equal ARPACK's to 1e-14; the randomized ones are low by up to
    1.8% at the tail, and its 512-d vectors share only 90% of the top-10 cosine neighbours of
    200 frequent words with the exact ones. PROPACK is exact and nearly as fast, so lmfix
    uses it. Small matrices (min side ≤ 2000, or dim ≥ min side − 1) use dense LAPACK.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    small = min(matrix.shape)
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise LmfixError(f"dim must be a positive integer, got {dim!r}")
    if dim > small:
        raise LmfixError(f"dim {dim} is larger than the matrix ({matrix.shape[0]}×{matrix.shape[1]}); "
                         f"a rank-{dim} SVD needs at least {dim} words")
    if matrix.nnz == 0:
        return np.zeros((matrix.shape[0], dim)), np.zeros(dim), np.zeros((dim, matrix.shape[1]))
    with blas_threads(1):
        if small <= _DENSE_SVD_MAX or dim >= small - 1:
            U, S, Vt = scipy.linalg.svd(matrix.toarray(), full_matrices=False)
            U, S, Vt = U[:, :dim], S[:dim], Vt[:dim]
        else:
            from scipy.sparse.linalg import svds

            rng = np.random.default_rng(seed)
            v0 = rng.uniform(-1.0, 1.0, matrix.shape[0])
            with tqdm(total=1, desc=f"svd (PROPACK, dim {dim})", disable=not progress,
                      leave=False) as bar:
                U, S, Vt = svds(matrix, k=dim, v0=v0, solver="propack", rng=rng)
                bar.update(1)
            order = np.argsort(S)[::-1]
            U, S, Vt = U[:, order], S[order], Vt[order]
    return _fix_signs(np.ascontiguousarray(U), np.ascontiguousarray(S), np.ascontiguousarray(Vt))


def _fix_signs(U: np.ndarray, S: np.ndarray, Vt: np.ndarray):
    """Flip each singular pair so the largest-|·| entry of U's column is positive."""
    biggest = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[biggest, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs, S, Vt * signs[:, None]


def vectors(U: np.ndarray, S: np.ndarray, Vt: np.ndarray, eig: float = 0.5,
            w_plus_c: bool = False) -> np.ndarray:
    """Word vectors ``U · S^eig`` (float32); with ``w_plus_c`` the context vectors
    ``Vtᵀ · S^eig`` are added (hyperwords' ``--w+c``). ``eig = 0`` gives U alone, ``eig = 1``
    gives U·S. Rows are not normalized (hyperwords normalizes them; the language model
    rescales rows itself).
    """
    with np.errstate(over="ignore", divide="ignore"):  # checked just below
        weights = np.power(S, eig) if eig != 0 else np.ones_like(S)
        W = U * weights
        if w_plus_c:
            W = W + Vt.T * weights
    # A huge |eig| sends S^eig past float32, or to 0 for every nonzero S: refuse rather than
    # write inf vectors, or none ("--eig 1e300" was reported as "embeddings contain no words").
    # (A zero matrix has S = 0 and zero vectors: that is its answer, not an underflow.)
    overflow = not np.abs(W).max(initial=0.0) <= F32_MAX
    if overflow or (np.any(S > 0) and not np.any(weights[S > 0])):
        raise LmfixError(f"eig = {eig:g} makes the vectors U · S^eig "
                         f"{'overflow float32' if overflow else 'all zero'} (singular values "
                         f"{S.min():.3g} to {S.max():.3g}); the usual eig is 0 to 1 "
                         "(hyperwords: 0.5)")
    return np.ascontiguousarray(W, dtype=np.float32)
