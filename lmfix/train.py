"""Training, in the regime of the PyTorch ``word_language_model`` example.

Plain SGD at lr 20 with gradient clipping 0.25, lr divided by 4 whenever validation loss does
not improve, the best-validation model kept and tested; eval batch size 10; perplexity is
exp(token-weighted mean NLL) (:mod:`lmfix.evaluation`). Everything a run produces goes into its
run directory (:mod:`lmfix.rundir`), and a checkpoint at every epoch end (and every few
minutes) lets ``--resume`` continue exactly where the run stopped.

Reading order: :func:`train` sets a run up (fresh, or resumed under the rule of
:func:`lmfix.config.resume_changes`), :func:`fit` alternates :func:`train_one_epoch` (the
example's ``train()``: batch → forward → loss → backward → clip → step) and :func:`end_epoch`
(validate, keep the best, anneal, checkpoint). What happens beside a step — the interval log,
the stop checks, checkpoints — is :class:`lmfix.train_state.Bookkeeping`'s; where training is
lives in one :class:`~lmfix.train_state.TrainState`, checkpointed as it is.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import random
import time
from dataclasses import asdict

import torch

from . import distributed, evaluation
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, check_config, from_saved, resume_changes
from .data import Corpus, batchify, get_batch, load_corpus
from .device import check_amp, describe, pick_device, set_tf32
from .distributed import Dist
from .embedding_parts import top_ids
from .embedding_spec import check_embedding_options, planned, resolve_embedding, resolve_fix
from .errors import Interrupted, LmfixError
from .evaluation import Stopped, ppl
from .memory import check_fits, estimate_train_bytes
from .model import LM, ModelConfig, count_params, normalize_vectors
from .provenance import git_commit, versions
from .rundir import BEST, RunDir
from .signals import Flag
from .tokenizer import TokenizerConfig
from .train_state import Bookkeeping, Run, TrainState, checkpoint, restore

__all__ = ["TrainConfig", "build_model", "resume", "train"]


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":  # the example's manual update p -= lr * grad, as an optimizer
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise LmfixError(f"--optimizer {name!r}: use sgd, adam or adamw")


def tokens_used(cfg: TrainConfig, corpus: Corpus) -> int:
    """Token ids a run holds: the training split (up to --max-train-tokens) and the scored
    splits (up to --max-eval-tokens each)."""
    def cap(n: int, limit: int | None) -> int:
        return min(n, limit) if limit else n
    return cap(corpus.train.numel(), cfg.max_train_tokens) + sum(
        cap(corpus.split(s).numel(), cfg.max_eval_tokens) for s in ("valid", "test"))


def build_model(cfg: TrainConfig, corpus: Corpus,
                device: torch.device = torch.device("cpu")) -> tuple[LM, ModelConfig, dict]:
    """The model (seeded with ``cfg.seed``), refused up front when it cannot fit ``device``."""
    V = len(corpus.vocab)
    fix = resolve_fix(cfg.embedding, cfg.fix)
    known = planned(cfg.embedding, cfg.emsize)
    check_embedding_options(cfg.embedding, cfg.fix, cfg.learn_top, cfg.delta_rank, V,
                            known[1] if known else None)

    def check_size(mode: str, dim: int) -> None:
        check_fits(estimate_train_bytes(
            V, dim, cfg.nhid, cfg.nlayers, cfg.batch_size, cfg.bptt, mode, cfg.optimizer,
            cfg.eval_batch_size, device_type=device.type, amp=cfg.amp, fix=fix,
            learn_top=cfg.learn_top, delta_rank=cfg.delta_rank, model=cfg.model,
            nhead=cfg.nhead, positions=cfg.positions, tokens=tokens_used(cfg, corpus)), device)

    if known:  # before a V×d basis is built (a file's size is already on disk)
        check_size(*known)
    res = resolve_embedding(cfg.embedding, corpus.vocab.words, cfg.emsize, cfg.seed, cfg.oov,
                            corpus.tokenizer.identity())
    if not known:
        check_embedding_options(cfg.embedding, cfg.fix, cfg.learn_top, cfg.delta_rank, V,
                                res.dim)
        check_size(res.mode, res.dim)
    if cfg.model == "transformer" and res.dim % cfg.nhead:
        raise LmfixError(f"--nhead {cfg.nhead} does not divide the embedding's {res.dim} "
                         "dimensions (each head gets emsize / nhead)")
    mcfg = ModelConfig(vocab_size=V, emsize=res.dim, nhid=cfg.nhid or res.dim,
                       nlayers=cfg.nlayers, dropout=cfg.dropout, embedding=res.mode,
                       cosine=cfg.cosine, scale_init=cfg.scale_init, fix=fix,
                       learn_top=cfg.learn_top, delta_rank=cfg.delta_rank, model=cfg.model,
                       nhead=cfg.nhead, positions=cfg.positions, context=cfg.bptt,
                       norm=cfg.norm)
    # The table as made or read is let go once normalized (a new tensor), so that it and the
    # model's own copy are the most held at once: two V × d (lmfix.memory's "build"); at
    # V = 268k, d = 512 a third copy made the build the run's peak.
    matrix, res.matrix = res.matrix, None
    fixed = normalize_vectors(matrix, cfg.embedding_norm) if matrix is not None else None
    del matrix
    # --learn-top: the most frequent words of the whole training split
    top = top_ids(corpus.train, V, cfg.learn_top) if cfg.learn_top else None
    torch.manual_seed(cfg.seed)
    model = LM(mcfg, fixed, top)
    info = {"embedding_source": res.source, "coverage": res.coverage}
    return model, mcfg, info


def train(cfg: TrainConfig, command: str = "", corpus: Corpus | None = None,
          resume: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Train one model into ``cfg.out``; returns the summary (also written as summary.json).

    ``resume``: continue the run in ``cfg.out``. A setting of ``cfg`` that differs from the
    run's and may change mid-run (epochs, time budget, intervals, device) takes effect and is
    recorded in config.json; one that defines the run is refused (lmfix.config). A finished
    run with nothing more to train returns its summary as it is. Under ``torchrun`` every
    process calls this; see lmfix.distributed.
    """
    check_config(cfg)  # the CLI checked its flags; a config made in Python is checked here
    check_embedding_options(cfg.embedding, cfg.fix, cfg.learn_top, cfg.delta_rank)
    out = RunDir(cfg.out)
    device = pick_device(cfg.device)
    if cfg.amp:
        check_amp(device)
    set_tf32(device, cfg.tf32)
    d = distributed.setup(device)
    ok = False
    try:
        if d.enabled and device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
        # One process trains in a run directory at a time (only rank 0 under torchrun).
        with out.lock(command) if d.is_main else contextlib.nullcontext():
            saved = out.read_config() if resume else None
            changes = resume_changes(from_saved(saved["train"], str(out.path)), cfg,
                                     str(out.path)) if resume else None
            if not resume and d.is_main:
                out.prepare(force=force)
            run = _setup(cfg, corpus, device, d, command, changes, saved)
            if resume and out.finished and not run.state.more_to_train(cfg):
                if changes and d.is_main:
                    print(f"lmfix: note: {out.path} is finished with nothing more to train "
                          f"under these settings (epochs {cfg.epochs}, --max-minutes "
                          f"{cfg.max_minutes}); its summary stands", flush=True)
                summary = out.read_summary()
            else:
                with Flag() as run.stop_flag:
                    summary = _fit_and_finish(run, progress and d.is_main)
        ok = True
        return summary
    finally:
        distributed.shutdown(d, ok)


