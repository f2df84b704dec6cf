"""Training and evaluation, in the regime of the PyTorch ``word_language_model`` example.

Plain SGD at lr 20 with gradient clipping 0.25, lr divided by 4 whenever validation loss does not
improve, the best-validation model kept and tested; eval batch size 10; perplexity is
exp(token-weighted mean NLL). Everything a run produces goes into its run directory
(see :mod:`lmfix.rundir`), and a checkpoint at every epoch end (and every few minutes) lets
``--resume`` continue exactly where the run stopped.

Reading order: :func:`train` sets a run up, :func:`fit` alternates :func:`train_one_epoch`
(the example's ``train()``: batch → forward → loss → backward → clip → step → log) and
:func:`end_epoch` (validate, keep the best, anneal, checkpoint). Where training is lives in one
:class:`TrainState`, checkpointed as it is.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed, rundir
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import Corpus, batchify, get_batch, load_corpus
from .distributed import Dist
from .embedding_parts import top_ids
from .embedding_spec import check_embedding_options, planned, resolve_embedding
from .errors import Interrupted, LmfixError, first_line
from .flags import check_train_config
from .memory import check_fits, estimate_train_bytes
from .metrics import bits_per_char, ppl, word_ppl
from .model import LSTMLM, ModelConfig, count_params, normalize_vectors
from .provenance import git_commit, versions
from .tokenizer import TokenizerConfig

_TOK = TokenizerConfig()


@dataclass
class TrainConfig:
    data: str | None = None
    embedding: str = "learned"
    out: str = "runs/run"
    emsize: int | None = None  # None: the embedding file's dimension, else model.DEFAULT_DIM
    nhid: int | None = None  # None: same as emsize
    nlayers: int = 2
    dropout: float = 0.2
    lr: float = 20.0
    clip: float = 0.25  # 0: no clipping
    epochs: int = 40
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    seed: int = 1111
    device: str = "auto"
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    max_train_tokens: int | None = None
    max_eval_tokens: int | None = None
    max_minutes: float | None = None
    embedding_norm: str = "unit"  # measured best: scripts/ablate_fixed_scaling.sh, README
    cosine: bool = False
    scale_init: float | None = None
    fix: str | None = None  # given vectors: the side kept fixed, None = both (embedding_parts)
    learn_top: int = 0  # fixed tied: the rows of the K most frequent training words train
    delta_rank: int = 0  # fixed tied: rank R of a trainable correction, W + A·B
    oov: str = "error"
    amp: bool = False  # bfloat16 autocast (meant for CUDA GPUs)
    tf32: bool = False  # CUDA: TF32 tensor cores in cuBLAS and cuDNN (off: exact float32)
    tokenizer: str = _TOK.kind  # word | sentencepiece (lmfix.tokenizer)
    sp_model_type: str = _TOK.sp_model_type
    sp_vocab_size: int = _TOK.sp_vocab_size
    log_interval: int = 200
    checkpoint_every: float = 10.0  # minutes between mid-epoch checkpoints

    def __post_init__(self) -> None:
        # 0 tokens means "no limit" (how `lmfix run` lifts a preset's cap); one spelling, None,
        # is kept so configs compare equal on resume
        for name in ("max_train_tokens", "max_eval_tokens"):
            if getattr(self, name) == 0:
                setattr(self, name, None)


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
    train_seconds: float = 0.0  # time in training steps only, measured after a device sync
    wall_s: float = 0.0
    epoch_started_s: float = 0.0  # wall_s when this epoch began
    out_of_time: bool = False  # --max-minutes ran out: this epoch is the last
    done: bool = False


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmfixError("--device cuda was asked for but no CUDA GPU is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise LmfixError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":  # the example's manual update p -= lr * grad, as an optimizer
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise LmfixError(f"--optimizer {name!r}: use sgd, adam or adamw")


def set_tf32(device: torch.device, on: bool) -> None:
    """On CUDA, allow TF32 (``--tf32``) or not in both cuBLAS and cuDNN. Both are set either
    way: PyTorch's own default allows TF32 in cuDNN, which runs the LSTM. No effect on CPUs."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def check_amp(device: torch.device) -> None:
    """bfloat16 LSTMs need CPU support (oneDNN kernels: AVX-512 BF16/AMX); fail up front
    with one clear line instead of a oneDNN traceback at the first step."""
    if device.type != "cpu":
        return
    lstm = torch.nn.LSTM(4, 4)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(2, 1, 4))
    except RuntimeError:
        raise LmfixError("--amp: this CPU has no bfloat16 LSTM kernels (oneDNN refused one); "
                         "train without --amp, which is meant for CUDA GPUs") from None


