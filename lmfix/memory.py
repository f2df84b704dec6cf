"""How much memory a training run needs, and a refusal before it allocates what is not there.

``--emsize 10000000`` on WikiText-2 (V = 33,278) asks for a 1.3 TB embedding; torch then dies
with an allocator traceback. :func:`estimate_train_bytes` does the arithmetic first (pure
Python integers, nothing is allocated) and :func:`check_fits` turns "does not fit" into one
:class:`LmfixError` naming the estimate, its parts and the memory available.

Parameter and buffer counts are exact (they mirror :class:`lmfix.model.LM`; the tests
compare them with real models). The rest is an estimate of the training peak:

- gradients: one per trainable parameter (the fixed embedding is a buffer: none; its
  trainable parts, ``--learn-top`` rows and the ``--delta-rank`` factors, have theirs);
- optimizer state: SGD none (lmfix uses no momentum), Adam/AdamW two moments per parameter
  (``exp_avg``, ``exp_avg_sq``) and the foreach step's one parameter-sized temporary (the
  denominator ``sqrt(exp_avg_sq) + eps``), three in all;
- activations kept for backward over one bptt window, roughly
  ``bptt × batch × (10·nlayers·nhid + 2·emsize + 2·nhid [+ emsize with a projection])``
  floats: per LSTM layer and step the four gates, cell and hidden state and their
  intermediates (~10·nhid), plus the embedding and output with their dropout;
- loss: the fused loss (:mod:`lmfix.loss`) holds one chunk of ``default_chunk_rows`` × V
  logits (its gradient is computed in the same buffer, in place), the (bptt·batch) × d
  gradient of its input and, for a learned tied classifier, the V × d weight gradient saved in
  forward (the scaled copy backward returns becomes the parameter's gradient, counted there);
  an untied classifier's saved copy is freed before the input embedding's gradient is made,
  so it costs nothing beyond the gradients (unless nhid > emsize); a fixed table with trainable
  parts holds the combined V × d matrix, its saved gradient and the copy backward returns;
  with ``amp`` the plain form holds all bptt·batch × V logits (bfloat16, float32 log-softmax
  and its gradient);
- fixed buffer: the V × emsize frozen vectors of given vectors (one buffer whichever side,
  ``--fix``, keeps them fixed; none with ``--fix none``);
- token ids: 8 bytes a token used (train, valid and test as trained and scored): the
  corpus's int32 ids (memory-mapped from the id cache, resident once read) and their
  batchified int32 copy. WikiText-2: 20 MB; WikiText-103: 0.9 GB, more than a d = 200 model;
- build: given vectors (a file's or a basis) are held twice for a moment while the model is
  built, the table as read or made and the model's buffer; the V × d beyond the buffer
  counts where it exceeds the steps' working memory (gradients, optimizer, activations, loss),
  which is allocated only later;
- runtime (CPU): what a process that has imported torch touches once it trains, whatever the
  sizes: the kernels' code and workspaces, thread stacks, the allocator's slack. Measured at
  RUNTIME_BYTES_CPU, the part of the peak no term above explains at V = 33k-100k (below).

Checkpoints loaded at resume are transient and not counted. The best model, tested at the end, is mapped from its file after the
gradients and optimizer state are freed, so it adds nothing to the peak. Measured against
whole ``lmfix train`` processes (peak PSS less that of ``import torch, lmfix.train``) for
V = 33k, 100k and 268k, d = 200 and 512, learned tied, untied and fixed, SGD and AdamW:
docs/scale.md gives each figure beside its estimate. :func:`check_fits` leaves a further 10%
of the available memory as margin.
"""

from __future__ import annotations

import os

import torch

from .embedding_parts import Layout, layout
from .errors import LmfixError
from .loss import default_chunk_rows
from .model import EMBEDDING_MODES as MODES

_MEMINFO = "/proc/meminfo"
_CGROUP = "/sys/fs/cgroup"  # cgroup v2: a container's limit, which /proc/meminfo does not show
_DTYPES = {2: torch.bfloat16, 4: torch.float32, 8: torch.float64}
_LSTM_FLOATS_PER_UNIT = 10  # saved per layer, step, column and hidden unit (rough, see above)
PARTS = ("parameters", "gradients", "optimizer", "activations", "loss", "fixed_buffer", "data",
         "runtime", "build")
_PART_NAMES = {"parameters": "parameters", "gradients": "gradients", "optimizer": "optimizer state",
               "activations": "activations", "loss": "loss", "fixed_buffer": "fixed embedding",
               "data": "token ids", "runtime": "runtime",
               "build": "building the fixed table"}
_ID_BYTES = 4 * 2  # an int32 id, mapped, and its batchified copy
# Measured 2026-12-03 (2-core AMD EPYC, torch 2.13.0+cpu, scripts/bench_scale.py): a training
# process's peak less `import torch, lmfix.train`'s, less the other parts, at V = 33k and 100k,
# fixed and learned, d = 200 and 512: 130-170 MB. Not measured on a GPU, where the CUDA
# context lives in host memory and the device's own is not counted here.
RUNTIME_BYTES_CPU = 150_000_000
_ADAM_COPIES = 3  # exp_avg, exp_avg_sq and the step's temporary