def resume(run_dir: str | os.PathLike, command: str = "", corpus: Corpus | None = None,
           progress: bool = True, **changes) -> dict:
    """Continue the run in ``run_dir`` with its own settings and ``changes`` (settings by
    name, e.g. ``epochs=80``), under :func:`train`'s resume rule; returns the summary."""
    out = RunDir(run_dir)
    saved = from_saved(out.read_config()["train"], str(out.path))
    unknown = sorted(set(changes) - set(asdict(saved)))
    if unknown:
        raise LmfixError(f"no such setting: {', '.join(unknown)}")
    cfg = TrainConfig(**{**asdict(saved), **changes, "out": str(out.path)})
    return train(cfg, command=command, corpus=corpus, resume=True, progress=progress)


def _setup(cfg: TrainConfig, corpus: Corpus | None, device, d: Dist, command: str,
           changes: dict | None, saved: dict | None) -> Run:
    """Corpus, model, optimizer and data on the device; a fresh state or the checkpoint's
    (``changes`` not None: a resume, with the settings it changes; ``saved``: config.json)."""
    corpus = corpus or load_corpus(cfg.data, TokenizerConfig.from_settings(cfg))
    if saved is not None and corpus.train_sha256 != saved["corpus"]["train_sha256"]:
        raise LmfixError(f"--data {cfg.data}: its training text is not the one {cfg.out} was "
                         f"trained on (sha256 {corpus.train_sha256[:12]}…, the run's "
                         f"{saved['corpus']['train_sha256'][:12]}…)")
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
    run = Run(cfg, corpus, model, mcfg, info, net, opt,
              {k: v.to(device) for k, v in data.items()}, TrainState(lr=cfg.lr), device, d,
              RunDir(cfg.out), command=command, warnings=_unk_warnings(corpus))
    if changes is not None:
        restore(run)
        run.state.resume_under(cfg)
        if d.is_main:
            _record_resume(run.out, cfg, changes)
    elif d.is_main:
        sha = corpus.tokenizer.save_into(run.out.path)  # the run stays usable without a cache
        run.out.write_config({"train": asdict(cfg), "model": asdict(mcfg), "command": command,
                              "corpus": _corpus_info(corpus), **info,
                              "params": count_params(model),
                              "tokenizer": corpus.tokenizer.identity(),
                              "tokenizer_sha256": sha, "resumed": []})
    if d.is_main:
        for w in run.warnings:
            print(f"lmfix: warning: {w}", flush=True)
    return run