@torch.no_grad()
def evaluate(model: LSTMLM, source: torch.Tensor, bptt: int, d: Dist = Dist(),
             interrupted=None) -> tuple[float, int]:
    """Token-weighted mean NLL over a batchified split, hidden state carried across chunks.

    ``interrupted()``, polled per chunk, lets a signal stop a long evaluation promptly.
    """
    model.eval()
    source = distributed.eval_columns(source, d)
    total = torch.zeros((), dtype=torch.float64, device=source.device)
    ntok = 0
    if source.size(1):
        hidden = model.init_hidden(source.size(1))
        for i in range(0, source.size(0) - 1, bptt):
            if interrupted is not None and interrupted():
                raise _Stop(interrupted())
            x, y = get_batch(source, i, bptt)
            out, hidden = model(x, hidden)
            total += model.loss(out, y, reduction="sum").double()
            ntok += y.numel()
    total, ntok = distributed.all_reduce_sum([total.item(), ntok], d, source.device)
    return total / max(ntok, 1), int(ntok)


def build_model(cfg: TrainConfig, corpus: Corpus,
                device: torch.device = torch.device("cpu")) -> tuple[LSTMLM, ModelConfig, dict]:
    """The model (seeded with ``cfg.seed``), refused up front when it cannot fit ``device``."""
    V = len(corpus.vocab)
    check_embedding_options(cfg.embedding, cfg.fix, cfg.learn_top, cfg.delta_rank, V)

    def check_size(mode: str, dim: int) -> None:
        check_fits(estimate_train_bytes(
            V, dim, cfg.nhid, cfg.nlayers, cfg.batch_size, cfg.bptt, mode, cfg.optimizer,
            cfg.eval_batch_size, device_type=device.type, amp=cfg.amp,
            fix=(cfg.fix or "both") if mode == "fixed" else None, learn_top=cfg.learn_top,
            delta_rank=cfg.delta_rank), device)

    known = planned(cfg.embedding, cfg.emsize)
    if known:  # before a V×d basis is built (a file's size is already on disk)
        check_size(*known)
    res = resolve_embedding(cfg.embedding, corpus.vocab.words, cfg.emsize, cfg.seed, cfg.oov,
                            corpus.tokenizer.identity())
    if not known:
        check_size(res.mode, res.dim)
    emsize = res.dim
    fix = (cfg.fix or "both") if res.mode == "fixed" else None
    mcfg = ModelConfig(vocab_size=V, emsize=emsize, nhid=cfg.nhid or emsize,
                       nlayers=cfg.nlayers, dropout=cfg.dropout, embedding=res.mode,
                       cosine=cfg.cosine, scale_init=cfg.scale_init, fix=fix,
                       learn_top=cfg.learn_top, delta_rank=cfg.delta_rank)
    fixed = normalize_vectors(res.matrix, cfg.embedding_norm) if res.matrix is not None else None
    # --learn-top: the most frequent words of the whole training split
    top = top_ids(corpus.train, V, cfg.learn_top) if cfg.learn_top else None
    torch.manual_seed(cfg.seed)
    model = LSTMLM(mcfg, fixed, top)
    info = {"embedding_source": res.source, "coverage": res.coverage}
    return model, mcfg, info


class _Stop(Exception):
    """Raised inside the batch loop when a signal asks to stop; its argument is the signal's
    name."""


@dataclass
class _Run:
    """Everything one training run works with; only the main process writes to ``out``."""

    cfg: TrainConfig
    corpus: Corpus
    model: LSTMLM
    mcfg: ModelConfig
    info: dict  # embedding source and coverage
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    data: dict[str, torch.Tensor]  # batchified train (this process's columns), valid, test
    state: TrainState
    device: torch.device
    dist: Dist
    stop_flag: object = None  # rundir.stop_signals()'s poll: the signal's name or None
    command: str = ""
    started: float = field(default_factory=time.perf_counter)  # wall clock origin, resumed
    last_checkpoint: float = field(default_factory=time.perf_counter)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def log(self, record: dict) -> None:
        if self.main:
            rundir.log(self.out, record)