# Gates per RNN cell: an LSTM's four (input, forget, cell, output), a GRU's three, an RNN's one.
_GATES = {"lstm": 4, "gru": 3, "rnn-tanh": 1, "rnn-relu": 1}


def core_params(model: str, d: int, h: int, nlayers: int, positions: str = "sinusoidal",
                context: int = 0) -> int:
    """Parameters of the sequence model between the two tables (closed forms, so an absurd
    --nlayers costs no loop)."""
    if model == "transformer":
        # per block: two LayerNorms (2d each), qkv (3d² + 3d), out proj (d² + d), feed-forward
        # d → h → d (2dh + h + d); then the final LayerNorm, and learned positions if any
        block = 4 * d + 4 * d * d + 4 * d + 2 * d * h + h + d
        return nlayers * block + 2 * d + (context * d if positions == "learned" else 0)
    # nn.LSTM/GRU/RNN layer l: weight_ih g·h × in_l (in_0 = d, else h), weight_hh g·h × h,
    # bias_ih and bias_hh g·h each.
    g = _GATES[model]
    return g * h * (d + h + 2) + (nlayers - 1) * g * h * (2 * h + 2) if nlayers > 0 else 0


def param_counts(vocab: int, emsize: int, nhid: int | None, nlayers: int,
                 embedding_mode: str, fix: str | None = None, learn_top: int = 0,
                 delta_rank: int = 0, model: str = "lstm", positions: str = "sinusoidal",
                 context: int = 0) -> dict[str, int]:
    """Trainable parameters and fixed buffer elements of ``LM`` (as ``count_params``).

    ``fix``, ``learn_top``, ``delta_rank``, ``model``, ``positions`` and ``context`` as in
    :class:`lmfix.model.ModelConfig`; the bases each side has come from
    :func:`lmfix.embedding_parts.layout`.
    """
    lay = _layout(embedding_mode, fix)
    V, d, h = vocab, emsize, nhid or emsize
    core_dim = d if model == "transformer" else h  # what the classifier reads
    out_dim = _out_dim(embedding_mode, d, core_dim)
    proj = core_dim * d + d if out_dim != core_dim else 0  # nn.Linear(nhid, emsize) to tie
    trainable = core_params(model, d, h, nlayers, positions, context) + proj + V  # + bias
    trainable += V * d if lay.input == "learned" else 0  # encoder
    trainable += V * out_dim if lay.output == "learned" else 0  # untied decoder
    trainable += 1 if lay.output_base == "fixed" else 0  # the learned logit scale
    trainable += learn_top * d + delta_rank * (V + d)  # the fixed table's trainable parts
    fixed = V * d if lay.has_fixed else 0  # one buffer, however many sides use it
    return {"trainable": trainable, "fixed": fixed}


def _layout(embedding_mode: str, fix: str | None) -> Layout:
    if embedding_mode not in MODES:
        raise LmfixError(f"embedding mode must be one of {', '.join(MODES)}, "
                         f"not {embedding_mode!r}")
    try:
        return layout(embedding_mode, fix)
    except ValueError as e:
        raise LmfixError(str(e)) from None


def _out_dim(embedding_mode: str, d: int, h: int) -> int:
    """Row size of the classifier: nhid for a learned untied one, else the embedding's d."""
    return h if embedding_mode == "learned-untied" else d