def _record_resume(out: RunDir, cfg: TrainConfig, changes: dict) -> None:
    """config.json keeps the settings in force and, per resume, when and what changed."""
    config = out.read_config()
    config["train"] = asdict(cfg)
    config["resumed"] = config.get("resumed", []) + [{
        "at": _dt.datetime.now().isoformat(timespec="seconds"),
        "changes": {k: {"from": old, "to": new} for k, (old, new) in changes.items()}}]
    out.write_config(config)


def _unk_warnings(corpus: Corpus) -> list[str]:
    """Scored splits made mostly of words the training text never had."""
    return [w for s in ("valid", "test")
            if (w := evaluation.unk_warning(corpus.unk_replaced.get(s, 0),
                                            corpus.split(s).numel(), f"the {s} split"))]


def _fit_and_finish(run: Run, progress: bool) -> dict:
    """:func:`fit` then :func:`_finish`, with the run directory's status telling how it ended
    (a run that cannot be finished, such as a diverged one, is failed, not left running)."""
    if run.main:
        run.out.mark_running()
    try:
        fit(run, progress)
        return _finish(run)
    except Stopped as stop:
        checkpoint(run)
        why = f"stopped by {stop.args[0]} in epoch {run.state.epoch}"
        if run.main:
            run.out.mark_interrupted(why)
        raise Interrupted(f"{why}; checkpoint saved. Continue with: "
                          f"lmfix train --resume {run.out.path}", stop.args[0]) from None
    except KeyboardInterrupt:  # an Interrupted from outside the loop's signal flag
        if run.main:
            run.out.mark_interrupted(f"stopped in epoch {run.state.epoch}")
        raise
    except BaseException as e:
        if run.main:
            run.out.mark_failed(f"{type(e).__name__}: {e}")
        raise


