"""``lmfix evaluate`` and ``lmfix generate``: flags in, one :mod:`lmfix.inference` call out.

Examples (a finished run in runs/quick/runs/learned)::

    lmfix evaluate runs/quick/runs/learned                  # test ppl, = summary.json's
    lmfix evaluate runs/quick/runs/learned --split all --json
    lmfix evaluate runs/quick/runs/learned --file notes.txt
    lmfix generate runs/quick/runs/learned --prompt "The king" --words 30 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys

from . import flags
from .config import help_text
from .data import read_lines
from .errors import LmfixError
from .fsutil import json_safe
from .inference import SAMPLES, TEMPERATURE, WORDS, LanguageModel, load

_RUN_HELP = "a finished run directory (config.json, best.pt, status finished)"
_DEVICE_HELP = "auto, cpu or cuda (default %(default)s)"


def register(subparsers) -> None:
    """Add ``evaluate`` and ``generate`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate", help="perplexity of a trained run on a corpus split or a text file",
        description="Perplexity, word-level perplexity and bits per character of a run's best "
                    "model (best.pt), tokenized as the run was trained. With the run's own "
                    "corpus and settings, valid/test reproduce summary.json. Words missing "
                    "from the run's vocabulary become <unk> and are counted.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=_RUN_HELP)
    p.add_argument("--data", default=None,
                   help=help_text("data").split(" (default")[0]
                   + " (default: the run's own, as config.json records it)")
    p.add_argument("--split", choices=("valid", "test", "train", "all"), default=None,
                   help="split of --data to evaluate (default test)")
    p.add_argument("--file", default=None, metavar="TEXT",
                   help="evaluate a plain text file instead, read like a corpus split (UTF-8, "
                        "one <eos> per line, lines of at most 10,000,000 characters); not with "
                        "--split")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--max-eval-tokens", type=flags.positive_int, default=None, metavar="N",
                   help="evaluate the first N tokens only (default: the run's max_eval_tokens, "
                        "usually all)")
    p.add_argument("--batch-size", type=flags.positive_int, default=None, metavar="B",
                   help="evaluation batch size (default: the run's eval_batch_size)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "generate", help="sample text from a trained run",
        description="Continue a prompt with a run's best model (best.pt). The LSTM reads "
                    "<eos> (a line start), then the prompt; --samples continuations are "
                    "sampled as one batch. Word-level output is WikiText-style tokens, one "
                    "line per <eos>; SentencePiece output is decoded text.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=_RUN_HELP)
    p.add_argument("--prompt", default="",
                   help="text to continue (default: none, start from <eos>); words missing "
                        "from the vocabulary become <unk>, a prompt of only such words is "
                        "refused")
    p.add_argument("--words", type=WORDS, default=50, metavar="N",
                   help="length: N tokens for a word-level run (<eos> counts as one); for a "
                        "SentencePiece run, pieces until N words are complete (a word starts "
                        f"at a '▁' piece or <eos>) (default %(default)s; {WORDS.allowed}). "
                        "The text is printed as it is generated")
    p.add_argument("--temperature", type=TEMPERATURE, default=1.0,
                   metavar="T", help="divide the logits by T > 0 (default %(default)s; small T "
                                     "approaches --top-k 1)")
    p.add_argument("--top-k", type=flags.positive_int, default=None, metavar="K",
                   help="sample among the K likeliest tokens only; 1 is greedy (default: all)")
    p.add_argument("--seed", type=flags.seed, default=None, metavar="S",
                   help="random seed: the same seed gives the same text (default: a random "
                        "one, printed to stderr)")
    p.add_argument("--samples", type=SAMPLES, default=1, metavar="M",
                   help="continuations to sample, as one batch (default %(default)s; "
                        f"{SAMPLES.allowed}, and what memory holds); with M > 1 each is "
                        "printed once complete, and Ctrl-C prints what each has so far")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.set_defaults(func=cmd_generate)


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.file is not None and args.split is not None:
        raise LmfixError("--split and --file do not go together: --file evaluates a text file, "
                         "--split a split of --data")
    lm = load(args.run_dir, device=args.device)
    limit = args.max_eval_tokens or lm.train_config.get("max_eval_tokens")
    if args.file is not None:
        res = lm.perplexity(read_lines(args.file), args.batch_size, limit, name=args.file)
        report = {"data": None, "file": args.file, "corpus": None, "splits": {"file": res}}
    else:
        report = lm.evaluate(args.split or "test", args.data, args.batch_size, limit)
        report["file"] = None
    report = {"run": str(lm.run_dir), "device": str(lm.device), **report,
              "warnings": [r["warning"] for r in report["splits"].values() if r["warning"]]}
    if args.json:
        print(json.dumps(json_safe(report), allow_nan=False))
    else:
        print(_render(lm, report))


def _render(lm: LanguageModel, report: dict) -> str:
    cfg = lm.model.cfg
    lines = [f"run: {report['run']} ({lm.config['train'].get('embedding', cfg.embedding)}, "
             f"{lm.tokenizer.label} tokens, vocabulary {len(lm.vocab):,}; best.pt on "
             f"{report['device']})"]
    if report["file"] is not None:
        lines.append(f"text: {report['file']}")
    else:
        lines.append(f"data: {report['data']} ({_corpus_words(report['corpus'])})")
    first = next(iter(report["splits"].values()))
    limit = f"first {first['max_tokens']:,} tokens" if first["max_tokens"] else "all tokens"
    lines.append(f"batch size {first['batch_size']}, bptt {first['bptt']}, {limit}")
    lines.append(f"{'split':<6} {'tokens':>11} {'ppl':>10} {'word ppl':>10} {'bpc':>7}  "
                 "OOV words -> <unk>")
    for name, r in report["splits"].items():
        row = (f"{name:<6} {r['tokens']:>11,} {_num(r['ppl'], 2):>10} "
               f"{_num(r['word_ppl'], 2):>10} {_num(r['bpc'], 3):>7}  "
               f"{r['unk']:,} ({r['unk_pct']:.2f}%)")
        if r.get("summary_ppl") is not None:
            row += f"   summary.json ppl {r['summary_ppl']:.2f}"
        lines.append(row)
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def _corpus_words(check: dict) -> str:
    if check["same_train_text"]:
        what = "the run's corpus: same training text (sha256)"
    else:
        what = "not the run's training text (its sha256 differs)"
    if "vocab_identical" in check:
        if check["vocab_identical"]:
            what += ", identical vocabulary"
        else:
            what += (f"; its vocabulary has {check['vocab_size']:,} words, "
                     f"{check['vocab_missing']:,} of them not in the run's")
            if check["vocab_missing_examples"]:
                what += f" (e.g. {' '.join(check['vocab_missing_examples'])})"
    return what


def _num(x, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cmd_generate(args: argparse.Namespace) -> None:
    lm = load(args.run_dir, device=args.device)
    _, unknown = lm.encode_prompt(args.prompt)  # refuses a prompt of unknown words only
    if unknown:
        print(f"lmfix: note: not in the run's vocabulary, read as <unk>: {' '.join(unknown)}",
              file=sys.stderr)
    seed = args.seed
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
        print(f"lmfix: seed {seed} (pass --seed {seed} to repeat)",
              file=sys.stderr)
    pieces = lm.stream(args.prompt, words=args.words, temperature=args.temperature,
                       top_k=args.top_k, seed=seed, samples=args.samples)
    if args.samples == 1:  # printed as it comes: a long text shows progress, Ctrl-C keeps it
        try:
            for _, text in pieces:
                sys.stdout.write(text)
                sys.stdout.flush()
        finally:
            sys.stdout.write("\n")
            sys.stdout.flush()
        return
    texts = [""] * args.samples
    try:
        for b, text in pieces:
            texts[b] += text
    except KeyboardInterrupt:  # what each sample has so far, then the one-line stop message
        _print_samples(texts, " (stopped)")
        raise
    _print_samples(texts)


def _print_samples(texts: list[str], note: str = "") -> None:
    for i, text in enumerate(texts, 1):
        print(f"--- sample {i}{note} ---")
        print(text)
    sys.stdout.flush()
