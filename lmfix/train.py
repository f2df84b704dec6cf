"""Training and evaluation, in the regime of the PyTorch ``word_language_model`` example.

Plain SGD at lr 20 with gradient clipping 0.25, lr divided by 4 whenever validation loss does not
improve, the best-validation model kept and tested; eval batch size 10; perplexity is
exp(token-weighted mean NLL). Everything a run produces goes into its run directory
(see :mod:`lmfix.rundir`), and a checkpoint at every epoch end (and every few minutes) lets
``--resume`` continue exactly where the run stopped.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import rundir
from . import distributed
from .checkpoint import first_line, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import Corpus, batchify, get_batch, load_corpus
from .distributed import Dist
from .embedding_spec import resolve_embedding
from .errors import LmfixError
from .metrics import bits_per_char, ppl, word_ppl
from .model import LSTMLM, ModelConfig, count_params, normalize_vectors


@dataclass
class TrainConfig:
    data: str | None = None
    embedding: str = "learned"
    out: str = "runs/run"
    emsize: int | None = None  # None: the embedding file's dimension, else 200
    nhid: int | None = None  # None: same as emsize
    nlayers: int = 2
    dropout: float = 0.2
    lr: float = 20.0
    clip: float = 0.25
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
    oov: str = "error"
    amp: bool = False  # bfloat16 autocast (meant for CUDA GPUs)
    tokenizer: str = "word"  # word | sentencepiece
    sp_model_type: str = "unigram"
    sp_vocab_size: int = 8000
    log_interval: int = 200
    checkpoint_every: float = 10.0  # minutes between mid-epoch checkpoints


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


@dataclass
class _Run:
    """What the training loop works with; only the main process writes to ``out``."""

    cfg: TrainConfig
    model: LSTMLM
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    out: Path
    dist: Dist = field(default_factory=Dist)
    state: dict = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def log(self, record: dict) -> None:
        if self.main:
            rundir.log(self.out, record)


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
                raise _Stop(f"stopped by signal {interrupted()}")
            x, y = get_batch(source, i, bptt)
            out, hidden = model(x, hidden)
            total += model.loss(out, y, reduction="sum").double()
            ntok += y.numel()
    total, ntok = distributed.all_reduce_sum([total.item(), ntok], d, source.device)
    return total / max(ntok, 1), int(ntok)


def build_model(cfg: TrainConfig, corpus: Corpus) -> tuple[LSTMLM, ModelConfig, dict]:
    res = resolve_embedding(cfg.embedding, corpus.vocab.words, cfg.emsize, cfg.seed, cfg.oov,
                            corpus.tokenizer)
    emsize = res.dim
    mcfg = ModelConfig(vocab_size=len(corpus.vocab), emsize=emsize, nhid=cfg.nhid or emsize,
                       nlayers=cfg.nlayers, dropout=cfg.dropout, embedding=res.mode,
                       cosine=cfg.cosine, scale_init=cfg.scale_init)
    fixed = normalize_vectors(res.matrix, cfg.embedding_norm) if res.matrix is not None else None
    torch.manual_seed(cfg.seed)
    model = LSTMLM(mcfg, fixed)
    info = {"embedding_source": res.source, "coverage": res.coverage}
    return model, mcfg, info


def tokenizer_config(cfg: TrainConfig):
    if cfg.tokenizer == "word":
        return None
    if cfg.tokenizer != "sentencepiece":
        raise LmfixError(f"--tokenizer {cfg.tokenizer!r}: use word or sentencepiece")
    from .subword import SubwordConfig
    # seed 0: one tokenizer per corpus and settings, shared by every run (sentencepiece only
    # samples, and so only uses the seed, past a million training lines)
    return SubwordConfig(model_type=cfg.sp_model_type, vocab_size=cfg.sp_vocab_size)


class _Stop(Exception):
    """Raised inside the batch loop when a signal asks to stop."""


def train(cfg: TrainConfig, command: str = "", corpus: Corpus | None = None,
          resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Train one model into ``cfg.out``; returns the summary (also written as summary.json).

    Under ``torchrun`` every process calls this; see lmfix.distributed.
    """
    out = Path(cfg.out)
    if resume:
        cfg = TrainConfig(**{**asdict(cfg), **rundir.load_config(out)["train"], "out": cfg.out})
    device = pick_device(cfg.device)
    d = distributed.setup(device)
    ok = False
    try:
        if d.enabled and device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
        summary = _train(cfg, command, corpus, resume, force, progress and d.is_main, device, d)
        ok = True
        return summary
    finally:
        distributed.shutdown(d, ok)