def estimate_train_bytes(vocab: int, emsize: int, nhid: int | None, nlayers: int,
                         batch_size: int, bptt: int, embedding_mode: str, optimizer: str,
                         eval_batch_size: int = 10, dtype_bytes: int = 4,
                         device_type: str = "cpu", amp: bool = False, fix: str | None = None,
                         learn_top: int = 0, delta_rank: int = 0, model: str = "lstm",
                         nhead: int = 2, positions: str = "sinusoidal",
                         tokens: int = 0) -> dict[str, int]:
    """Bytes of each part of a training run's peak (see the module docstring), and ``total``;
    ``tokens``: how many token ids the run holds (train, valid and test, as used)."""
    V, d, h = vocab, emsize, nhid or emsize
    counts = param_counts(V, d, h, nlayers, embedding_mode, fix, learn_top, delta_rank, model,
                          positions, bptt)
    lay = _layout(embedding_mode, fix)
    params = counts["trainable"] * dtype_bytes
    if optimizer not in ("sgd", "adam", "adamw"):
        raise LmfixError(f"--optimizer {optimizer!r}: use sgd, adam or adamw")
    core_dim = d if model == "transformer" else h
    out_dim = _out_dim(embedding_mode, d, core_dim)
    proj = d if out_dim != core_dim else 0
    rows = bptt * batch_size
    if model == "transformer":
        # per block and token: LayerNorm outputs, q/k/v, attention output, residuals (~12 d),
        # the feed-forward's two h-wide activations; and each head's T×T attention weights
        per_token = nlayers * (12 * d + 2 * h) + 4 * d + proj
        activations = (rows * per_token + nlayers * batch_size * nhead * bptt * bptt * 2) \
            * dtype_bytes
    else:
        activations = rows * (_LSTM_FLOATS_PER_UNIT * nlayers * h + 2 * d + 2 * h + proj) \
            * dtype_bytes
    if amp:
        logits = rows * V * (2 + 4 + 4)
    else:
        dtype = _DTYPES.get(dtype_bytes, torch.float32)
        device = torch.device(device_type)
        logits = max(min(default_chunk_rows(n, V, dtype, device), n) * V * dtype_bytes
                     for n in (rows, bptt * eval_batch_size))
    # A trainable classifier's V × d gradient is saved by the loss's forward; backward returns
    # a copy scaled by the incoming gradient, which autograd keeps as the parameter's gradient
    # (counted under gradients). A learned input table's own gradient is made after the saved
    # one is freed, so an untied model pays for the saved one only where it is the larger. A
    # fixed table with trainable parts is trainable as a whole but is no parameter: the
    # combined V × d matrix, its saved gradient and the returned copy are all held.
    has_parts = bool(learn_top or delta_rank)
    saved = V * out_dim * dtype_bytes if lay.output_base == "learned" else 0
    if lay.output_base == "learned" and not lay.tied and lay.input == "learned":
        saved = max(0, saved - V * d * dtype_bytes)
    if has_parts:
        saved = 3 * V * d * dtype_bytes
    loss = logits + saved + rows * (out_dim + 1) * dtype_bytes
    optimizer_bytes = 0 if optimizer == "sgd" else _ADAM_COPIES * params
    # Given vectors are held twice while the model is built (the table as read or made, and
    # the model's own copy, its buffer): one V × d more than training holds, of which the
    # steps' working memory, allocated only later, covers part.
    working = params + optimizer_bytes + activations + loss
    build = max(0, counts["fixed"] * dtype_bytes - working) if lay.has_fixed else 0
    parts = {"parameters": params, "gradients": params, "optimizer": optimizer_bytes,
             "activations": activations, "loss": loss,
             "fixed_buffer": counts["fixed"] * dtype_bytes, "data": tokens * _ID_BYTES,
             "runtime": RUNTIME_BYTES_CPU if device_type == "cpu" else 0, "build": build}
    parts["total"] = sum(parts.values())
    return parts


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Free memory on ``device`` now: MemAvailable (capped by a cgroup limit) for the CPU,
    free memory for a CUDA device, None where it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    if device.type != "cpu":
        return None
    free = _meminfo_available()
    limit = _cgroup_free()
    if limit is not None:
        free = limit if free is None else min(free, limit)
    return free


def _meminfo_available() -> int | None:
    try:
        with open(_MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_free() -> int | None:
    try:
        with open(os.path.join(_CGROUP, "memory.max")) as f:
            limit = f.read().strip()
        with open(os.path.join(_CGROUP, "memory.current")) as f:
            used = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


# V × dim float32 tables a build holds at its peak: gensim keeps the input vectors and the
# negative-sampling output weights, and lmfix copies the vectors out; a basis is built into
# one table and copied once when it is saved (PMI's dim is bounded by V: its SVD checks).
BUILD_COPIES = {"word2vec": 3, "hadamard": 2, "random-orthogonal": 2, "pmi": 2}


def check_vectors_fit(method: str, vocab: int, dim: int, available: int | None = None) -> None:
    """Refuse, in one :class:`LmfixError`, a ``build-embeddings`` whose vectors cannot fit in
    memory (``--dim 1e20`` made numpy or gensim die with "Maximum allowed dimension exceeded")."""
    need = BUILD_COPIES[method] * vocab * dim * 4
    if available is None:
        available = available_bytes("cpu")
    if available is not None and need > 0.9 * available:
        raise LmfixError(f"{method} vectors of {vocab:,} words × {dim:,} dimensions need about "
                         f"{format_bytes(need)} but only {format_bytes(available)} is "
                         "available; lower --dim")


def format_bytes(n: float) -> str:
    """``1331120000000`` → ``"1.3 TB"`` (decimal units, like the allocator's byte counts)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_fits(estimate: dict[str, int], device: str | torch.device = "cpu",
               margin: float = 0.9, available: int | None = None) -> None:
    """Raise :class:`LmfixError` if ``estimate["total"]`` exceeds ``margin`` × the memory
    available on ``device`` (``available`` overrides the measurement; unknown: no check)."""
    device = torch.device(device)
    if available is None:
        available = available_bytes(device)
    if available is None or estimate["total"] <= margin * available:
        return
    parts = ", ".join(f"{_PART_NAMES[k]} {format_bytes(estimate[k])}" for k in PARTS
                      if estimate.get(k))
    raise LmfixError(f"the model needs about {format_bytes(estimate['total'])} ({parts}) but only "
                     f"{format_bytes(available)} is available on {device}; lower --emsize, "
                     "--nhid, --nlayers, --batch-size or --bptt")