def train(cfg: TrainConfig, command: str = "", corpus: Corpus | None = None,
          resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Train one model into ``cfg.out``; returns the summary (also written as summary.json).

    Under ``torchrun`` every process calls this; see lmfix.distributed.
    """
    out = Path(cfg.out)
    if resume:
        cfg = TrainConfig(**{**asdict(cfg), **rundir.load_config(out)["train"], "out": cfg.out})
    check_train_config(cfg)  # the CLI checked its flags; a config made in Python is checked here
    check_embedding_options(cfg.embedding, cfg.fix, cfg.learn_top, cfg.delta_rank)
    device = pick_device(cfg.device)
    if cfg.amp:
        check_amp(device)
    set_tf32(device, cfg.tf32)
    d = distributed.setup(device)
    ok = False
    try:
        if d.enabled and device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
        if not resume and d.is_main:
            rundir.prepare(out, force=force)
        run = _setup(cfg, corpus, device, d, command, resume)
        with rundir.stop_signals() as run.stop_flag:
            _fit_or_mark(run, progress and d.is_main)
        summary = _finish(run)
        ok = True
        return summary
    finally:
        distributed.shutdown(d, ok)


def _setup(cfg: TrainConfig, corpus: Corpus | None, device, d: Dist, command: str,
           resume: bool) -> _Run:
    """Corpus, model, optimizer and data on the device; a fresh state or the checkpoint's."""
    corpus = corpus or load_corpus(cfg.data, TokenizerConfig.from_flags(cfg))
    random.seed(cfg.seed)
    model, mcfg, info = build_model(cfg, corpus, device)
    model.to(device)
    if d.enabled:  # a different dropout stream per rank, as separate batch columns would get
        torch.manual_seed(cfg.seed + d.rank)
    net = distributed.wrap_ddp(model, device, d)
    opt = make_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad],
                         cfg.lr, cfg.weight_decay)
    train_ids = corpus.train[: cfg.max_train_tokens] if cfg.max_train_tokens else corpus.train
    evals = {s: corpus.split(s)[: cfg.max_eval_tokens] if cfg.max_eval_tokens else corpus.split(s)
             for s in ("valid", "test")}
    data = {"train": distributed.shard_columns(
                batchify(train_ids, cfg.batch_size, "training split (--batch-size)"), d),
            **{s: batchify(evals[s], cfg.eval_batch_size, f"{s} split (--eval-batch-size)")
               for s in ("valid", "test")}}
    run = _Run(cfg, corpus, model, mcfg, info, net, opt,
               {k: v.to(device) for k, v in data.items()}, TrainState(lr=cfg.lr), device, d,
               command=command)
    if resume:
        _restore(run)
    elif d.is_main:
        rundir.write_config(run.out, {"train": asdict(cfg), "model": asdict(mcfg),
                                      "command": command, "corpus": _corpus_info(corpus), **info,
                                      "params": count_params(model),
                                      "tokenizer": corpus.tokenizer.identity()})
        corpus.tokenizer.save_into(run.out)  # the run stays usable without corpus or cache
    if d.is_main:
        rundir.set_status(run.out, "running")
    return run


def _fit_or_mark(run: _Run, progress: bool) -> None:
    """:func:`fit`, with the run directory's status telling how it ended."""
    try:
        fit(run, progress)
    except _Stop as stop:
        _checkpoint(run)
        why = f"stopped by {stop.args[0]} in epoch {run.state.epoch}"
        if run.main:
            rundir.set_status(run.out, "interrupted", why)
        raise Interrupted(f"{why}; checkpoint saved. Continue with: "
                          f"lmfix train --resume {run.out}", stop.args[0]) from None
    except BaseException as e:
        if run.main:
            rundir.set_status(run.out, "failed", f"{type(e).__name__}: {e}")
        raise


def fit(run: _Run, progress: bool = False) -> None:
    """Epochs until ``--epochs`` (or the time budget) is reached."""
    run.started = time.perf_counter() - run.state.wall_s
    run.last_checkpoint = time.perf_counter()
    while run.state.epoch <= run.cfg.epochs and not run.state.done:
        if run.state.phase == "train":
            train_one_epoch(run, progress)
        end_epoch(run)


