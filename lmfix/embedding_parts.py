"""The input embedding and the output classifier as V×d tables built from parts.

    base (fixed buffer | learned parameter)  ⇒  part  ⇒  part …  ⇒  the V×d matrix

A :class:`EmbeddingTable` is a base matrix and trainable parts applied to it in order. Each
part says how it changes the whole matrix (``apply_weight``: the classifier needs all V rows)
and how it changes the rows of given ids (``apply_rows``: the input embedding looks up a
batch of rows, and never builds a V×d matrix for it). The parts (issue 14):

- :class:`TopRows` (``--learn-top K``): K trainable rows, initialized from the base's rows of
  the K most frequent training words, *replace* those rows; the other V − K stay as they are.
- :class:`LowRankDelta` (``--delta-rank R``): adds A·B̃, A (V×R) zero-initialized and B̃ (R×d)
  random (see its docstring for why B̃, not A, is the random one, and why the parameter
  trained is B = B̃ / 0.1).

Where gradients go. A fixed base is a *buffer*: it never requires grad, never enters the
optimizer and never gets a gradient or optimizer state. With trainable parts the combined
matrix does require grad, so the fused loss (:mod:`lmfix.loss`) computes one V×d gradient
for it, and autograd passes on only what the parts own: the K rows at ``ids`` for TopRows
(``index_put``'s backward), G·B̃ᵀ and Aᵀ·G for LowRankDelta; nothing reaches the buffer. With
no parts, ``weight()`` *is* the base tensor: a fixed tied model computes exactly what it did
before parts existed (no V×d gradient at all).

Which base each side has is the model's :class:`Layout`, chosen by ``--embedding`` and
``--fix`` (:data:`LAYOUTS`)::

    embedding        fix      input embedding          output classifier      tied
    learned          —        learned (±0.1 uniform)   = input                yes
    learned-untied   —        learned (±0.1 uniform)   learned V×nhid         no
    vectors          both     fixed (buffer)           = input (+ parts)      yes
    vectors          input    fixed (buffer)           learned, init vectors  no
    vectors          output   learned, init vectors    fixed (buffer)         no
    vectors          none     learned, init vectors    = input                yes

("vectors" is the model mode of given vectors: a file or a random basis; which of their sides
stay fixed is ``fix``, and :attr:`Layout.fixed` says it for every mode.) A fixed classifier
gets the learned global logit scale of the paper; a learned one does not need it.

Example::

    >>> import torch
    >>> base = torch.eye(4, 2)
    >>> top = TopRows(torch.tensor([2]), base[[2]], 4)
    >>> table = EmbeddingTable(base, [top])
    >>> torch.equal(table.weight(), base), torch.equal(table.embed(torch.tensor([2, 0])), base[[2, 0]])
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FIX_SIDES



@dataclass(frozen=True)
class Layout:
    """Which base each side of the model has: ``fixed`` (the given vectors, a buffer) or
    ``learned`` (a parameter); the output may also be ``tied`` (the input's table)."""

    input: str  # fixed | learned
    output: str  # fixed | learned | tied

    @property
    def tied(self) -> bool:
        return self.output == "tied"

    @property
    def output_base(self) -> str:
        """fixed | learned: the classifier's base, following a tie to the input."""
        return self.input if self.tied else self.output

    @property
    def has_fixed(self) -> bool:
        return "fixed" in (self.input, self.output)

    @property
    def fixed(self) -> str:
        """Which sides are fixed: both | input | output | none — the one meaning of "fixed"
        that summaries and reports show (a learned embedding: none)."""
        fixed_out = self.output_base == "fixed"
        if self.input == "fixed":
            return "both" if fixed_out else "input"
        return "output" if fixed_out else "none"


# (model mode, fix) -> layout. Learned modes take no fix (None); given vectors always one side
# of FIX_SIDES, resolved once where --fix is read (lmfix.embedding_spec.resolve_fix).
LAYOUTS = {
    ("learned", None): Layout("learned", "tied"),
    ("learned-untied", None): Layout("learned", "learned"),
    ("vectors", "both"): Layout("fixed", "tied"),
    ("vectors", "input"): Layout("fixed", "learned"),
    ("vectors", "output"): Layout("learned", "fixed"),
    ("vectors", "none"): Layout("learned", "tied"),
}


def layout(mode: str, fix: str | None = None) -> Layout:
    """The layout of model mode ``mode`` with ``fix``. ValueError for a combination that has
    none (``fix`` with a learned mode, or given vectors without a side)."""
    try:
        return LAYOUTS[(mode, fix)]
    except KeyError:
        raise ValueError(f"no layout for embedding {mode!r} with fix {fix!r}: fix applies to "
                         f"given vectors only and is one of {FIX_SIDES}") from None


class TopRows(nn.Module):
    """K trainable rows that replace the rows ``ids`` of the matrix below them.

    ``ids`` (a persistent int64 buffer: the checkpoint says which rows were trained) is in
    the caller's order, ``--learn-top`` gives the most frequent word first. ``weight`` is the
    K×d parameter, initialized from ``init`` (the fixed rows).
    """

    def __init__(self, ids: Tensor, init: Tensor, vocab_size: int):
        super().__init__()
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()
        if ids.numel() != len(init) or ids.unique().numel() != ids.numel():
            raise ValueError(f"TopRows needs {len(init)} distinct ids, got {ids.tolist()[:10]}")
        if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < vocab_size:
            raise ValueError(f"TopRows ids must be word ids below {vocab_size}")
        self.register_buffer("ids", ids.clone())
        # slot[v] = position of word v in ``weight``, -1 for rows left to the base. Derived
        # from ``ids``, so not saved (and rebuilt when a checkpoint's ids are loaded).
        self.register_buffer("slot", torch.empty(vocab_size, dtype=torch.long),
                             persistent=False)
        self._index_slots()
        self.weight = nn.Parameter(init.detach().float().clone())

    def _index_slots(self) -> None:
        self.slot.fill_(-1)
        self.slot[self.ids] = torch.arange(len(self.ids), device=self.ids.device)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._index_slots()

    def apply_weight(self, w: Tensor) -> Tensor:
        return w.index_put((self.ids,), self.weight)  # out of place: ``w`` is left as it is

    def apply_rows(self, ids: Tensor, rows: Tensor) -> Tensor:
        slot = self.slot[ids]
        mine = F.embedding(slot.clamp_min(0), self.weight)
        return torch.where((slot >= 0).unsqueeze(-1), mine, rows)


class LowRankDelta(nn.Module):
    """Adds A·B̃ to the matrix below it: A is V×R, zero at the start; B̃ = GAIN·B is R×d.

    With A = 0 the table starts exactly at the fixed vectors. B̃ must then be nonzero, or
    neither factor would ever get a gradient (dA = G·B̃ᵀ, dB̃ = Aᵀ·G, G the gradient of the
    V×d matrix). B̃ starts as N(0, 1/d), so E[B̃·B̃ᵀ] = I_R: a step on A moves the matrix by
    about G projected on B̃'s R-dimensional row space, the size of a learned row's own step in
    R of its d directions.

    B, the trained parameter, is B̃ / GAIN (GAIN = 0.1): the same function, but plain SGD then
    moves B̃ GAIN² = 100 times more slowly than A. B̃ is shared by every word, so at lr 20 its
    steps, multiplied by a growing A and by the learned logit scale, made the loss jump
    (measured on WikiText-2, d = 64, PMI, R = 4, SGD lr 20, 100 batches: validation
    perplexity 2,003 with GAIN = 1, the loss peaking at 48 and the logit scale driven below
    zero; 1,166 with GAIN = 0.1; the fixed embedding alone 892). LoRA+ (Hayou et al. 2024)
    likewise lets the zero-initialized factor learn faster than the random one. (LoRA, Hu et
    al. 2021, zeroes the other factor; here the per-word factor A is the zero one, so every
    row starts at its fixed vector.) B's init draws from the torch RNG: this part is built after
    all of the original modes' modules, so those consume the RNG as before.
    """

    GAIN = 0.1

    def __init__(self, vocab_size: int, dim: int, rank: int):
        super().__init__()
        self.A = nn.Parameter(torch.zeros(vocab_size, rank))
        self.B = nn.Parameter(torch.randn(rank, dim) / (dim ** 0.5 * self.GAIN))

    def apply_weight(self, w: Tensor) -> Tensor:
        return torch.addmm(w, self.A, self.B, alpha=self.GAIN)  # w + A·B̃, a new tensor

    def apply_rows(self, ids: Tensor, rows: Tensor) -> Tensor:
        return rows + self.GAIN * (F.embedding(ids, self.A) @ self.B)


class EmbeddingTable:
    """A V×d matrix: ``base`` with ``parts`` applied in order.

    A light view, made on each access from the model's own tensors (so ``model.to(device)``,
    which replaces buffers, never leaves it holding a stale one); it owns nothing.
    """

    def __init__(self, base: Tensor, parts: Sequence[nn.Module] = ()):
        self.base, self.parts = base, tuple(parts)

    def weight(self) -> Tensor:
        """The whole matrix (the classifier's weight); the base itself when there are no parts."""
        w = self.base
        for part in self.parts:
            w = part.apply_weight(w)
        return w

    def embed(self, ids: Tensor) -> Tensor:
        """Rows ``ids`` of :meth:`weight`, without building the whole matrix."""
        rows = F.embedding(ids, self.base)
        for part in self.parts:
            rows = part.apply_rows(ids, rows)
        return rows

    def tensors(self) -> list[Tensor]:
        """The base and every part's parameters: what the table is made of (for counting)."""
        return [self.base] + [p for part in self.parts for p in part.parameters()]


def top_ids(train_ids: Tensor, vocab_size: int, k: int) -> Tensor:
    """The ids of the ``k`` most frequent words of ``train_ids``, most frequent first (ties:
    the smaller id first, so the choice is deterministic)."""
    counts = torch.bincount(train_ids.flatten().long(), minlength=vocab_size)
    order = torch.sort(counts, descending=True, stable=True).indices
    return order[:k].clone()