def _train(cfg, command, corpus, resume, force, progress, device, d: Dist) -> dict:
    out = Path(cfg.out)
    if not resume and d.is_main:
        rundir.prepare(out, force=force)
    corpus = corpus or load_corpus(cfg.data, tokenizer_config(cfg))
    random.seed(cfg.seed)
    model, mcfg, info = build_model(cfg, corpus)
    model.to(device)
    if d.enabled:  # a different dropout stream per rank, as separate batch columns would get
        torch.manual_seed(cfg.seed + d.rank)
    net = model
    if d.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    opt = make_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad],
                         cfg.lr, cfg.weight_decay)
    train_ids = corpus.train[: cfg.max_train_tokens] if cfg.max_train_tokens else corpus.train
    evals = {s: corpus.split(s)[: cfg.max_eval_tokens] if cfg.max_eval_tokens else corpus.split(s)
             for s in ("valid", "test")}
    train_data = distributed.shard_columns(batchify(train_ids, cfg.batch_size), d).to(device)
    val_data = batchify(evals["valid"], cfg.eval_batch_size).to(device)
    test_data = batchify(evals["test"], cfg.eval_batch_size).to(device)
    params = count_params(model)
    run = _Run(cfg, model, net, opt, out, d, _fresh_state(cfg))
    if resume:
        run.state = _restore(run, device)
    elif d.is_main:
        rundir.write_config(out, {"train": asdict(cfg), "model": asdict(mcfg), "command": command,
                                  "corpus": _corpus_info(corpus), **info, "params": params,
                                  "tokenizer": corpus.tokenizer})
        if corpus.tokenizer.get("model_path"):  # the run stays usable without the cache
            from .subword import copy_model
            copy_model(corpus.tokenizer, out / "tokenizer.model")
    if d.is_main:
        rundir.set_status(out, "running")
    with rundir.stop_signals() as stop_flag:
        try:
            _loop(run, train_data, val_data, stop_flag, progress)
        except _Stop as why:
            _checkpoint(run)
            if d.is_main:
                rundir.set_status(out, "interrupted", str(why))
            raise LmfixError(f"{why}; checkpoint saved. Continue with: "
                             f"lmfix train --resume --out {out}") from None
        except BaseException as e:
            if d.is_main:
                rundir.set_status(out, "failed", f"{type(e).__name__}: {e}")
            raise
    best = load_checkpoint(out / rundir.BEST, map_location=device)
    model.load_state_dict(best["model"])
    test_loss, test_ntok = evaluate(model, test_data, cfg.bptt, d)
    summary = _summary(run, mcfg, info, params, test_loss, test_ntok, device, command, corpus,
                       val_data, test_data)
    if d.enabled:  # evidence that DDP kept every replica identical
        checksum = sum(p.double().sum().item() for p in model.parameters())
        summary["param_checksums"] = distributed.gather_objects(checksum, d)
    if d.is_main:
        rundir.finish(out, summary)
    return summary


def _fresh_state(cfg: TrainConfig) -> dict:
    return {"epoch": 1, "batch": 0, "lr": cfg.lr, "best_val": None, "best_epoch": None,
            "tokens_seen": 0, "train_seconds": 0.0, "wall_s": 0.0, "hidden": None,
            "epoch_loss": 0.0, "epoch_batches": 0, "val_ntok": 0, "done": False,
            # validating: the epoch's batches are done (resume goes straight to validation);
            # last_epoch: the time budget ran out, so this epoch is the last
            "validating": False, "last_epoch": False}


def _checkpoint(run: _Run) -> None:
    """Every process takes part (the hidden state and RNGs are gathered); the main one writes."""
    state = dict(run.state)
    if state["hidden"] is not None:
        state["hidden"] = tuple(distributed.gather_columns(h, run.dist, 1) for h in state["hidden"])
    rngs = distributed.gather_objects(rng_state(), run.dist)
    if run.main:
        save_checkpoint(run.out / rundir.LAST, {"model": run.model.state_dict(),
                                                "optimizer": run.opt.state_dict(),
                                                "state": state, "rng": rngs})


def _restore(run: _Run, device) -> dict:
    path = run.out / rundir.LAST
    ck = load_checkpoint(path, map_location=device)
    try:
        run.model.load_state_dict(ck["model"])
        run.opt.load_state_dict(ck["optimizer"])
        state, rngs = ck["state"], ck["rng"]
        if len(rngs) != run.dist.world_size:
            raise LmfixError(f"{path} was saved by {len(rngs)} process(es); resume it with as "
                             f"many (now {run.dist.world_size})")
        set_rng_state(rngs[run.dist.rank])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise LmfixError(f"{path} does not match this run's model "
                         f"({first_line(e)})") from None
    if state["hidden"] is not None:
        # (layers, batch, hidden): this process's columns of the gathered batch
        state["hidden"] = tuple(distributed.eval_columns(h, run.dist) for h in state["hidden"])
    return state