def fit(run: Run, progress: bool = False) -> None:
    """Epochs until ``--epochs`` (or the time budget) is reached."""
    run.started = time.perf_counter() - run.state.wall_s
    run.last_checkpoint = time.perf_counter()
    while run.state.more_to_train(run.cfg):
        if run.state.phase == "train":
            train_one_epoch(run, progress)
        end_epoch(run)


def train_one_epoch(run: Run, progress: bool = False) -> None:
    """One pass over the training batches, from ``state.batch`` on (the example's train())."""
    cfg, model, data = run.cfg, run.model, run.data["train"]
    params = [p for p in model.parameters() if p.requires_grad]
    nbatches = len(range(0, data.size(0) - 1, cfg.bptt))
    hidden = run.state.hidden or model.init_hidden(data.size(1))
    book = Bookkeeping(run, nbatches, progress)
    run.net.train()
    for batch in range(run.state.batch, nbatches):
        if book.stop_before(batch, hidden):  # a signal raises Stopped; out of time: True
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
        book.warm_up()
        run.opt.step()
        book.after_step(loss.detach(), y.numel(), batch, hidden)
    else:
        batch = nbatches
    book.end(batch, hidden)


def end_epoch(run: Run) -> None:
    """Validate; keep the best model or anneal the lr (the example's schedule); checkpoint."""
    model, state = run.model, run.state
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
            save_checkpoint(run.out / BEST, {"model": model.state_dict()})
    else:
        state.lr /= run.cfg.lr_decay
        for g in run.opt.param_groups:
            g["lr"] = state.lr
    state.next_epoch(time.perf_counter() - run.started)
    checkpoint(run)
    if run.dist.enabled:  # best.pt must be on disk before any process reads it
        torch.distributed.barrier()


def _validate(run: Run) -> tuple[float, float]:
    """(validation loss, mean training loss of the epoch), both over all processes."""
    state, d = run.state, run.dist
    # Under torchrun a signal reaches the processes at different chunks: finish evaluating.
    interrupted = None if d.enabled else run.stop_flag
    with d.meter.outside_steps():
        val_loss, state.val_ntok = evaluation.mean_nll(run.model, run.data["valid"],
                                                       run.cfg.bptt, d, interrupted)
        train_sum = distributed.all_reduce_sum([state.epoch_loss], d, run.device)[0]
    if not math.isfinite(ppl(val_loss)):
        raise LmfixError(f"validation loss became {val_loss} in epoch {state.epoch}; "
                         f"the last good checkpoint is kept in {run.out.path} (try a lower --lr)")
    return val_loss, train_sum / d.world_size / max(state.epoch_batches, 1)


def _finish(run: Run) -> dict:
    """Test the best model, write summary.json and mark the run finished."""
    if not run.state.tokens_seen:  # a summary of no training would be a number from nothing
        raise LmfixError(f"no training step ran (--max-minutes {run.cfg.max_minutes} ended the "
                         "run before the first batch); nothing to report")
    with run.dist.meter.outside_steps():
        # Training is over: its gradients and optimizer state go before the best model is
        # read, and the file is mapped rather than read whole, so testing needs less memory
        # than a step did (read into memory beside them, the copy was the run's peak: at
        # V = 268k, d = 512 up to the parameters' and the fixed table's size again).
        run.opt.zero_grad(set_to_none=True)
        run.opt.state.clear()
        best = load_checkpoint(run.out / BEST, map_location=run.device, mmap=True)["model"]
        run.model.load_state_dict(best)
        del best
        test_loss, test_ntok = evaluation.mean_nll(run.model, run.data["test"], run.cfg.bptt,
                                                   run.dist)
        if not (test_ntok and run.state.val_ntok):
            raise LmfixError(f"evaluated {run.state.val_ntok} validation and {test_ntok} test "
                             "tokens; perplexity needs at least one of each")
        _check_not_diverged(run, {"validation": run.state.best_val, "test": test_loss})
        summary = _summary(run, test_loss, test_ntok)
        if run.dist.enabled:  # evidence that DDP kept every replica identical
            checksum = sum(p.double().sum().item() for p in run.model.parameters())
            summary["param_checksums"] = distributed.gather_objects(checksum, run.dist)
    if run.main:
        run.out.mark_finished(summary)
    return summary


