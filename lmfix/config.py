"""Every training setting, defined once: :class:`TrainConfig`, one field per setting.

Each field's metadata (a :class:`Setting`, made by :func:`setting`) says everything else the
code needs to know about it — its help text, allowed range or choices, flag group, whether a
``--variants`` item may set it, and whether a resumed run may change it. From that one
definition this module derives

- the flags of ``lmfix train`` and ``lmfix run`` (:func:`add_train_flags`),
- the range and choice checks of a config built in Python (:func:`check_config`),
- the per-variant keys of ``lmfix run --variants NAME:KEY=VALUE`` (:data:`VARIANT_KEYS`),
- the ``lmfix train`` command that reproduces a config (:func:`train_command`), written into
  every report row,
- the resume rule (:func:`resume_changes`): a setting that may change mid-run takes effect and
  is recorded; one that defines the run is refused by name,

and ``docs/cli.md`` is generated from the parser (``scripts/make_cli_doc.py``). Adding a
setting is one field here plus its use (as nanoGPT keeps one commented line per setting).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import flags
from .errors import LmfixError

GROUPS = {  # flag groups of --help, in this order
    "run": "run",
    "model": "model",
    "training": "training (defaults: the PyTorch word_language_model example)",
    "budget": "budgets and logging",
}
FIX_SIDES = ("both", "input", "output", "none")  # --fix (lmfix.embedding_parts: the layouts)
EMBEDDING_NORMS = ("raw", "unit", "mean-unit")
OOV_POLICIES = ("error", "random", "zero")
OPTIMIZERS = ("sgd", "adam", "adamw")
MODELS = ("lstm", "gru", "rnn-tanh", "rnn-relu", "transformer")  # = lmfix.model.MODELS
POSITIONS = ("sinusoidal", "learned")  # = lmfix.transformer.POSITIONS
TOKENIZERS = ("word", "sentencepiece")
SP_MODEL_TYPES = ("unigram", "bpe")


@dataclass(frozen=True)
class Setting:
    """What lmfix knows about one setting besides its name, type and default."""

    help: str
    range: flags.Range | None = None  # numbers: the allowed values (argparse type and check)
    choices: tuple[str, ...] | None = None  # words: the allowed values
    group: str = "training"
    # None is allowed and means this (said in --help); a setting without it never holds None
    none_means: str | None = None
    variant: bool = False  # a --variants item may set it for one variant (NAME:KEY=VALUE)
    # "change": may change when a run is resumed (recorded in config.json); "keep": it defines
    # the model, the data, the tokenizer or the optimisation so far, and a change is refused
    on_resume: str = "keep"
    in_run: bool = True  # `lmfix run` takes it as an override of the preset's value
    metavar: str | None = None
    # free text (neither a range nor choices): the function that checks it, where it is used
    checked_by: str | None = None


def setting(default: Any, help: str, **kw) -> Any:
    """A dataclass field carrying its :class:`Setting`."""
    return field(default=default, metadata={"setting": Setting(help=help, **kw)})


DATA_HELP = ("corpus: a directory with train.txt/valid.txt/test.txt (or wiki.*.tokens), or "
             "hub:CONFIG for Salesforce/wikitext on the Hugging Face hub (e.g. hub:wikitext-2-v1)")


@dataclass
class TrainConfig:
    # where the corpus is read from: a resumed run may read it elsewhere, but the same text
    # (the training split's sha256 is checked against the run's)
    data: str | None = setting(None, DATA_HELP, group="run", none_means="$LMFIX_DATA, else "
                               "hub:wikitext-2-v1", in_run=False, on_resume="change",
                               checked_by="lmfix.data.read_text")
    embedding: str = setting(
        "learned", "learned (tied), learned-untied, random-orthogonal, hadamard, or an embedding "
        "file (word2vec .txt/.bin, GloVe, fastText .vec, .npy + vocab) used fixed and tied, or "
        "as --fix says", group="run", in_run=False,
        checked_by="lmfix.embedding_spec.resolve_embedding")
    out: str = setting("runs/run", "run directory", group="run", in_run=False,
                       checked_by="lmfix.rundir.RunDir.prepare")
    emsize: int | None = setting(None, "embedding size d", range=flags.positive_int,
                                 group="model", variant=True,
                                 none_means="the embedding file's, else 200")
    nhid: int | None = setting(
        None, "RNN hidden size; if it differs from emsize, a learned projection maps it to "
        "emsize before the tied classifier (it trains at a lower --lr than 20: docs/results.md). "
        "For the transformer: its feed-forward width (the example's meaning)",
        range=flags.positive_int, group="model", variant=True, none_means="emsize")
    model: str = setting("lstm", "the sequence model: lstm (the default, the example's), gru, "
                         "rnn-tanh, rnn-relu (nn.GRU / nn.RNN on the LSTM's code path) or "
                         "transformer (decoder-only, causal: lmfix.transformer); every embedding "
                         "mode works with each", choices=MODELS, group="model")
    nlayers: int = setting(2, "layers of the sequence model", range=flags.positive_int,
                           group="model")
    nhead: int = setting(2, "transformer only: attention heads; must divide emsize (the "
                         "example's 2)", range=flags.positive_int, group="model")
    positions: str = setting("sinusoidal", "transformer only: sinusoidal positions as the "
                             "example, or a learned table of bptt positions",
                             choices=POSITIONS, group="model")
    norm: str = setting("pre", "transformer only: pre-LayerNorm blocks (GPT-2's) or post "
                        "(the original Transformer's); measured in docs/results.md",
                        choices=("pre", "post"), group="model")
    dropout: float = setting(0.2, "dropout on embeddings and RNN output; for the transformer "
                             "also on attention weights and each residual branch",
                             range=flags.dropout, group="model")
    lr: float = setting(20.0, "initial learning rate", range=flags.positive_f32)
    clip: float = setting(0.25, "gradient norm clipping (0: no clipping)",
                          range=flags.nonneg_f32)
    epochs: int = setting(40, "epochs; a resumed run may be given more",
                          range=flags.positive_int, on_resume="change")
    batch_size: int = setting(20, "training batch size: independent columns",
                              range=flags.positive_int)
    eval_batch_size: int = setting(10, "evaluation batch size, as the example",
                                   range=flags.positive_int)
    bptt: int = setting(35, "truncated backpropagation length", range=flags.positive_int)
    seed: int = setting(1111, "random seed", range=flags.seed)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", on_resume="change",
                          checked_by="lmfix.device.pick_device")
    optimizer: str = setting("sgd", "sgd is the example's plain update", choices=OPTIMIZERS)
    weight_decay: float = setting(0.0, "weight decay", range=flags.nonneg_f32)
    warmup: int = setting(0, "steps over which the lr rises linearly from lr/steps to lr at "
                          "the start of training (0: none)", range=flags.nonneg_int)
    lr_decay: float = setting(4.0, "divide the lr by this whenever validation loss does not "
                              "improve (1: never)",
                              range=flags.float_in(1, flags.F32_MAX, name="lr_decay"))
    max_train_tokens: int | None = setting(
        None, "train on the first N tokens of the training split only (0: all, which lifts "
        "a preset's cap)", range=flags.nonneg_int, group="budget", none_means="all")
    max_eval_tokens: int | None = setting(
        None, "evaluate on the first N tokens of valid/test only; the summary records it",
        range=flags.nonneg_int, group="budget", none_means="all")
    max_minutes: float | None = setting(
        None, "stop training after M minutes (of the whole run, resumes included), then "
        "validate and test; at least one step always runs", range=flags.positive_finite_float,
        group="budget", none_means="no limit", on_resume="change")
    embedding_norm: str = setting(
        "unit", "scaling of a fixed embedding before use: raw, unit rows, or divided by the "
        "mean row norm (unit: measured best, docs/embeddings.md)", choices=EMBEDDING_NORMS,
        group="model", variant=True)
    cosine: bool = setting(False, "fixed classifier only (--fix both or output): cosine "
                           "classifier, unit-norm rows and hidden state (the paper's image "
                           "form)", group="model")
    scale_init: float | None = setting(None, "fixed classifier only: initial learned logit "
                                       "scale", range=flags.positive_f32, group="model",
                                       none_means="10 with --cosine, else 1")
    fix: str | None = setting(
        None, "with given vectors (a file, random-orthogonal, hadamard): which side keeps them "
        "fixed. both: fixed tied embedding and classifier; input: fixed input embedding, "
        "learned untied classifier starting from the vectors; output: fixed classifier "
        "(learned scale and bias), learned input embedding starting from them; none: a "
        "learned tied embedding starting from them. An error with learned, learned-untied",
        choices=FIX_SIDES, group="model", variant=True, none_means="both, with given vectors")
    learn_top: int = setting(
        0, "fixed tied embedding: the rows of the K most frequent training words train "
        "(starting from their fixed rows), the rest stay fixed: K x d more trainable "
        "parameters (0: off; at most the vocabulary size)", range=flags.nonneg_int,
        group="model", variant=True, metavar="K")
    delta_rank: int = setting(
        0, "fixed tied embedding: use W + A B, W the fixed vectors, A (V x R, starts at 0) and "
        "B (R x d, random start, trained 100x more slowly than A: lmfix.embedding_parts) "
        "trained: R (V + d) more trainable parameters (0: off; at most min(V, d))",
        range=flags.nonneg_int, group="model", variant=True, metavar="R")
    oov: str = setting("error", "LM words missing from an embedding file: error, a random "
                       "vector of the mean norm, or zeros", choices=OOV_POLICIES, group="model")
    amp: bool = setting(False, "mixed precision: bfloat16 autocast for training (for CUDA "
                        "GPUs; refused on CPUs without bfloat16 LSTM kernels)")
    tf32: bool = setting(False, "CUDA only: let cuBLAS and cuDNN (the LSTM) use TF32 tensor "
                         "cores for float32 work; no effect on CPUs. Off: exact float32, the "
                         "example's numbers", on_resume="change")
    tokenizer: str = setting("word", "word: the example's word-level tokens; sentencepiece: a "
                             "subword model trained on the training split (embeddings and runs "
                             "must use the same tokenizer settings)", choices=TOKENIZERS,
                             group="model")
    sp_model_type: str = setting("unigram", "SentencePiece model type", choices=SP_MODEL_TYPES,
                                 group="model")
    sp_vocab_size: int = setting(8000, "SentencePiece vocabulary size",
                                 range=flags.sp_vocab_size, group="model")
    log_interval: int = setting(200, "batches between progress records",
                                range=flags.positive_int, group="budget", on_resume="change")
    checkpoint_every: float = setting(10.0, "minutes between mid-epoch checkpoints (0: at "
                                      "epoch ends only)", range=flags.nonneg_finite_float,
                                      group="budget", on_resume="change")

    def __post_init__(self) -> None:
        # 0 tokens means "no limit" (how `lmfix run` lifts a preset's cap); one spelling, None,
        # is kept so configs compare equal on resume
        for name in ("max_train_tokens", "max_eval_tokens"):
            if getattr(self, name) == 0:
                setattr(self, name, None)


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(TrainConfig)}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TrainConfig)}
# --variants NAME:KEY=VALUE: KEY (the flag without "--") -> field
VARIANT_KEYS: dict[str, str] = {name.replace("_", "-"): name for name, s in SETTINGS.items()
                                if s.variant}


def flag_name(name: str) -> str:
    """``max_train_tokens`` → ``--max-train-tokens``."""
    return "--" + name.replace("_", "-")


def _value_type(name: str) -> type:
    t = TrainConfig.__dataclass_fields__[name].type
    return bool if t == "bool" else str if "str" in t else float if "float" in t else int


def help_text(name: str, preset: bool = False) -> str:
    """The flag's help: its text and its default (``preset``: as ``lmfix run`` shows it)."""
    s, default = SETTINGS[name], DEFAULTS[name]
    if _value_type(name) is bool:
        shown = "on" if default else "off"
    elif default is None:
        shown = s.none_means
    else:
        shown = flags.format_number(default) if isinstance(default, (int, float)) else default
    notes = [f"--model {m}: {flags.format_number(d[name])}" for m, d in MODEL_DEFAULTS.items()
             if name in d]
    notes += [s.range.allowed] if s.range is not None else []
    notes += ["may change on --resume"] if s.on_resume == "change" else []
    notes += ["a --variants key"] if s.variant else []
    where = "the preset's, else " if preset else ""
    return f"{s.help} (default: {where}{shown}{''.join('; ' + n for n in notes)})"


