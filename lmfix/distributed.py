"""Multi-process training with PyTorch's DistributedDataParallel, launched by ``torchrun``.

The global batch (``--batch-size`` columns) is split across ranks by column: each column is an
independent sequence (see lmfix.data), so rank r simply owns columns r·B/W … (r+1)·B/W − 1, and
the averaged gradient equals the one-process gradient of the whole batch. Evaluation columns are
split the same way and the NLL sums all-reduced, so perplexity is exact.

A fixed embedding is a buffer, not a parameter: DDP never all-reduces it. That is the paper's
"no gradient synchronization" saving, reported as ``grad_bytes_per_step``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import LmfixError


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

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
    dist.all_reduce(t)
    return t.tolist()


def gather_columns(t: torch.Tensor, d: Dist, dim: int) -> torch.Tensor:
    """Concatenate every rank's slice of a batch dimension (for the hidden state checkpoint)."""
    if not d.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(d.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def gather_objects(obj, d: Dist) -> list:
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def grad_bytes_per_step(model: torch.nn.Module) -> int:
    """Bytes of gradient each rank all-reduces per step: every trainable parameter, once."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