def _check_not_diverged(run: Run, losses: dict[str, float]) -> None:
    """A perplexity far above a uniform guess's (the vocabulary size) is a run that diverged,
    like a NaN loss, not a result (``--delta-rank 5000`` on V = 3,324: test ppl 124,029,772)."""
    V = run.mcfg.vocab_size
    for what, loss in losses.items():
        if evaluation.diverged(loss, V):
            raise LmfixError(
                f"the best model's {what} perplexity is {ppl(loss):,.2f}, more than "
                f"{evaluation.DIVERGED_FACTOR}x a uniform guess over the {V:,} tokens of the "
                f"vocabulary: the run diverged (try a lower --lr); no summary written")


def _corpus_info(corpus: Corpus) -> dict:
    return {"name": corpus.name, "source": corpus.source, "train_sha256": corpus.train_sha256,
            "vocab_size": len(corpus.vocab), "unk_replaced": corpus.unk_replaced}


def _summary(run: Run, test_loss: float, test_ntok: int) -> dict:
    cfg, state, model, mcfg, corpus = run.cfg, run.state, run.model, run.mcfg, run.corpus
    params = count_params(model)
    levels = {}
    for split, key, loss in (("valid", "val", state.best_val), ("test", "test", test_loss)):
        w = evaluation.word_level(loss, run.data[split], corpus.tokenizer,
                                  corpus.words.get(split, 0), corpus.chars.get(split, 0))
        levels.update({f"{key}_word_ppl": w["word_ppl"], f"{key}_bpc": w["bpc"]})
    return {
        "name": run.out.name, "embedding": cfg.embedding,
        "embedding_source": run.info["embedding_source"],
        "tied": model.layout.tied, "fixed": model.layout.fixed,  # which sides: both ... none
        "fix": mcfg.fix, "learn_top": mcfg.learn_top, "delta_rank": mcfg.delta_rank,
        "emsize": mcfg.emsize, "nhid": mcfg.nhid, "nlayers": mcfg.nlayers,
        "vocab_size": mcfg.vocab_size, "params": params, "seed": cfg.seed,
        "val_loss": state.best_val, "val_ppl": ppl(state.best_val),
        "test_loss": test_loss, "test_ppl": ppl(test_loss), **levels,
        "tokenizer": corpus.tokenizer.identity(),
        "epochs": state.epoch - 1, "best_epoch": state.best_epoch,
        "train_tokens": state.tokens_seen,
        "tokens_per_s": state.tokens_seen / max(state.train_seconds, 1e-9),
        "wall_s": state.wall_s, **describe(run.device), "world_size": run.dist.world_size,
        # the arithmetic (every trainable parameter's gradient, once) beside the measurement
        "grad_bytes_per_step_formula": distributed.grad_bytes_per_step(model),
        **run.dist.meter.summary(),
        "final_scale": model.scale.item() if model.scale is not None else None,
        "eval_tokens": {"valid": state.val_ntok, "test": test_ntok},
        "eval_context": evaluation.context_of(model, cfg.bptt), "model": mcfg.model,
        "max_eval_tokens": cfg.max_eval_tokens, "max_train_tokens": cfg.max_train_tokens,
        "warnings": run.warnings,
        "coverage": run.info["coverage"], "corpus": _corpus_info(corpus),
        "command": run.command, "versions": versions(), "git_commit": git_commit(),
        "config": {"train": asdict(cfg), "model": asdict(mcfg)},
    }