def train_one_epoch(run: _Run, progress: bool = False) -> None:
    """One pass over the training batches, from ``state.batch`` on (the example's train())."""
    cfg, model, state, data = run.cfg, run.model, run.state, run.data["train"]
    params = [p for p in model.parameters() if p.requires_grad]
    nbatches = len(range(0, data.size(0) - 1, cfg.bptt))
    hidden = state.hidden or model.init_hidden(data.size(1))
    log = _IntervalLog(run, nbatches, progress)
    run.net.train()
    for batch in range(state.batch, nbatches):
        if _stop_requested(run, batch, hidden, log):  # a signal raises; out of time returns True
            break
        x, y = get_batch(data, batch * cfg.bptt, cfg.bptt)
        hidden = tuple(h.detach() for h in hidden)  # truncated BPTT
        run.opt.zero_grad(set_to_none=True)
        # bfloat16 keeps float32's range, so no loss scaling is needed (unlike float16)
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            output, hidden = run.net(x, hidden)
            loss = model.loss(output, y)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        run.opt.step()
        run.dist.meter.step()
        log.step(loss.detach(), y.numel(), batch)
        if _checkpoint_due(run):
            _save_position(run, batch + 1, hidden, log)
            _checkpoint(run)
    else:
        batch = nbatches
    _save_position(run, batch, hidden, log)
    log.close()
    state.phase = "validate"


class _IntervalLog:
    """Losses stay on the device and are read at log intervals only (no per-step host sync);
    training time is read there too, after a device sync, so it counts work, not launches."""

    def __init__(self, run: _Run, nbatches: int, progress: bool):
        self.run, self.state, self.nbatches = run, run.state, nbatches
        dev = run.data["train"].device
        self.epoch_sum = torch.tensor(run.state.epoch_loss, dtype=torch.float64, device=dev)
        self.interval_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.n = 0
        self.clock = time.perf_counter()
        self.bar = tqdm(total=nbatches, initial=run.state.batch, disable=not progress or None,
                        desc=f"epoch {run.state.epoch}", unit="batch", leave=False,
                        dynamic_ncols=True)

    def step(self, loss: torch.Tensor, tokens: int, batch: int) -> None:
        self.epoch_sum += loss
        self.interval_sum += loss
        self.n += 1
        self.state.epoch_batches += 1
        self.state.tokens_seen += tokens * self.run.dist.world_size
        self.bar.update(1)
        if self.n == self.run.cfg.log_interval or batch == self.nbatches - 1:
            self._write(batch)

    def lap(self) -> None:
        """Add the time since the last lap to the training time (after a device sync)."""
        if self.run.device.type == "cuda":
            torch.cuda.synchronize(self.run.device)
        now = time.perf_counter()
        self.state.train_seconds += now - self.clock
        self.clock = now

    def resume_clock(self) -> None:
        self.clock = time.perf_counter()

    def epoch_loss(self) -> float:
        return self.epoch_sum.item()

    def _write(self, batch: int) -> None:
        run, state = self.run, self.state
        mean = distributed.all_reduce_sum([self.interval_sum.item() / self.n], run.dist,
                                          self.interval_sum.device)[0] / run.dist.world_size
        self.lap()
        self.interval_sum.zero_()
        self.n = 0
        if not math.isfinite(mean):
            raise LmfixError(f"training loss became {mean} in epoch {state.epoch} batch {batch}; "
                             f"the last good checkpoint is kept in {run.out} (try a lower --lr)")
        scale = run.model.scale.item() if run.model.scale is not None else None
        run.log({"kind": "step", "epoch": state.epoch, "step": batch + 1,
                 "tokens_seen": state.tokens_seen, "train_loss": mean, "lr": state.lr,
                 "scale": scale})
        self.bar.set_postfix(loss=f"{mean:.2f}", ppl=f"{ppl(mean):.0f}", lr=state.lr,
                             tok_s=f"{state.tokens_seen / max(state.train_seconds, 1e-9):.0f}")
        self.resume_clock()

    def close(self) -> None:
        self.bar.close()


def _stop_requested(run: _Run, batch: int, hidden, log: _IntervalLog) -> bool:
    """A signal stops the run (checkpoint, then :class:`_Stop`); ``--max-minutes`` ends this
    epoch early (True). Decided by all processes together, so none waits alone in a
    collective."""
    sig = run.stop_flag() is not None
    # At least one step always runs, so even a tiny budget reports a trained model's figures.
    late = bool(run.cfg.max_minutes) and run.state.tokens_seen > 0 and \
        time.perf_counter() - run.started > run.cfg.max_minutes * 60
    if run.dist.enabled:
        sig, late = (v > 0 for v in distributed.all_reduce_sum([sig, late], run.dist,
                                                                   run.device))
    if sig:
        _save_position(run, batch, hidden, log)
        raise _Stop(run.stop_flag() or "SIGTERM")  # or a signal on another process
    if late:
        run.state.out_of_time = True  # validate what we have, then finish
    return late


