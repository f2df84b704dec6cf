"""Multi-process training with PyTorch's DistributedDataParallel, launched by ``torchrun``.

The global batch (``--batch-size`` columns) is split across ranks by column: each column is an
independent sequence (see lmfix.data), so rank r simply owns columns r·B/W … (r+1)·B/W − 1, and
the averaged gradient equals the one-process gradient of the whole batch. Evaluation columns are
split the same way and the NLL sums all-reduced, so perplexity is exact.

Buffers, and why DDP must not broadcast them
--------------------------------------------
The only buffer an lmfix model has is the fixed embedding ``fixed_weight`` (V×d; embedding
``fixed``, with or without ``cosine``). The ``learned`` and ``learned-untied`` models, the LSTM,
the projection and the logit scale/bias have none (``named_buffers()`` is empty; the scale and
bias are parameters). A fixed embedding is never all-reduced as a gradient, which is the
paper's saving. But DDP's default, ``broadcast_buffers=True``, *broadcasts every buffer from rank
0 at the start of every training forward*: V×d×4 bytes per step, more than the learned
embedding's gradient all-reduce it was meant to save. :func:`wrap_ddp` turns that off
(``forward_sync_buffers=False`` where PyTorch has it, ≥ 2.13, else ``broadcast_buffers=False``).

Not syncing it is safe because the matrix never changes after construction (no gradient, no
optimizer, nothing writes it) and every rank builds it from the same file or seed.
:func:`check_same_buffers`, which :func:`wrap_ddp` calls first, verifies that once: a SHA-256 of
each buffer's bytes on every rank, and a :class:`LmfixError` if they differ. (With
``forward_sync_buffers=False`` DDP's constructor also broadcasts the buffers once from rank 0,
as it does the parameters; with the older ``broadcast_buffers=False`` it does not. Either way
the check runs before it.)

What is measured
----------------
``Dist.meter`` (a :class:`CommMeter`) adds up the bytes each rank hands to a collective, its
*payload*: the gradient buckets DDP all-reduces (counted by a communication hook that then runs
PyTorch's default all-reduce, so the averaging is unchanged) and lmfix's own collectives below
(all-reduce, all-gather; an object gather counts its pickled size). It is not wire traffic,
which depends on the algorithm (a ring all-reduce sends about 2(W−1)/W times the payload per
rank). Not counted: DDP's one-time parameter (and buffer) broadcast in its constructor.

Traffic is split into *during training steps* and *outside them* (evaluation, checkpoints,
setup). ``comm_bytes_per_step`` = bytes during steps / steps: for a clean run, the trainable
parameters' bytes (the gradient all-reduce) plus 16 bytes for the per-step stop check, plus a
few bytes per log interval. :func:`grad_bytes_per_step` is the arithmetic for the first term.

The training loop's calls::

    d = distributed.setup(device)
    net = distributed.wrap_ddp(model, device, d)   # checks the buffers; `model` when W = 1
    for each training step:
        ...                                        # forward/backward through `net`, opt.step()
        d.meter.step()                             # once per optimizer step
    with d.meter.outside_steps():                  # around evaluation, checkpoints, the end
        evaluate(...); _checkpoint(...)
    summary.update(d.meter.summary())              # comm_bytes_per_step, ... (JSON-ready)
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import os
import pickle
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .errors import LmfixError

GRAD = "ddp_grad"  # the meter's name for DDP's gradient-bucket all-reduces


@dataclass
class CommMeter:
    """Bytes this rank hands to collectives, during training steps and outside them.

    ``step()`` once per optimizer step; ``with outside_steps():`` around evaluation,
    checkpoints and anything after the loop; ``per_step()`` for the bytes per step. Traffic is
    kept by kind: ``"ddp_grad"`` (DDP's gradient buckets) and lmfix's collective's name
    (``"all_reduce_sum"``, ``"gather_columns"``, ``"gather_objects"``).
    """

    steps: int = 0
    step_bytes: dict[str, int] = field(default_factory=dict)
    other_bytes: dict[str, int] = field(default_factory=dict)
    _outside: int = field(default=0, repr=False)  # depth of nested outside_steps()

    def add(self, nbytes: int, kind: str) -> None:
        """Count ``nbytes`` of collective payload (called by the collectives, not the loop)."""
        book = self.other_bytes if self._outside else self.step_bytes
        book[kind] = book.get(kind, 0) + int(nbytes)

    def step(self, n: int = 1) -> None:
        """Count ``n`` training steps."""
        self.steps += n

    @contextlib.contextmanager
    def outside_steps(self):
        """Collectives inside this block are not training-step traffic (evaluation,
        checkpoints, setup). Nests."""
        self._outside += 1
        try:
            yield self
        finally:
            self._outside -= 1

    def per_step(self, kind: str | None = None) -> float | None:
        """Bytes during training steps per step (of one ``kind``, else all); None before the
        first step."""
        if not self.steps:
            return None
        total = self.step_bytes.get(kind, 0) if kind else sum(self.step_bytes.values())
        return total / self.steps

    def summary(self) -> dict:
        """The figures for summary.json."""
        return {"comm_bytes_per_step": self.per_step(),
                "comm_grad_bytes_per_step": self.per_step(GRAD),
                "comm_steps": self.steps,
                "comm_bytes_in_steps": dict(self.step_bytes),
                "comm_bytes_outside_steps": dict(self.other_bytes)}


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    meter: CommMeter = field(default_factory=CommMeter, compare=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup(device: torch.device) -> Dist:
    """Join the process group torchrun prepared (nccl on CUDA, gloo on CPU); else one process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
    # A bounded timeout, so a rank that died does not leave the others hanging for 30 minutes.
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return d


def shutdown(d: Dist, ok: bool = True) -> None:
    """Leave the group. After success, wait for every rank first: a rank that tears gloo down
    while another still talks to it can abort ("terminate called without an active
    exception"). After a failure, do not wait for ranks that may be gone."""
    if d.enabled and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


# --- DDP ---------------------------------------------------------------------------------

_DDP = torch.nn.parallel.DistributedDataParallel
# PyTorch 2.13 deprecated broadcast_buffers for forward_sync_buffers (which still syncs once
# at construction); older versions only have broadcast_buffers.
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(_DDP.__init__).parameters
                   else {"broadcast_buffers": False})


