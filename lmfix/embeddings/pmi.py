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
import os
from concurrent.futures import ThreadPoolExecutor

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
    memory_limit: int | None = None,
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

    Built one offset at a time: for offset o the pairs are (ids[:-o], ids[o:]), counted
    exactly (int64) by COO → CSR conversions of ``COUNT_BLOCK``-token blocks, then weighted;
    the transpose adds the left contexts. The matrices held stay within ``memory_limit``
    bytes (:class:`CountBound`; default the memory available), else an :class:`LmfixError`.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise LmfixError(f"token ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
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
    bound = CountBound(memory_limit)
    right = sp.csr_matrix(shape, dtype=np.float64)  # counts[w, c] for c to the right of w
    # Offsets past the stream's length hold no pairs (and a huge --window would overflow len()).
    offsets = list(range(1, min(window, ids.size - 1) + 1))
    # Two threads count (scipy's COO -> CSR conversion releases the GIL), each half of an
    # offset's blocks, so both stay busy for an odd number of offsets too (5 offsets two at a
    # time left one thread idle for a fifth of the counting). The halves are exact integer
    # counts, so their sum is the one-pass count; offsets are added in order, so the weighted
    # sums are the one-at-a-time ones, bit for bit.
    tasks = [(o, half) for o in offsets for half in (0, 1)]
    with ThreadPoolExecutor(2) as pool, tqdm(total=len(offsets), desc="co-occurrence",
                                               unit="offset", disable=not progress,
                                               leave=False) as bar:
        def count(task):
            offset, half = task
            return pool.submit(_offset_counts, ids, keep, offset, shape, bound, right.nnz, half)
        pending = [count(t) for t in tasks[:2]]
        for i, offset in enumerate(offsets):
            halves = [pending.pop(0).result() for _ in (0, 1)]
            pending += [count(t) for t in tasks[2 * i + 2: 2 * i + 4]]
            pairs = halves[0] + halves[1]
            del halves
            weight = (window - offset + 1) / window if dyn else 1.0
            right = right + weight * pairs  # exact integer counts, weighted as one matrix
            del pairs
            bound.check(right.nnz, "counting")
            bar.update(1)
    counts = _symmetric_sum(right)
    del right
    return counts


def _symmetric_sum(right: sp.csr_matrix, blocks: int = 16) -> sp.csr_matrix:
    """``right + right.T`` as canonical CSR, consuming ``right`` (its arrays are emptied).

    One sum of the whole matrices held both operands and arrays for nnz(right) + nnz(right.T)
    entries: 48 bytes per one-sided non-zero, the counting's peak (5.94 GB process RSS on
    the WikiText-103-sized corpus). Here the sum is taken a row block at a time from the
    last, each block cut to its non-zeros, and the operands' arrays are shrunk (``resize``:
    the allocator gives the tail back) as their rows are used; the blocks are then copied
    into place one by one and dropped. The peak is then the offset loop's (4.03 GB). The
    values are the same sums, in the same places."""
    _own(right)
    t = right.T.tocsr()
    _own(t)
    cuts = _row_cuts(right, blocks)
    done = []
    for a, b in zip(cuts[-2::-1], cuts[:0:-1]):
        block = _rows(right, a, b) + _rows(t, a, b)
        done.append((block.data[: block.nnz].copy(), block.indices[: block.nnz].copy(),
                     np.diff(block.indptr)))
        del block
        _shrink(right, right.indptr[a])
        _shrink(t, t.indptr[a])
    del t
    done.reverse()
    total = sum(d.size for d, _, _ in done)
    data = np.empty(total, dtype=np.float64)
    indices = np.empty(total, dtype=np.result_type(*(i.dtype for _, i, _ in done)))
    row_nnz, at = [], 0
    for k, (d, i, r) in enumerate(done):
        data[at: at + d.size], indices[at: at + d.size] = d, i
        at += d.size
        row_nnz.append(r)
        done[k] = None  # the block's copy is in place: let it go
    indptr = np.concatenate(([0], np.cumsum(np.concatenate(row_nnz))))
    counts = sp.csr_matrix((data, indices, indptr), shape=right.shape)
    counts.has_sorted_indices = True  # each block's sum is canonical
    return counts


def _rows(m: sp.csr_matrix, a: int, b: int) -> sp.csr_matrix:
    """Rows a..b of ``m`` as a CSR matrix over views of its arrays."""
    lo, hi = m.indptr[a], m.indptr[b]
    return sp.csr_matrix((m.data[lo:hi], m.indices[lo:hi], m.indptr[a: b + 1] - lo),
                         shape=(b - a, m.shape[1]))


def _own(m: sp.csr_matrix) -> None:
    """Give ``m`` data and indices arrays that own their memory, so that :func:`_shrink` can
    hand it back. scipy's results are often views of the start of an array (its capacity, or
    the same length): that array is taken instead and cut to length in place; any other
    view is copied."""
    for name in ("data", "indices"):
        arr = getattr(m, name)
        if arr.flags.owndata:
            continue
        owner = arr.base
        if (isinstance(owner, np.ndarray) and owner.flags.owndata and owner.ndim == 1
                and owner.dtype == arr.dtype and arr.flags.c_contiguous
                and owner.ctypes.data == arr.ctypes.data):
            size = arr.size
            setattr(m, name, owner)
            del arr  # the last view: nothing points into the array as it is resized
            owner.resize(size, refcheck=False)
        else:
            setattr(m, name, arr.copy())


def _shrink(m: sp.csr_matrix, size: int) -> None:
    """Cut ``m``'s data and indices to their first ``size`` entries in place (no views of
    them are alive: the block's were dropped); an array that does not own its memory is
    left as it is."""
    for name in ("data", "indices"):
        try:
            getattr(m, name).resize(int(size), refcheck=False)
        except ValueError:
            pass


# Tokens per block when counting: the block's pairs (three 4-byte arrays) and their CSR form
# are the counting's working memory beyond the matrices, ~0.2 GB.
COUNT_BLOCK = 10_000_000


def _offset_counts(ids: np.ndarray, keep: np.ndarray | None, offset: int, shape: tuple,
                   bound: CountBound, held: int, half: int = 0) -> sp.csr_matrix:
    """How often each (ids[i], ids[i + offset]) pair occurs in the first (``half`` 0) or
    second (1) half of the stream's blocks, as exact integer counts (int32 while no count can
    pass it), summed block by block so that no array of the whole stream's pairs is made."""
    dtype = np.int32 if ids.size < 2**31 else np.int64
    total = sp.csr_matrix(shape, dtype=dtype)
    n = ids.size - offset
    starts = range(0, n, COUNT_BLOCK)
    cut = (len(starts) + 1) // 2
    for start in (starts[:cut] if half == 0 else starts[cut:]):
        stop = min(n, start + COUNT_BLOCK)
        words, contexts = ids[start:stop], ids[start + offset: stop + offset]
        if keep is not None:
            both = keep[start:stop] & keep[start + offset: stop + offset]
            words, contexts = words[both], contexts[both]
        block = sp.coo_matrix((np.ones(words.size, dtype=dtype), (words, contexts)),
                              shape=shape).tocsr()  # tocsr() sums the repeated pairs
        total = total + block
        del block
        bound.check(held + total.nnz, "counting")
    return total


class CountBound:
    """The memory bound of counting. Its peak is in the offset loop: the one-sided sum so
    far, an offset's pairs (int32) and their weighted float64 copy, the new sum's arrays
    (sized for both) and the next offset's halves being counted, measured 3.21 GB above the
    interpreter and the token ids for 110.6M one-sided non-zeros (29 bytes each) on the
    WikiText-103-sized synthetic corpus; the symmetric sum at the end stays below it (24
    bytes a non-zero and a block: :func:`_symmetric_sum`). Counting must stay within
    ``limit`` bytes (default: the memory available when it starts, less 10%); past it, it
    stops with an error that names what to change, before the machine swaps."""

    BYTES_PER_NNZ = 32

    def __init__(self, limit: int | None = None):
        if limit is None:
            from ..memory import available_bytes
            free = available_bytes("cpu")
            limit = int(0.9 * free) if free is not None else None
        self.limit = limit

    def need(self, nnz: int) -> int:
        return self.BYTES_PER_NNZ * nnz

    def check(self, nnz: int, stage: str) -> None:
        if self.limit is not None and self.need(nnz) > self.limit:
            from ..memory import format_bytes
            raise LmfixError(
                f"the co-occurrence counts outgrow the memory bound while {stage}: {nnz:,} "
                f"word-context pairs so far need about {format_bytes(self.need(nnz))}, over "
                f"{format_bytes(self.limit)}; count fewer pairs (a smaller --window, or "
                f"subsampling with --sub 1e-5) or use a machine with more memory")


def _subsample_mask(ids: np.ndarray, vocab_size: int, sub: float, seed: int) -> np.ndarray:
    """True for the tokens kept by hyperwords-style subsampling (drop p = 1 − sqrt(sub/f)),
    drawn block by block from one seeded stream (the same draws as one call)."""
    freq = np.bincount(ids, minlength=vocab_size) / ids.size
    drop = np.zeros(vocab_size)
    frequent = freq > sub
    drop[frequent] = 1.0 - np.sqrt(sub / freq[frequent])
    rng = np.random.default_rng(seed)
    keep = np.empty(ids.size, dtype=bool)
    for start in range(0, ids.size, COUNT_BLOCK):
        block = ids[start: start + COUNT_BLOCK]
        keep[start: start + block.size] = rng.random(block.size) >= drop[block]
    return keep


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
    # A huge α overflows #(c)^α: every PMI was NaN, reported as "no positive PMI".
    if not math.isfinite(total):
        raise _cds_overflow(cds)
    # The logarithms of the totals once a word, not once a non-zero (the same values: log is
    # taken of the same numbers, which only gathered them first): 3 logs a non-zero were
    # 2/3 of ppmi()'s time on a WikiText-103-sized matrix (docs/scale.md).
    with np.errstate(divide="ignore"):
        log_words, log_contexts, log_total = np.log(word_totals), np.log(context_smoothed), np.log(total)
    # Row blocks of ~PPMI_BLOCK non-zeros: the float64 temporaries of the formula are the
    # block's, not the matrix's (the values are the same, element by element). Two threads
    # compute blocks (numpy's loops release the GIL) while this one writes their kept entries,
    # in order, straight into arrays sized for every count (only the pages written become
    # memory), cut to length at the end: no list of blocks to concatenate.
    n_rows = counts.shape[0]
    cuts = _row_cuts(counts, -(-counts.nnz // PPMI_BLOCK) or 1).tolist()
    shift = math.log(neg)

    def kept_entries(row: int, end: int):
        lo, hi = counts.indptr[row], counts.indptr[end]
        rows = np.repeat(np.arange(row, end), np.diff(counts.indptr[row: end + 1]))
        cols = counts.indices[lo:hi]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            values = (np.log(counts.data[lo:hi]) + log_total - log_words[rows]
                      - log_contexts[cols] - shift)
        if values.size and not np.abs(values).max() <= F32_MAX:
            raise _cds_overflow(cds)
        positive = values > 0
        # each row's end: the positives before it in the block
        before = np.concatenate([[0], np.cumsum(positive)])[counts.indptr[row + 1: end + 1] - lo]
        return values[positive].astype(np.float32), cols[positive], before

    data = np.empty(counts.nnz, dtype=np.float32)
    indices = np.empty(counts.nnz, dtype=counts.indices.dtype)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    kept = 0
    blocks = list(zip(cuts[:-1], cuts[1:]))
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(kept_entries, *b) for b in blocks[:2]]  # two blocks in flight
        for i, (row, end) in enumerate(blocks):
            values, cols, before = pending.pop(0).result()
            if i + 2 < len(blocks):
                pending.append(pool.submit(kept_entries, *blocks[i + 2]))
            data[kept: kept + values.size] = values
            indices[kept: kept + values.size] = cols
            indptr[row + 1: end + 1] = kept + before
            kept += values.size
            del values, cols, before
    data.resize(kept, refcheck=False)
    indices.resize(kept, refcheck=False)
    out = sp.csr_matrix((data, indices, indptr), shape=counts.shape)
    out.sort_indices()
    return out


PPMI_BLOCK = 10_000_000  # non-zeros per block of rows in ppmi(), two in flight


def _cds_overflow(cds: float) -> LmfixError:
    return LmfixError(f"cds = {cds:g} is too large: context counts to that power overflow "
                      "(hyperwords uses 0.75)")


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
    matrix = sp.csr_matrix(matrix)
    small = min(matrix.shape)
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise LmfixError(f"dim must be a positive integer, got {dim!r}")
    if dim > small:
        raise LmfixError(f"dim {dim} is larger than the matrix ({matrix.shape[0]}×{matrix.shape[1]}); "
                         f"a rank-{dim} SVD needs at least {dim} words")
    if matrix.nnz == 0:
        return np.zeros((matrix.shape[0], dim)), np.zeros(dim), np.zeros((dim, matrix.shape[1]))
    check_svd_fits(matrix, dim)
    if matrix.nnz > LARGE_NNZ and not (small <= _DENSE_SVD_MAX or dim >= small - 1):
        return _fix_signs(*_svd_large(matrix, dim, seed, progress))
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
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


# Above this many non-zeros (WikiText-2's PPMI has 4.4M; a WikiText-103-sized corpus's 144M)
# the exact solve costs more than its exactness is worth: see _svd_large.
LARGE_NNZ = 20_000_000
LARGE_TOL = 3e-3  # svds squares it: PROPACK asked for singular values to ~1e-5 relative


def _svd_large(matrix: sp.csr_matrix, dim: int, seed: int, progress: bool):
    """PROPACK on a large PPMI matrix, its products computed in float32 by several threads
    (scipy's sparse products release the GIL), to relative tolerance LARGE_TOL.

    Lanczos costs a product with the matrix and one with its transpose per step, each a pass
    over every non-zero, and a WikiText-103-sized matrix needs ~1,000 steps: the products are
    the time. float32 halves their memory traffic and each thread takes a row block; the
    exact path's tolerance (machine precision) would need many more steps for changes far
    below what an embedding's 200 dimensions can show (accuracy measured in pmi's tests and
    docs/embeddings.md).

    PROPACK reorthogonalizes with classical Gram-Schmidt (two matrix-vector products with the
    Lanczos basis) rather than svds' modified Gram-Schmidt (a vector at a time): on the
    WikiText-103-sized matrix the SVD took 221 s instead of 273 s, singular values within
    5e-6 and the same subspace (docs/scale.md). svds does not pass that option on, so this
    calls its PROPACK wrapper directly, with svds' own arguments otherwise."""
    from scipy.sparse.linalg import LinearOperator

    a = sp.csr_matrix(matrix, dtype=np.float32)
    threads = max(1, min(4, os.cpu_count() or 1))
    # the transpose as CSR too (8 more bytes a non-zero): each thread then gathers its own
    # rows of the result, as for the matrix, instead of scattering into a shared one
    parts, t_parts = _row_blocks(a, threads), _row_blocks(a.T.tocsr(), threads)
    pool = ThreadPoolExecutor(threads)

    def product(blocks, x):
        x = np.asarray(x, dtype=np.float32).ravel()
        return np.concatenate(list(pool.map(lambda p: p @ x, blocks)))

    # A float32 operator: PROPACK then works in single precision throughout, its
    # reorthogonalization set for float32's rounding (float32 products under a float64
    # Lanczos lose orthogonality unseen, and the top singular value comes back many times).
    op = LinearOperator(a.shape, matvec=lambda x: product(parts, x),
                        rmatvec=lambda y: product(t_parts, y), dtype=np.float32)
    rng = np.random.default_rng(seed)
    v0 = rng.uniform(-1.0, 1.0, a.shape[0]).astype(np.float32)
    try:
        with blas_threads(1), tqdm(total=1, desc=f"svd (PROPACK, dim {dim}, float32 products)",
                                   disable=not progress, leave=False) as bar:
            U, S, Vt = _propack(op, dim, LARGE_TOL, v0, rng)
            bar.update(1)
    finally:
        pool.shutdown()
    del op, parts, t_parts  # the transposed copy
    # U and Vt are views of PROPACK's Lanczos bases (~765 vectors a side here): take the dim
    # columns out first, so the bases are freed before the float64 copies are made (made
    # the other way, the end of the SVD was the build's peak, ~1 GB above the Lanczos steps)
    order = np.argsort(S)[::-1]
    U = U[:, order]
    Vt = Vt[order]
    return (np.ascontiguousarray(U, dtype=np.float64), np.asarray(S[order], dtype=np.float64),
            np.ascontiguousarray(Vt, dtype=np.float64))


def _propack(op, dim: int, tol: float, v0: np.ndarray, rng):
    """svds(op, k=dim, tol=tol, v0=v0, solver="propack", rng=rng), with classical
    Gram-Schmidt; svds itself where scipy's private wrapper has moved (same answer, slower)."""
    try:
        from scipy.sparse.linalg._svdp import _svdp
    except ImportError:
        from scipy.sparse.linalg import svds
        return svds(op, k=dim, tol=tol, v0=v0, solver="propack", rng=rng)
    # svds' call for which="LM": tol squared, no implicit restarts, up to 10·dim steps
    U, S, Vt, _ = _svdp(op, k=dim, tol=tol**2, which="LM", irl_mode=False, v0=v0, rng=rng,
                        cgs=True)
    return U, S, Vt


def _row_cuts(a: sp.csr_matrix, n: int) -> np.ndarray:
    """Row indices 0 = c₀ < … < c_k = rows cutting ``a`` into up to ``n`` blocks of about
    equal non-zeros."""
    return np.unique(np.searchsorted(a.indptr, np.linspace(0, a.nnz, n + 1)[1:-1]).tolist()
                     + [0, a.shape[0]])


def _row_blocks(a: sp.csr_matrix, n: int) -> list[sp.csr_matrix]:
    """``a`` cut into ``n`` row blocks of about equal non-zeros, sharing its arrays."""
    cuts = _row_cuts(a, n)
    return [_rows(a, r, e) for r, e in zip(cuts[:-1], cuts[1:])]


def check_svd_fits(matrix: sp.spmatrix, dim: int, available: int | None = None) -> None:
    """Refuse, in one line, an SVD whose memory is not there: the matrix as the solver holds
    it and PROPACK's Lanczos bases (up to 10·dim vectors of each side; it uses those it
    needs, ~4-5·dim on the PPMI matrices measured), plus U, S, Vt. The exact path works in
    float64; the large one holds a float32 matrix and its transpose (16 bytes a non-zero),
    float32 bases, and U, Vt in float32 and then float64."""
    from ..memory import available_bytes, format_bytes
    V, C = matrix.shape
    steps = 5 * dim
    if matrix.nnz > LARGE_NNZ:
        need = matrix.nnz * 16 + steps * (V + C) * 4 + dim * (V + C) * (4 + 8)
    else:
        need = matrix.nnz * 12 + steps * (V + C) * 8 + dim * (V + C) * 8 * 2
    if available is None:
        available = available_bytes("cpu")
    if available is not None and need > 0.9 * available:
        raise LmfixError(f"a rank-{dim} SVD of the {V:,} × {C:,} PPMI matrix ({matrix.nnz:,} "
                         f"non-zeros) needs about {format_bytes(need)}, but only "
                         f"{format_bytes(available)} is available; lower --dim (or count fewer "
                         "pairs: a smaller --window)")


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
