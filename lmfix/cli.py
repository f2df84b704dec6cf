"""Command line: parses flags and calls one function per command.

A user's mistake (:class:`LmfixError`) ends with its message alone and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

from .data import DATA_HELP
from .embedding_parts import FIX_SIDES
from .embeddings.cli import register as register_embeddings
from .errors import Interrupted, LmfixError
from .inference_cli import register as register_inference
from .flags import TRAIN_FLAG_TYPES, positive_int
from .jobs import VariantsFailed
from .model import DEFAULT_DIM
from .report import write_report
from .run import PRESETS, VARIANTS_HELP, run
from .tokenizer import TokenizerConfig, add_tokenizer_flags
from .train import TrainConfig, train


def add_train_flags(p: argparse.ArgumentParser, defaults, only_given: bool = False) -> None:
    """Training flags shared by ``train`` and ``run``, defaults from TrainConfig.

    ``only_given``: a flag left out sets nothing (``run`` lets the preset decide), and its help
    names TrainConfig's default as the fallback.
    """
    d = defaults
    added: list[argparse.Action] = []

    def add(group, *names, **kw) -> None:
        dest = names[0].lstrip("-").replace("-", "_")
        if dest in TRAIN_FLAG_TYPES:  # every numeric flag: its checked range (lmfix.flags)
            kw["type"] = TRAIN_FLAG_TYPES[dest]
        added.append(group.add_argument(*names, **kw))

    g = p.add_argument_group("model")
    add(g, "--emsize", default=d.emsize,
        help=f"embedding size d (default: the embedding file's, else {DEFAULT_DIM})")
    add(g, "--nhid", default=d.nhid,
        help="LSTM hidden size (default: emsize; if different, a learned projection maps it "
             "to emsize before the tied classifier; it trains at a lower --lr than 20, "
             "see the README)")
    add(g, "--nlayers", default=d.nlayers, help="LSTM layers (default %(default)s)")
    add(g, "--dropout", default=d.dropout,
        help="dropout on embeddings and LSTM output (default %(default)s)")
    add(g, "--embedding-norm", choices=("raw", "unit", "mean-unit"), default=d.embedding_norm,
        help="scaling of a fixed embedding before use: raw, unit rows, or divided by the mean "
             "row norm (default %(default)s)")
    add(g, "--cosine", action="store_true", default=d.cosine,
        help="fixed classifier only (--fix both or output): cosine classifier, unit-norm rows "
             "and hidden state (the paper's image form)")
    add(g, "--scale-init", default=d.scale_init,
        help="fixed classifier only: initial learned logit scale (default 10 with --cosine, "
             "else 1)")
    add(g, "--fix", choices=FIX_SIDES, default=d.fix,
        help="with given vectors (a file, random-orthogonal, hadamard): which side keeps them "
             "fixed. both (default): fixed tied embedding and classifier; input: fixed input "
             "embedding, learned untied classifier starting from the vectors; output: fixed "
             "classifier (learned scale and bias), learned input embedding starting from them; "
             "none: a learned tied embedding starting from them. An error with learned, "
             "learned-untied")
    add(g, "--learn-top", default=d.learn_top, metavar="K",
        help="fixed tied embedding: the rows of the K most frequent training words train "
             "(starting from their fixed rows), the rest stay fixed: K x d more trainable "
             "parameters (default 0: off)")
    add(g, "--delta-rank", default=d.delta_rank, metavar="R",
        help="fixed tied embedding: use W + A B, W the fixed vectors, A (V x R, starts at 0) and "
             "B (R x d, random start, trained 100x more slowly than A: see "
             "lmfix.embedding_parts) trained: R (V + d) more trainable parameters "
             "(default 0: off)")
    add(g, "--oov", choices=("error", "random", "zero"), default=d.oov,
        help="LM words missing from an embedding file: error (default), a random vector of "
             "the mean norm, or zeros")
    added += add_tokenizer_flags(g, TokenizerConfig.from_flags(d))
    g = p.add_argument_group("training (defaults: the PyTorch word_language_model example)")
    add(g, "--lr", default=d.lr, help="initial learning rate (default %(default)s)")
    add(g, "--clip", default=d.clip,
        help="gradient norm clipping (default %(default)s; 0: no clipping)")
    add(g, "--epochs", default=d.epochs, help="epochs (default %(default)s)")
    add(g, "--batch-size", default=d.batch_size,
        help="training batch size: independent columns (default %(default)s)")
    add(g, "--eval-batch-size", default=d.eval_batch_size,
        help="evaluation batch size (default %(default)s, as the example)")
    add(g, "--bptt", default=d.bptt,
        help="truncated backpropagation length (default %(default)s)")
    add(g, "--optimizer", choices=("sgd", "adam", "adamw"), default=d.optimizer,
        help="sgd is the example's plain update (default %(default)s)")
    add(g, "--weight-decay", default=d.weight_decay,
        help="weight decay (default %(default)s)")
    add(g, "--seed", default=d.seed, help="random seed (default %(default)s)")
    add(g, "--device", default=d.device, help="auto, cpu or cuda (default %(default)s)")
    add(g, "--amp", action="store_true", default=d.amp,
        help="mixed precision: bfloat16 autocast for training (for CUDA GPUs; refused on CPUs "
             "without bfloat16 LSTM kernels)")
    add(g, "--tf32", action="store_true", default=d.tf32,
        help="CUDA only: let cuBLAS and cuDNN (the LSTM) use TF32 tensor cores for float32 "
             "work; no effect on CPUs. Off by default: exact float32, the example's numbers "
             "(a default to revisit once measured on a GPU: scripts/gpu_check.sh)")
    g = p.add_argument_group("budgets and logging")
    add(g, "--max-train-tokens", default=d.max_train_tokens,
        help="train on the first N tokens of the training split only")
    add(g, "--max-eval-tokens", default=d.max_eval_tokens,
        help="evaluate on the first N tokens of valid/test only (default: all; the summary "
             "records it)")
    add(g, "--max-minutes", default=d.max_minutes,
        help="stop training after M minutes, then validate and test")
    add(g, "--log-interval", default=d.log_interval,
        help="batches between progress records (default %(default)s)")
    add(g, "--checkpoint-every", default=d.checkpoint_every,
        help="minutes between mid-epoch checkpoints (default %(default)s; 0: epoch ends only)")
    if only_given:
        for action in added:
            if action.help and "%(default)s" in action.help:
                action.help = action.help.replace("%(default)s", f"{action.default}, unless "
                                                  "the preset sets it")
            action.default = argparse.SUPPRESS


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def cmd_train(args: argparse.Namespace) -> None:
    if args.resume:  # `--resume RUN_DIR`, or `--resume --out RUN_DIR`
        if args.out_given and args.out != args.resume:
            raise LmfixError(f"--resume {args.resume} and --out {args.out} name different runs")
        args.out = args.resume
    elif args.resume == "" and not args.out_given:
        raise LmfixError("--resume needs the run directory: lmfix train --resume RUN_DIR")
    cfg = config_from_args(TrainConfig, args)
    summary = train(cfg, command=args.command, resume=args.resume is not None, force=args.force,
                    progress=not args.quiet)
    if summary.get("world_size", 1) > 1 and os.environ.get("RANK", "0") != "0":
        return  # under torchrun, one summary line (rank 0's) is enough
    p = summary["params"]
    print(f"{summary['name']}: valid ppl {summary['val_ppl']:.2f} | test ppl "
          f"{summary['test_ppl']:.2f} | trainable {p['trainable']:,} | fixed {p['fixed']:,} | "
          f"{summary['tokens_per_s']:.0f} tokens/s -> {args.out}/summary.json")


def cmd_report(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else Path(args.runs[0])
    write_report([Path(r) for r in args.runs], out)
    print(f"report written to {out}/report.md and {out}/index.html")


def cmd_run(args: argparse.Namespace) -> None:
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if hasattr(args, f.name) and f.name not in ("data", "out", "embedding")}
    variants = args.variants.split(",") if args.variants else None
    failed = None
    try:
        run_dirs = run(args.preset, Path(args.out), args.data, variants, overrides,
                       force=args.force, progress=not args.quiet, command=args.command,
                       jobs=args.jobs)
    except VariantsFailed as e:  # --jobs: the others finished; report them, then exit 2
        run_dirs, failed = e.run_dirs, e
    write_report(run_dirs, Path(args.out))
    print(f"report: {args.out}/report.md and {args.out}/index.html")
    if failed is not None:
        raise failed


class _Parser(argparse.ArgumentParser):
    """Flag errors end like every other user error: one ``lmfix: error:`` line, exit 2
    (argparse would print the whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"lmfix: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lmfix", description="Language models with fixed word embeddings "
        "(Hoffer, Hubara & Soudry 2018, 'Fix your classifier').")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one LSTM language model into a run directory",
                       description="Train a 2-layer LSTM LM with a learned or fixed embedding.")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--embedding", default="learned",
                   help="learned (tied), learned-untied, random-orthogonal, hadamard, or an "
                        "embedding file (word2vec .txt/.bin, GloVe, fastText .vec, .npy + vocab) "
                        "used fixed and tied, or as --fix says (default %(default)s)")
    p.add_argument("--out", default=None,
                   help=f"run directory (default {TrainConfig.out})")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR (or --out) from its last checkpoint")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_train_flags(p, TrainConfig())
    p.set_defaults(func=cmd_train)

    register_embeddings(sub)
    register_inference(sub)  # evaluate, generate

    p = sub.add_parser("run", help="the whole comparison: embeddings, every variant, report",
                       description="Build word2vec and PMI embeddings, train every variant and "
                       "write the report. Finished variants in --out are kept; interrupted "
                       "ones resume. Training flags override the preset.")
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items())
                   + " (default %(default)s)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--out", default="runs/quick", help="output directory (default %(default)s)")
    p.add_argument("--variants", default=None, help=VARIANTS_HELP)
    p.add_argument("--force", action="store_true", help="redo embeddings and runs already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="variants trained at once, each in its own process (default "
                        "%(default)s: one after another). CPU cores are divided between them; "
                        "on CUDA they are spread over the visible GPUs. A variant that fails "
                        "does not stop the others (the command then exits 2 naming it)")
    add_train_flags(p, TrainConfig(), only_given=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.md, CSV/JSON, plots and index.html",
                       description="Summarize finished run directories (or directories of runs).")
    p.add_argument("runs", nargs="+", help="run directories, or directories holding them")
    p.add_argument("--out", default=None, help="where to write the report (default: first RUN)")
    p.set_defaults(func=cmd_report)
    return parser


# What an interrupted command leaves, and how to go on (training says it itself).
_CONTINUE = {
    "run": "built embeddings and finished variants are kept and an interrupted variant resumes "
           "from its checkpoint: rerun the same command to continue",
    "build-embeddings": "nothing half-written was left; rerun the same command to build it",
}


def _terminated(signum, frame):
    # SIGTERM's default would end the process silently with 143; raising lets every
    # atomic writer remove its temporary file and main() say what was stopped.
    raise Interrupted("interrupted by SIGTERM", "SIGTERM")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = "lmfix " + shlex.join(argv)
    if args.cmd == "train":
        args.out_given = args.out is not None
        args.out = args.out or TrainConfig.out
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        args.func(args)
    except KeyboardInterrupt:
        return _interrupted(args.cmd, Interrupted("interrupted by SIGINT (Ctrl-C)", "SIGINT"))
    except Interrupted as e:
        return _interrupted(args.cmd, e)
    except LmfixError as e:
        print(f"lmfix: error: {e}", file=sys.stderr)
        return 2
    return 0


def _interrupted(cmd: str, e: Interrupted) -> int:
    how = _CONTINUE.get(cmd)
    msg = f"{cmd} {e}" if how is None else f"{cmd} interrupted by {e.signal_name}; {how}"
    print(f"lmfix: {msg}", file=sys.stderr)
    return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
