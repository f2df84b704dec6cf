"""Command line: parses flags and calls one function per command.

A user's mistake (:class:`LmfixError`) ends with its message alone and exit status 2; Ctrl-C
and SIGTERM with one line and 130 / 143 (:mod:`lmfix.signals`). The training settings' flags
come from their one definition in :mod:`lmfix.config`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from . import signals
from .config import (DEFAULTS, SETTINGS, TrainConfig, add_train_flags, given_settings, help_text,
                     with_model_defaults)
from .embeddings.cli import register as register_embeddings
from .errors import Interrupted, LmfixError
from .flags import positive_int
from .inference_cli import register as register_inference
from .jobs import VariantsFailed
from .report import write_report
from .run import PRESETS, SEEDS_HELP, VARIANTS_HELP, parse_seeds, parse_variants, run
from .train import resume, train


def cmd_train(args: argparse.Namespace) -> None:
    given = given_settings(args)
    if args.resume is not None:  # `--resume RUN_DIR`, or `--resume --out RUN_DIR`
        out = args.resume or given.pop("out", None)
        if not out:
            raise LmfixError("--resume needs the run directory: lmfix train --resume RUN_DIR")
        if given.get("out", out) != out:
            raise LmfixError(f"--resume {out} and --out {given['out']} name different runs")
        given.pop("out", None)
        # the run's own settings, then what this command line changes (lmfix.config's rule)
        summary = resume(out, command=args.command, progress=not args.quiet, **given)
    else:
        summary = train(TrainConfig(**with_model_defaults(given)), command=args.command,
                        force=args.force,
                        progress=not args.quiet)
    if summary.get("world_size", 1) > 1 and os.environ.get("RANK", "0") != "0":
        return  # under torchrun, one summary line (rank 0's) is enough
    p = summary["params"]
    print(f"{summary['name']}: valid ppl {summary['val_ppl']:.2f} | test ppl "
          f"{summary['test_ppl']:.2f} | trainable {p['trainable']:,} | fixed {p['fixed']:,} | "
          f"{summary['tokens_per_s']:.0f} tokens/s -> {summary['config']['train']['out']}/"
          "summary.json")


def cmd_report(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else Path(args.runs[0])
    write_report([Path(r) for r in args.runs], out, baseline=args.baseline)
    print(f"report written to {out}/report.md and {out}/index.html")


def cmd_run(args: argparse.Namespace) -> None:
    # the training settings given (run's own --data and --out say where, not how to train)
    overrides = {k: v for k, v in given_settings(args).items() if SETTINGS[k].in_run}
    variants = parse_variants(args.variants)
    seeds = parse_seeds(args.seeds, overrides.get("seed", DEFAULTS["seed"]))
    failed = None
    try:
        run_dirs = run(args.preset, Path(args.out), args.data, variants, overrides,
                       force=args.force, progress=not args.quiet, command=args.command,
                       jobs=args.jobs, seeds=seeds, baseline=args.baseline)
    except VariantsFailed as e:  # --jobs: the others finished; report them, then exit 2
        run_dirs, failed = e.run_dirs, e
    write_report(run_dirs, Path(args.out), baseline=args.baseline)
    print(f"report: {args.out}/report.md and {args.out}/index.html")
    if failed is not None:
        raise failed


class _Parser(argparse.ArgumentParser):
    """Flag errors end like every other user error: one ``lmfix: error:`` line, exit 2
    (argparse would print the whole usage block first)."""

    def error(self, message: str):
        message = " ".join(message.split("\n"))  # one line, whatever a value held
        self.exit(2, f"lmfix: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lmfix", description="Language models with fixed word embeddings "
        "(Hoffer, Hubara & Soudry 2018, 'Fix your classifier').")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one LSTM language model into a run directory",
                       description="Train a 2-layer LSTM LM with a learned or fixed embedding.")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR (or --out) from its last checkpoint. Flags given "
                        "with it change the run only where a running run may change (epochs, "
                        "--max-minutes, --log-interval, --checkpoint-every, --device, --tf32, "
                        "--data with the same text): they take effect and config.json records "
                        "them; a flag that defines the run (sizes, embedding, lr, seed, ...) "
                        "and differs is refused")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

    register_embeddings(sub)
    register_inference(sub)  # evaluate, generate

    p = sub.add_parser("run", help="the whole comparison: embeddings, every variant, report",
                       description="Build word2vec and PMI embeddings, train every variant and "
                       "write the report. Finished variants in --out are kept; interrupted "
                       "ones resume; training flags override the preset (a rerun with a changed "
                       "flag follows lmfix train --resume's rule).")
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items())
                   + " (default %(default)s)")
    p.add_argument("--data", default=None, help=help_text("data"))
    p.add_argument("--out", default="runs/quick", help="output directory (default %(default)s)")
    p.add_argument("--variants", default=None, help=VARIANTS_HELP)
    p.add_argument("--seeds", default=None, metavar="K|S1,S2,...", help=SEEDS_HELP)
    p.add_argument("--baseline", default=None, metavar="VARIANT", help=BASELINE_HELP)
    p.add_argument("--force", action="store_true", help="redo embeddings and runs already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs trained at once, each in its own process (default "
                        "%(default)s: one after another). CPU cores are divided between them; "
                        "on CUDA they are spread over the visible GPUs. A run that fails "
                        "does not stop the others (the command then exits 2 naming it)")
    add_train_flags(p, for_run=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.md, CSV/JSON, plots and index.html",
                       description="Summarize finished run directories (or directories of runs).")
    p.add_argument("runs", nargs="+", help="run directories, or directories holding them")
    p.add_argument("--out", default=None, help="where to write the report (default: first RUN)")
    p.add_argument("--baseline", default=None, metavar="VARIANT", help=BASELINE_HELP)
    p.set_defaults(func=cmd_report)
    return parser


BASELINE_HELP = ("the variant every other is compared with (difference of mean perplexities, "
                 "95%% CI, Welch's t-test over seeds); an error if no variant has that name "
                 "(default: learned, the learned tied embedding, when there is one)")

# What an interrupted command leaves, and how to go on (training says it itself).
_CONTINUE = {
    "run": "built embeddings and finished variants are kept and an interrupted variant resumes "
           "from its checkpoint: rerun the same command to continue",
    "build-embeddings": "nothing half-written was left; rerun the same command to build it",
}


def main(argv: list[str] | None = None) -> int:
    """The ``lmfix`` command. Called as a program (``argv`` None) it leaves SIGINT/SIGTERM
    ignored once interrupted, so nothing runs again while the interpreter shuts down; called
    with ``argv`` (tests, other Python code) it puts the caller's handlers back."""
    previous = {s: signal.getsignal(s) for s in signals.SIGNALS}
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.command = "lmfix " + shlex.join(sys.argv[1:] if argv is None else argv)
    signals.install()
    try:
        args.func(args)
    except Interrupted as e:
        signals.ignore()
        return _interrupted(args.cmd, e)
    except KeyboardInterrupt:
        signals.ignore()
        return _interrupted(args.cmd, Interrupted("interrupted by SIGINT (Ctrl-C)", "SIGINT"))
    except LmfixError as e:
        print(f"lmfix: error: {e}", file=sys.stderr)
        return 2
    finally:
        if argv is not None and threading.current_thread() is threading.main_thread():
            for s, h in previous.items():
                if h is not None:
                    signal.signal(s, h)
    return 0


def _interrupted(cmd: str, e: Interrupted) -> int:
    how = _CONTINUE.get(cmd)
    msg = f"{cmd} {e}" if how is None else f"{cmd} interrupted by {e.signal_name}; {how}"
    print(f"lmfix: {msg}", file=sys.stderr)
    return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