def add_train_flags(parser: argparse.ArgumentParser, for_run: bool = False,
                    only: tuple[str, ...] | None = None) -> None:
    """Add the settings' flags (``only``: those named) to ``parser``, in their groups.

    A flag that is not given sets nothing (argparse.SUPPRESS): the namespace holds exactly the
    settings the user gave (:func:`given_settings`), so a preset, a saved run or TrainConfig's
    default supplies the rest, and a resumed run can tell what was asked of it.
    """
    groups: dict[str, Any] = {}
    for name, s in SETTINGS.items():
        if (only is not None and name not in only) or (for_run and not s.in_run):
            continue
        if s.group not in groups:
            groups[s.group] = parser.add_argument_group(GROUPS[s.group])
        kw: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS,
                                  help=help_text(name, preset=for_run))
        if _value_type(name) is bool:
            kw["action"] = "store_true"
        else:
            kw["type"] = s.range if s.range is not None else str
            if s.choices:
                kw["choices"] = s.choices
            if s.metavar:
                kw["metavar"] = s.metavar
        groups[s.group].add_argument(flag_name(name), **kw)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gave (flags added by :func:`add_train_flags`)."""
    return {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}


def setting_error(name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for setting ``name``, or None."""
    s = SETTINGS[name]
    if value is None and s.none_means is not None:
        return None
    if _value_type(name) is bool:
        return None if isinstance(value, bool) else f"{value!r} is not true or false"
    if s.choices is not None:
        return None if value in s.choices else \
            f"{value!r} is not one of {', '.join(s.choices)}"
    if s.range is not None:
        return s.range.error(value)
    return None if isinstance(value, str) else f"{value!r} is not text"