def _checkpoint_due(run: _Run) -> bool:
    every = run.cfg.checkpoint_every
    return bool(every) and time.perf_counter() - run.last_checkpoint > every * 60


def _save_position(run: _Run, batch: int, hidden, log: _IntervalLog) -> None:
    log.lap()
    run.state.batch, run.state.hidden = batch, tuple(h.detach() for h in hidden)
    run.state.epoch_loss = log.epoch_loss()
    run.state.wall_s = time.perf_counter() - run.started
    log.resume_clock()


def end_epoch(run: _Run) -> None:
    """Validate; keep the best model or anneal the lr (the example's schedule); checkpoint."""
    cfg, model, state = run.cfg, run.model, run.state
    val_loss, train_loss = _validate(run)
    scale = model.scale.item() if model.scale is not None else None
    run.log({"kind": "epoch", "epoch": state.epoch, "train_loss": train_loss,
             "train_ppl": ppl(train_loss), "val_loss": val_loss, "val_ppl": ppl(val_loss),
             "lr": state.lr, "scale": scale,
             "tokens_per_s": state.tokens_seen / max(state.train_seconds, 1e-9),
             "seconds": time.perf_counter() - run.started - state.epoch_started_s,
             "tokens_seen": state.tokens_seen, "partial": state.out_of_time})
    if run.main:
        print(f"epoch {state.epoch:3d} | train ppl {ppl(train_loss):8.2f} | "
              f"valid ppl {ppl(val_loss):8.2f} | lr {state.lr:g}"
              + (f" | scale {scale:.3f}" if scale is not None else ""), flush=True)
    if state.best_val is None or val_loss < state.best_val:
        state.best_val, state.best_epoch = val_loss, state.epoch
        if run.main:
            save_checkpoint(run.out / rundir.BEST, {"model": model.state_dict()})
    else:
        state.lr /= 4.0
        for g in run.opt.param_groups:
            g["lr"] = state.lr
    _next_epoch(state, time.perf_counter() - run.started)
    _checkpoint(run)
    if run.dist.enabled:  # best.pt must be on disk before any process reads it
        torch.distributed.barrier()


def _validate(run: _Run) -> tuple[float, float]:
    """(validation loss, mean training loss of the epoch), both over all processes."""
    state, d = run.state, run.dist
    # Under torchrun a signal reaches the processes at different chunks: finish evaluating.
    interrupted = None if d.enabled else run.stop_flag
    with d.meter.outside_steps():
        val_loss, state.val_ntok = evaluate(run.model, run.data["valid"], run.cfg.bptt, d,
                                            interrupted)
        train_sum = distributed.all_reduce_sum([state.epoch_loss], d, run.device)[0]
    if not math.isfinite(ppl(val_loss)):
        raise LmfixError(f"validation loss became {val_loss} in epoch {state.epoch}; "
                         f"the last good checkpoint is kept in {run.out} (try a lower --lr)")
    return val_loss, train_sum / d.world_size / max(state.epoch_batches, 1)


def _next_epoch(state: TrainState, wall_s: float) -> None:
    state.epoch += 1
    state.batch, state.phase, state.hidden = 0, "train", None
    state.epoch_loss, state.epoch_batches = 0.0, 0
    state.wall_s = state.epoch_started_s = wall_s
    state.done = state.out_of_time


def _checkpoint(run: _Run) -> None:
    """Every process takes part (the hidden state and RNGs are gathered); the main one writes."""
    with run.dist.meter.outside_steps():
        hidden = run.state.hidden
        if hidden is not None:
            hidden = tuple(distributed.gather_columns(h, run.dist, 1) for h in hidden)
        rngs = distributed.gather_objects(rng_state(), run.dist)
    if run.main:
        save_checkpoint(run.out / rundir.LAST, {"model": run.model.state_dict(),
                                                "optimizer": run.opt.state_dict(),
                                                "state": asdict(replace(run.state, hidden=hidden)),
                                                "rng": rngs})
    run.last_checkpoint = time.perf_counter()


def _restore(run: _Run) -> None:
    path = run.out / rundir.LAST
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


