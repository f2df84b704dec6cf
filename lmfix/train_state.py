"""What a training run works with, where it is, and what happens beside each step.

:mod:`lmfix.train` holds the loop a reader of the PyTorch example recognizes; this module holds
the rest, so the loop stays one look long:

- :class:`Run`: everything one run works with (config, corpus, model, optimizer, data, device,
  processes, its :class:`~lmfix.rundir.RunDir`);
- :class:`TrainState`: where training is, saved in every checkpoint as it is (``asdict``);
- :class:`Bookkeeping`: per epoch, the interval log (losses stay on the device and are read at
  log intervals only, with the training time read after a device sync), the stop checks
  (a signal, ``--max-minutes``) and the periodic mid-epoch checkpoint;
- :func:`checkpoint` / :func:`restore`: the training state to and from ``checkpoint.pt``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm import tqdm

from . import distributed
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import Corpus
from .distributed import Dist
from .errors import LmfixError, first_line
from .evaluation import Stopped, ppl
from .model import LM, ModelConfig
from .rundir import LAST, RunDir


@dataclass
class TrainState:
    """Where training is. Saved in every checkpoint as it is (``asdict``) and restored from it."""

    lr: float
    epoch: int = 1
    batch: int = 0  # the next training batch of this epoch
    phase: str = "train"  # "train": batches left; "validate": only validation left (resume)
    hidden: tuple | None = None  # the LSTM state carried into batch ``batch``
    epoch_loss: float = 0.0  # sum of this epoch's batch losses (this process's)
    epoch_batches: int = 0
    best_val: float | None = None
    best_epoch: int | None = None
    val_ntok: int = 0
    tokens_seen: int = 0
    steps: int = 0  # optimizer steps taken (the --warmup schedule counts them)
    train_seconds: float = 0.0  # time in training steps only, measured after a device sync
    wall_s: float = 0.0
    epoch_started_s: float = 0.0  # wall_s when this epoch began
    out_of_time: bool = False  # --max-minutes ran out: this epoch is the last
    done: bool = False

    def more_to_train(self, cfg: TrainConfig) -> bool:
        return self.epoch <= cfg.epochs and not self.done

    def next_epoch(self, wall_s: float) -> None:
        self.epoch += 1
        self.batch, self.phase, self.hidden = 0, "train", None
        self.epoch_loss, self.epoch_batches = 0.0, 0
        self.wall_s = self.epoch_started_s = wall_s
        self.done = self.out_of_time

    def resume_under(self, cfg: TrainConfig) -> None:
        """Continue under ``cfg``, whose epochs or time budget a resume may have changed: a run
        stopped by the time budget trains on if the new budget has time left."""
        if cfg.epochs < self.epoch - 1:
            raise LmfixError(f"--epochs {cfg.epochs}: the run has already trained "
                             f"{self.epoch - 1} epochs")
        if self.done and not (cfg.max_minutes and self.wall_s > cfg.max_minutes * 60):
            self.done = self.out_of_time = False


@dataclass
class Run:
    """Everything one training run works with; only the main process writes to ``out``."""

    cfg: TrainConfig
    corpus: Corpus
    model: LM
    mcfg: ModelConfig
    info: dict  # embedding source and coverage
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    data: dict[str, torch.Tensor]  # batchified train (this process's columns), valid, test
    state: TrainState
    device: torch.device
    dist: Dist
    out: RunDir
    stop_flag: object = None  # a lmfix.signals.Flag: the signal's name or None
    command: str = ""
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)  # wall clock origin, resumed
    last_checkpoint: float = field(default_factory=time.perf_counter)

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def log(self, record: dict) -> None:
        if self.main:
            self.out.log(record)


class Bookkeeping:
    """What one epoch does beside its steps: :meth:`stop_before` each batch, :meth:`after_step`
    after it, :meth:`end` once the loop is over."""

    def __init__(self, run: Run, nbatches: int, progress: bool):
        self.run, self.state, self.nbatches = run, run.state, nbatches
        dev = run.data["train"].device
        self.epoch_sum = torch.tensor(run.state.epoch_loss, dtype=torch.float64, device=dev)
        self.interval_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.n = 0
        self.clock = time.perf_counter()
        self.bar = tqdm(total=nbatches, initial=run.state.batch, disable=not progress or None,
                        desc=f"epoch {run.state.epoch}", unit="batch", leave=False,
                        dynamic_ncols=True)

    def stop_before(self, batch: int, hidden) -> bool:
        """A signal stops the run (its position saved, then :class:`Stopped`); ``--max-minutes``
        ends this epoch early (True). Decided by all processes together, so none waits alone
        in a collective."""
        run = self.run
        sig = run.stop_flag() is not None
        # At least one step always runs, so even a tiny budget reports a trained model's figures.
        late = bool(run.cfg.max_minutes) and run.state.tokens_seen > 0 and \
            time.perf_counter() - run.started > run.cfg.max_minutes * 60
        if run.dist.enabled:
            sig, late = (v > 0 for v in distributed.all_reduce_sum([sig, late], run.dist,
                                                                       run.device))
        if sig:
            self._save_position(batch, hidden)
            raise Stopped(run.stop_flag() or "SIGTERM")  # or a signal on another process
        if late:
            run.state.out_of_time = True  # validate what we have, then finish
        return late

    def warm_up(self) -> None:
        """During the first --warmup steps the lr rises linearly to its value (then stays)."""
        warmup, state = self.run.cfg.warmup, self.state
        if warmup and state.steps <= warmup:
            for g in self.run.opt.param_groups:
                g["lr"] = state.lr * min(1.0, (state.steps + 1) / warmup)

    def after_step(self, loss: torch.Tensor, tokens: int, batch: int, hidden) -> None:
        """Count the step, log at intervals, checkpoint when one is due."""
        run, state = self.run, self.state
        run.dist.meter.step()
        state.steps += 1
        self.epoch_sum += loss
        self.interval_sum += loss
        self.n += 1
        state.epoch_batches += 1
        state.tokens_seen += tokens * run.dist.world_size
        self.bar.update(1)
        if self.n == run.cfg.log_interval or batch == self.nbatches - 1:
            self._write_interval(batch)
        every = run.cfg.checkpoint_every
        if every and time.perf_counter() - run.last_checkpoint > every * 60:
            self._save_position(batch + 1, hidden)
            checkpoint(run)

    def end(self, batch: int, hidden) -> None:
        """The loop ended before ``batch`` (the epoch's end, or the time budget's)."""
        self._save_position(batch, hidden)
        self.bar.close()
        self.state.phase = "validate"

    def _lap(self) -> None:
        """Add the time since the last lap to the training time (after a device sync)."""
        if self.run.device.type == "cuda":
            torch.cuda.synchronize(self.run.device)
        now = time.perf_counter()
        self.state.train_seconds += now - self.clock
        self.clock = now

    def _save_position(self, batch: int, hidden) -> None:
        self._lap()
        state = self.state
        state.batch, state.hidden = batch, tuple(h.detach() for h in hidden)
        state.epoch_loss = self.epoch_sum.item()
        state.wall_s = time.perf_counter() - self.run.started
        self.clock = time.perf_counter()

    def _write_interval(self, batch: int) -> None:
        run, state = self.run, self.state
        mean = distributed.all_reduce_sum([self.interval_sum.item() / self.n], run.dist,
                                          self.interval_sum.device)[0] / run.dist.world_size
        self._lap()
        self.interval_sum.zero_()
        self.n = 0
        if not math.isfinite(mean):
            raise LmfixError(f"training loss became {mean} in epoch {state.epoch} batch {batch}; "
                             f"the last good checkpoint is kept in {run.out.path} (try a lower "
                             "--lr)")
        scale = run.model.scale.item() if run.model.scale is not None else None
        run.log({"kind": "step", "epoch": state.epoch, "step": batch + 1,
                 "tokens_seen": state.tokens_seen, "train_loss": mean, "lr": state.lr,
                 "scale": scale})
        self.bar.set_postfix(loss=f"{mean:.2f}", ppl=f"{ppl(mean):.0f}", lr=state.lr,
                             tok_s=f"{state.tokens_seen / max(state.train_seconds, 1e-9):.0f}")
        self.clock = time.perf_counter()


def checkpoint(run: Run) -> None:
    """Every process takes part (the hidden state and RNGs are gathered); the main one writes."""
    with run.dist.meter.outside_steps():
        hidden = run.state.hidden
        if hidden is not None:
            hidden = tuple(distributed.gather_columns(h, run.dist, 1) for h in hidden)
        rngs = distributed.gather_objects(rng_state(), run.dist)
    if run.main:
        save_checkpoint(run.out / LAST, {"model": run.model.state_dict(),
                                         "optimizer": run.opt.state_dict(),
                                         "state": asdict(replace(run.state, hidden=hidden)),
                                         "rng": rngs})
    run.last_checkpoint = time.perf_counter()


def restore(run: Run) -> None:
    """Model, optimizer, position and RNG states from the run's checkpoint.pt."""
    path = run.out / LAST
    ck = load_checkpoint(path, map_location=run.device)
    try:
        run.model.load_state_dict(ck["model"])
        run.opt.load_state_dict(ck["optimizer"])
        state, rngs = TrainState(**ck["state"]), ck["rng"]
        if len(rngs) != run.dist.world_size:
            raise LmfixError(f"{path} was saved by {len(rngs)} process(es); resume it with as "
                             f"many (now {run.dist.world_size})")
        set_rng_state(rngs[run.dist.rank])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise LmfixError(f"{path} does not match this run's model "
                         f"({first_line(e)})") from None
    if state.hidden is not None:
        # (layers, batch, hidden): this process's columns of the gathered batch
        state.hidden = tuple(distributed.eval_columns(h, run.dist) for h in state.hidden)
    run.state = state