# Settings only one family of models has: given (not at their default) with another model, a
# mistake, refused rather than ignored (as the example ignores --tied for its Transformer).
TRANSFORMER_ONLY = ("nhead", "positions", "norm")


def check_config(cfg: TrainConfig) -> None:
    """One :class:`LmfixError` listing every setting of ``cfg`` outside its range or choices
    (the CLI's flags are checked when parsed; a config built in Python is checked here), and
    the settings that do not apply to its ``--model``."""
    problems = [f"{flag_name(name)}: {why}" for name in SETTINGS
                if (why := setting_error(name, getattr(cfg, name)))]
    if cfg.model != "transformer":
        problems += [f"{flag_name(name)} applies to --model transformer only, not {cfg.model}"
                     for name in TRANSFORMER_ONLY if getattr(cfg, name) != DEFAULTS[name]]
    elif isinstance(cfg.emsize, int) and isinstance(cfg.nhead, int) and cfg.nhead > 0 \
            and cfg.emsize % cfg.nhead:
        problems.append(f"--nhead {cfg.nhead} does not divide --emsize {cfg.emsize} (each head "
                        "gets emsize / nhead dimensions)")
    if problems:
        raise LmfixError("; ".join(problems))


# The training settings a model family trains well with, applied where the setting is not
# given (`lmfix train`, and the presets of `lmfix run`). The Transformer's: the best point of
# scripts/sweep_transformer.py (docs/results.md: the example's SGD at lr 20 reached val ppl
# 3,051 where AdamW at 3e-3 reached 471; the warm-up and clip changed it by ~1%).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "transformer": {"optimizer": "adamw", "lr": 3e-3, "warmup": 100, "clip": 1.0},
}