def _should_stop(run: _Run, stop_flag, start: float, dev) -> tuple[bool, bool]:
    """(signal, out of time), agreed by all processes so none waits alone in an all-reduce."""
    sig = stop_flag() is not None
    late = bool(run.cfg.max_minutes) and time.perf_counter() - start > run.cfg.max_minutes * 60
    if run.dist.enabled:
        sig, late = (v > 0 for v in distributed.all_reduce_sum([sig, late], run.dist, dev))
    return sig, late


def _loop(run: _Run, train_data, val_data, stop_flag, progress) -> None:
    cfg, model, state = run.cfg, run.model, run.state
    start = time.perf_counter() - state["wall_s"]
    last_ckpt = time.perf_counter()
    nbatches = len(range(0, train_data.size(0) - 1, cfg.bptt))
    params = [p for p in model.parameters() if p.requires_grad]
    dev = train_data.device
    world = run.dist.world_size
    while state["epoch"] <= cfg.epochs and not state["done"]:
        run.net.train()
        hidden = state["hidden"] or model.init_hidden(train_data.size(1))
        # Losses stay on the device and are read at log intervals only: no per-step host sync.
        epoch_acc = torch.tensor(state["epoch_loss"], dtype=torch.float64, device=dev)
        interval_acc, interval_n = torch.zeros((), dtype=torch.float64, device=dev), 0
        t_epoch = time.perf_counter()
        bar = tqdm(total=nbatches, initial=state["batch"], disable=not progress or None,
                   desc=f"epoch {state['epoch']}", unit="batch", leave=False, dynamic_ncols=True)

        def save_position(b: int) -> None:
            state.update(hidden=tuple(h.detach() for h in hidden), batch=b,
                         epoch_loss=epoch_acc.item(), wall_s=time.perf_counter() - start)

        pos = state["batch"]
        for b in range(state["batch"], 0 if state["validating"] else nbatches):
            sig, late = _should_stop(run, stop_flag, start, dev)
            if sig:
                save_position(b)
                raise _Stop(f"stopped by signal {stop_flag() or 'on another process'}")
            if late:
                state["last_epoch"] = True  # out of time: validate what we have and finish
                break
            x, y = get_batch(train_data, b * cfg.bptt, cfg.bptt)
            hidden = tuple(h.detach() for h in hidden)  # truncated BPTT
            t0 = time.perf_counter()
            run.opt.zero_grad(set_to_none=True)
            # bfloat16 keeps float32's range, so no loss scaling is needed (unlike float16)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp):
                out_feat, hidden = run.net(x, hidden)
                loss = model.loss(out_feat, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            run.opt.step()
            epoch_acc += loss.detach()
            interval_acc += loss.detach()
            interval_n += 1
            state["epoch_batches"] += 1
            state["tokens_seen"] += y.numel() * world
            state["train_seconds"] += time.perf_counter() - t0
            bar.update(1)
            pos = b + 1
            if interval_n == cfg.log_interval or b == nbatches - 1:
                mean = distributed.all_reduce_sum([interval_acc.item() / interval_n], run.dist,
                                                  dev)[0] / world
                _log_interval(run, bar, mean, b)
                interval_acc.zero_()
                interval_n = 0
            if cfg.checkpoint_every and time.perf_counter() - last_ckpt > cfg.checkpoint_every * 60:
                save_position(b + 1)
                _checkpoint(run)
                last_ckpt = time.perf_counter()
        bar.close()
        if not state["validating"]:
            save_position(pos)
            state["validating"] = True
        _end_epoch(run, val_data, t_epoch, start, stop_flag)


def _log_interval(run: _Run, bar, mean: float, b: int) -> None:
    state, model = run.state, run.model
    if not math.isfinite(mean):
        raise LmfixError(f"training loss became {mean} in epoch {state['epoch']} batch {b}; "
                         f"the last good checkpoint is kept in {run.out} (try a lower --lr)")
    scale = model.scale.item() if model.scale is not None else None
    run.log({"kind": "step", "epoch": state["epoch"], "step": b + 1,
             "tokens_seen": state["tokens_seen"], "train_loss": mean, "lr": state["lr"],
             "scale": scale})
    bar.set_postfix(loss=f"{mean:.2f}", ppl=f"{ppl(mean):.0f}", lr=state["lr"],
                    tok_s=f"{state['tokens_seen'] / state['train_seconds']:.0f}")


def _end_epoch(run: _Run, val_data, t_epoch: float, start: float, stop_flag) -> None:
    cfg, model, state = run.cfg, run.model, run.state
    # Under torchrun a signal reaches the processes at different chunks: finish evaluating.
    interrupted = None if run.dist.enabled else stop_flag
    val_loss, state["val_ntok"] = evaluate(model, val_data, cfg.bptt, run.dist, interrupted)
    world = run.dist.world_size
    train_loss = distributed.all_reduce_sum([state["epoch_loss"]], run.dist, val_data.device)[0] \
        / world / max(state["epoch_batches"], 1)
    if not math.isfinite(val_loss):
        raise LmfixError(f"validation loss became {val_loss} in epoch {state['epoch']}; "
                         f"the last good checkpoint is kept in {run.out} (try a lower --lr)")
    scale = model.scale.item() if model.scale is not None else None
    run.log({"kind": "epoch", "epoch": state["epoch"], "train_loss": train_loss,
             "train_ppl": ppl(train_loss), "val_loss": val_loss, "val_ppl": ppl(val_loss),
             "lr": state["lr"], "scale": scale,
             "tokens_per_s": state["tokens_seen"] / max(state["train_seconds"], 1e-9),
             "seconds": time.perf_counter() - t_epoch, "tokens_seen": state["tokens_seen"],
             "partial": state["last_epoch"]})
    if run.main:
        print(f"epoch {state['epoch']:3d} | train ppl {ppl(train_loss):8.2f} | "
              f"valid ppl {ppl(val_loss):8.2f} | lr {state['lr']:g}"
              + (f" | scale {scale:.3f}" if scale is not None else ""), flush=True)
    if state["best_val"] is None or val_loss < state["best_val"]:
        state["best_val"], state["best_epoch"] = val_loss, state["epoch"]
        if run.main:
            save_checkpoint(run.out / rundir.BEST, {"model": model.state_dict()})
    else:  # the example's schedule: anneal when validation stops improving
        state["lr"] /= 4.0
        for g in run.opt.param_groups:
            g["lr"] = state["lr"]
    state.update(epoch=state["epoch"] + 1, batch=0, hidden=None, epoch_loss=0.0, epoch_batches=0,
                 wall_s=time.perf_counter() - start, validating=False, done=state["last_epoch"])
    _checkpoint(run)
    if run.dist.enabled:  # best.pt must be on disk before any process reads it
        torch.distributed.barrier()


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
        if corpus.tokenizer.get("kind", "word") == "word":
            words = targets.numel()
        else:
            from .subword import words_in_pieces
            words = words_in_pieces([corpus.vocab.words[i] for i in targets.t().reshape(-1)
                                     .tolist()])
        key = "val" if split == "valid" else "test"
        out[f"{key}_word_ppl"] = word_ppl(loss, targets.numel(), words) if words else None
        # characters per word of the whole split, applied to the evaluated words
        chars = corpus.chars.get(split, 0) * words / max(corpus.words.get(split, 0), 1)
        out[f"{key}_bpc"] = bits_per_char(loss, targets.numel(), chars) if chars else None
    return out


def _summary(run: _Run, mcfg, info, params, test_loss, test_ntok, device, command, corpus,
             val_data, test_data) -> dict:
    cfg, state, model = run.cfg, run.state, run.model
    fixed = mcfg.embedding == "fixed"
    return {
        "name": Path(cfg.out).name, "embedding": cfg.embedding,
        "embedding_source": info["embedding_source"], "tied": mcfg.embedding != "learned-untied",
        "fixed": fixed, "emsize": mcfg.emsize, "nhid": mcfg.nhid, "nlayers": mcfg.nlayers,
        "vocab_size": mcfg.vocab_size, "params": params,
        "val_loss": state["best_val"], "val_ppl": ppl(state["best_val"]),
        "test_loss": test_loss, "test_ppl": ppl(test_loss),
        **_word_level(corpus, {"valid": state["best_val"], "test": test_loss},
                      {"valid": val_data, "test": test_data}), "tokenizer": corpus.tokenizer,
        "epochs": state["epoch"] - 1, "best_epoch": state["best_epoch"],
        "train_tokens": state["tokens_seen"],
        "tokens_per_s": state["tokens_seen"] / max(state["train_seconds"], 1e-9),
        "wall_s": state["wall_s"], "device": device.type,
        "device_name": rundir.device_name(device),
        "world_size": run.dist.world_size,
        "grad_bytes_per_step": distributed.grad_bytes_per_step(model),
        "final_scale": model.scale.item() if fixed else None,
        "eval_tokens": {"valid": state["val_ntok"], "test": test_ntok},
        "max_eval_tokens": cfg.max_eval_tokens, "max_train_tokens": cfg.max_train_tokens,
        "coverage": info["coverage"], "corpus": _corpus_info(corpus),
        "command": command, "versions": rundir.versions(), "git_commit": rundir.git_commit(),
        "config": {"train": asdict(cfg), "model": asdict(mcfg)},
    }