class _HookState:
    """What the communication hook needs: the meter, and the group to all-reduce over."""

    def __init__(self, meter: CommMeter, process_group=None):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        self.meter = meter
        self.process_group = process_group
        # PyTorch's reference hook: divide by the world size, then all-reduce (sum), as DDP
        # does without a hook, so the gradients are the same average.
        self.allreduce = default_hooks.allreduce_hook


def _counting_allreduce_hook(state: _HookState, bucket):
    # (bucket is left unannotated: DDP checks the annotation, and this module's are strings)
    buf = bucket.buffer()
    state.meter.add(buf.numel() * buf.element_size(), GRAD)
    return state.allreduce(state.process_group, bucket)


def wrap_ddp(model: torch.nn.Module, device: torch.device, d: Dist,
             check_buffers: bool = True) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel without per-step buffer broadcasts, its
    gradient all-reduces counted in ``d.meter``; ``model`` itself when ``d`` is one process.

    First verifies (:func:`check_same_buffers`, unless ``check_buffers=False``) that every rank
    holds the same buffers, since DDP will no longer overwrite them with rank 0's.
    """
    if not d.enabled:
        return model
    if check_buffers:
        check_same_buffers(model, d)
    device_ids = [device.index if device.index is not None else d.local_rank] \
        if device.type == "cuda" else None
    net = _DDP(model, device_ids=device_ids, **_NO_BUFFER_SYNC)
    net.register_comm_hook(_HookState(d.meter), _counting_allreduce_hook)
    return net


def _digest(t: torch.Tensor) -> str:
    raw = t.detach().reshape(-1).contiguous().cpu().view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def check_same_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Raise LmfixError unless every rank holds bit-identical buffers (the fixed embedding).

    Each rank hashes each buffer (SHA-256 of its bytes, with its shape and dtype) and all
    ranks compare the gathered hashes, so all of them raise together, none is left waiting.
    """
    if not d.enabled:
        return
    mine = {name: (tuple(b.shape), str(b.dtype), _digest(b)) for name, b in model.named_buffers()}
    with d.meter.outside_steps():
        every = gather_objects(mine, d)
    problems = []
    for name in sorted(set().union(*every)):
        seen: dict = {}  # (shape, dtype, digest) or None → ranks holding it
        for rank, bufs in enumerate(every):
            seen.setdefault(bufs.get(name), []).append(rank)
        if len(seen) > 1:
            parts = []
            for key, ranks in seen.items():
                who = ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
                what = "no such buffer" if key is None else \
                    f"{'×'.join(map(str, key[0]))} {key[1]} sha256 {key[2][:12]}"
                parts.append(f"{who}: {what}")
            problems.append(f"'{name}' ({'; '.join(parts)})")
    if problems:
        raise LmfixError(
            f"the processes hold different fixed buffers: {', '.join(problems)}. Every process "
            f"must build the same fixed embedding, e.g. an embedding file that differs between "
            f"machines would do this; use the same file (and lmfix/PyTorch versions) everywhere")


# --- lmfix's own collectives (counted in d.meter) -----------------------------------------

def shard_columns(data: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's columns of a batchified (rows × columns) tensor."""
    if not d.enabled:
        return data
    ncol = data.size(1)
    if ncol % d.world_size:
        raise LmfixError(f"batch size {ncol} is not divisible by the {d.world_size} processes")
    per = ncol // d.world_size
    return data[:, d.rank * per:(d.rank + 1) * per].contiguous()


def eval_columns(data: torch.Tensor, d: Dist) -> torch.Tensor:
    """Evaluation columns for this rank; uneven splits are fine since NLL sums are reduced."""
    if not d.enabled:
        return data
    return torch.tensor_split(data, d.world_size, dim=1)[d.rank].contiguous()


def all_reduce_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    d.meter.add(t.numel() * t.element_size(), "all_reduce_sum")
    dist.all_reduce(t)
    return t.tolist()


def gather_columns(t: torch.Tensor, d: Dist, dim: int) -> torch.Tensor:
    """Concatenate every rank's slice of a batch dimension (for the hidden state checkpoint)."""
    if not d.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(d.world_size)]
    d.meter.add(t.numel() * t.element_size(), "gather_columns")
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def gather_objects(obj, d: Dist) -> list:
    """Every rank's ``obj``. Counted as its pickled size plus the 8-byte size exchange
    (PyTorch pads every rank's bytes to the largest, so this is approximate); object gathers
    happen only at setup, checkpoints and the end."""
    if not d.enabled:
        return [obj]
    d.meter.add(len(pickle.dumps(obj)) + 8, "gather_objects")
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def grad_bytes_per_step(model: torch.nn.Module) -> int:
    """The *formula* for the gradient bytes each rank all-reduces per step: every trainable
    parameter, once (tied weights once; a fixed embedding is a buffer, so not at all).

    Arithmetic, not a measurement: the measured figure is ``Dist.meter``'s
    ``comm_bytes_per_step`` (``comm_grad_bytes_per_step`` for DDP's gradient buckets alone,
    which equals this when DDP all-reduces each trainable parameter once).
    """
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