def _finish(run: _Run) -> dict:
    """Test the best model, write summary.json and mark the run finished."""
    if not run.state.tokens_seen:  # a summary of no training would be a number from nothing
        raise LmfixError(f"no training step ran (--max-minutes {run.cfg.max_minutes} ended the "
                         "run before the first batch); nothing to report")
    with run.dist.meter.outside_steps():
        best = load_checkpoint(run.out / rundir.BEST, map_location=run.device)
        run.model.load_state_dict(best["model"])
        test_loss, test_ntok = evaluate(run.model, run.data["test"], run.cfg.bptt, run.dist)
        if not (test_ntok and run.state.val_ntok):
            raise LmfixError(f"evaluated {run.state.val_ntok} validation and {test_ntok} test "
                             "tokens; perplexity needs at least one of each")
        if not math.isfinite(ppl(test_loss)):
            raise LmfixError(f"test loss of the best model is {test_loss} (perplexity overflows); "
                             "the run diverged (try a lower --lr)")
        summary = _summary(run, test_loss, test_ntok)
        if run.dist.enabled:  # evidence that DDP kept every replica identical
            checksum = sum(p.double().sum().item() for p in run.model.parameters())
            summary["param_checksums"] = distributed.gather_objects(checksum, run.dist)
    if run.main:
        rundir.finish(run.out, summary)
    return summary


def _corpus_info(corpus: Corpus) -> dict:
    return {"name": corpus.name, "source": corpus.source, "train_sha256": corpus.train_sha256,
            "vocab_size": len(corpus.vocab), "unk_replaced": corpus.unk_replaced}


def _word_level(corpus: Corpus, losses: dict[str, float], data: dict[str, torch.Tensor]) -> dict:
    """Word-level perplexity and bits per character, comparable across tokenizers: the total
    NLL of the evaluated targets (rows 1.. of the batchified split) over the words that start
    among them (for word-level tokens, every target is a word)."""
    out = {}
    for split, loss in losses.items():
        targets = data[split][1:]
        words = corpus.tokenizer.count_words(targets.t())
        key = "val" if split == "valid" else "test"
        out[f"{key}_word_ppl"] = word_ppl(loss, targets.numel(), words) if words else None
        # characters per word of the whole split, applied to the evaluated words
        chars = corpus.chars.get(split, 0) * words / max(corpus.words.get(split, 0), 1)
        out[f"{key}_bpc"] = bits_per_char(loss, targets.numel(), chars) if chars else None
    return out


def _summary(run: _Run, test_loss: float, test_ntok: int) -> dict:
    cfg, state, model, mcfg = run.cfg, run.state, run.model, run.mcfg
    params = count_params(model)
    losses = {"valid": state.best_val, "test": test_loss}
    return {
        "name": run.out.name, "embedding": cfg.embedding,
        "embedding_source": run.info["embedding_source"],
        # fixed: some part of the embedding is (--fix input/output keep one side fixed)
        "tied": model.layout.tied, "fixed": params["embedding_fixed"] > 0,
        "fix": mcfg.fix, "learn_top": mcfg.learn_top, "delta_rank": mcfg.delta_rank,
        "emsize": mcfg.emsize,
        "nhid": mcfg.nhid, "nlayers": mcfg.nlayers, "vocab_size": mcfg.vocab_size,
        "params": params,
        "val_loss": state.best_val, "val_ppl": ppl(state.best_val),
        "test_loss": test_loss, "test_ppl": ppl(test_loss),
        **_word_level(run.corpus, losses, run.data),
        "tokenizer": run.corpus.tokenizer.identity(),
        "epochs": state.epoch - 1, "best_epoch": state.best_epoch,
        "train_tokens": state.tokens_seen,
        "tokens_per_s": state.tokens_seen / max(state.train_seconds, 1e-9),
        "wall_s": state.wall_s, "device": run.device.type,
        "device_name": rundir.device_name(run.device), "world_size": run.dist.world_size,
        # the arithmetic (every trainable parameter's gradient, once) beside the measurement
        "grad_bytes_per_step_formula": distributed.grad_bytes_per_step(model),
        **run.dist.meter.summary(),
        "final_scale": model.scale.item() if model.scale is not None else None,
        "eval_tokens": {"valid": state.val_ntok, "test": test_ntok},
        "max_eval_tokens": cfg.max_eval_tokens, "max_train_tokens": cfg.max_train_tokens,
        "coverage": run.info["coverage"], "corpus": _corpus_info(run.corpus),
        "command": run.command, "versions": versions(), "git_commit": git_commit(),
        "config": {"train": asdict(cfg), "model": asdict(mcfg)},
    }