def with_model_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` settings, with its model's defaults for the settings it leaves out."""
    return {**MODEL_DEFAULTS.get(given.get("model", DEFAULTS["model"]), {}), **given}


def parse_value(name: str, text: str) -> Any:
    """The value of setting ``name`` written as ``text`` (a --variants item), checked."""
    s = SETTINGS[name]
    if s.range is not None:
        return s.range.parse(text)
    if s.choices is not None and text not in s.choices:
        raise ValueError(f"{text!r} is not one of {', '.join(s.choices)}")
    return text


def train_command(cfg: TrainConfig) -> str:
    """The ``lmfix train`` command that reproduces ``cfg``: data, embedding and out, then every
    setting that differs from its default."""
    parts = ["lmfix", "train"]
    for name, value in asdict(cfg).items():
        if value == DEFAULTS[name] and name not in ("data", "embedding", "out"):
            continue
        if isinstance(value, bool):
            parts += [flag_name(name)] if value else []
        elif value is not None:
            parts += [flag_name(name), str(value)]
    return shlex.join(parts)


def from_saved(saved: dict, where: str) -> TrainConfig:
    """The TrainConfig a run's config.json records, or an error naming what does not fit."""
    unknown, missing = sorted(set(saved) - set(SETTINGS)), sorted(set(SETTINGS) - set(saved))
    if unknown or missing:
        raise LmfixError(f"{where} was made by another lmfix version (its config.json "
                         + (f"records settings this one lacks: {', '.join(unknown)}"
                            if unknown else f"lacks the settings {', '.join(missing)}")
                         + "); train it again with this one")
    try:
        return TrainConfig(**saved)
    except TypeError as e:
        raise LmfixError(f"{where}: not an lmfix training config ({e})") from None


def resume_changes(saved: TrainConfig, given: TrainConfig, where: str,
                   ignore: tuple[str, ...] = ("out",)) -> dict[str, tuple[Any, Any]]:
    """{setting: (saved value, given value)} for the settings a resumed run may change and
    ``given`` changes; a change to a setting that defines the run is refused, in one
    :class:`LmfixError` naming each such setting with both values."""
    changes, refused = {}, []
    for name, s in SETTINGS.items():
        old, new = getattr(saved, name), getattr(given, name)
        if name in ignore or old == new:
            continue
        if s.on_resume == "change":
            changes[name] = (old, new)
        else:
            refused.append(f"{flag_name(name)} {_shown(new)} (the run has {_shown(old)})")
    if refused:
        raise LmfixError(f"{where} was made with other settings, which a resumed run cannot "
                         f"change: {'; '.join(refused)}. Start a new run (another --out, or "
                         "--force to replace it)")
    return changes


def _shown(value: Any) -> str:
    return "(default)" if value is None else str(value)
