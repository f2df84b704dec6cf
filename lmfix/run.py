"""The whole comparison: build embeddings and train every variant, at every seed (``lmfix run``
then writes the report with :mod:`lmfix.report`).

    OUT/
      embeddings/   word2vec-d200.bin, pmi-d200.bin (+ .json sidecars), reused when settings match,
                    one per dimension and seed the variants need (word2vec-d200-seed-1112.bin);
                    FILE.intrinsic.json: word similarity and analogy scores
      runs/NAME/    one run directory per variant at the run's --seed (see lmfix.rundir);
      runs/NAME-seed-S/  the same variant at each further seed of --seeds
      logs/NAME.log what each variant's worker printed (``--jobs`` > 1 only; see lmfix.jobs)
      run.json      the preset, variants, seeds and settings of the last ``lmfix run``
      .lock         held while an ``lmfix run`` works here (a second one is refused)

A variant whose run is finished is not trained again; one that was interrupted or crashed is
resumed from its last checkpoint. A setting changed since (a rerun with other flags) follows
the resume rule of :func:`lmfix.config.resume_changes`: epochs or the time budget take effect
and a finished run trains on; a setting that defines the run is refused by name. ``force``
redoes everything. A seed is the seed of everything random in a run, its built embedding
included: the spread over seeds is the spread of the whole method.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from .config import (DEFAULTS, VARIANT_KEYS, TrainConfig, from_saved, parse_value,
                     resume_changes, train_command, with_model_defaults)
from .data import Corpus, load_corpus
from .device import pick_device
from .embedding_spec import BASIS_SPECS, LEARNED_SPECS, check_embedding_options
from .errors import LmfixError
from .flags import positive_int, seed as seed_range
from .fsutil import read_json, write_json
from .jobs import VariantsFailed, train_parallel, worker_main
from .model import DEFAULT_DIM
from .rundir import CONFIG, RunDir
from .tokenizer import TokenizerConfig, same_tokenizer
from .train import train

DEFAULT_VARIANTS = ("learned", "learned-untied", "word2vec", "pmi", "random-orthogonal")
BUILT_METHODS = ("word2vec", "pmi")  # variants whose embedding this command builds
# Their settings: the methods' defaults, but word2vec on one thread, since gensim's threads
# make it irreproducible and a report's numbers must come out the same on a rerun.
BUILD_PARAMS = {"word2vec": {"workers": 1}, "pmi": {}}
MAX_SEEDS = 1000


@dataclass
class Preset:
    name: str
    description: str
    train: dict = field(default_factory=dict)  # TrainConfig overrides
    cuda: dict = field(default_factory=dict)  # further overrides when training runs on CUDA
    variants: Callable[[int], list[str]] | None = None  # d -> default variants (else DEFAULT_)


def frontier_variants(d: int) -> list[str]:
    """The frontier grid at embedding size ``d``: from no trainable embedding to all of it.

    learned tied at d/4, d/2 (whole smaller models, nhid = emsize) and d (16, 32, 64 at the CPU
    d = 64), learned untied, word2vec and PMI with each --fix side, word2vec with --learn-top
    1000/5000 and --delta-rank 4/16, and the random orthogonal basis: 17 runs of one epoch.
    """
    fixes = [f"{m}{'' if side == 'both' else f':fix={side}'}" for m in ("word2vec", "pmi")
             for side in ("both", "input", "output", "none")]
    smaller = [f"learned:emsize={e}:nhid={e}" for e in (d // 4, d // 2)]
    return (smaller + ["learned", "learned-untied"] + fixes
            + ["word2vec:learn-top=1000", "word2vec:learn-top=5000",
               "word2vec:delta-rank=4", "word2vec:delta-rank=16", "random-orthogonal"])


PRESETS = {
    # The paper's LM: 2-layer LSTM, d = 512 (Hoffer et al. 2018), in the example's SGD regime.
    # Dropout 0.5: the regularization the example and Zaremba et al. use at 650 units ("medium"),
    # since 0.2 overfits WikiText-2 badly once d is in the hundreds.
    "paper": Preset("paper", "2-layer LSTM, d = 512, SGD lr 20, 40 epochs, dropout 0.5 (GPU)",
                    {"emsize": 512, "nhid": 512, "dropout": 0.5, "epochs": 40}),
    # Minutes on a 2-core CPU for all five variants (docs/results.md), still on real
    # WikiText-2 with the full valid and test splits (at d = 64 they cost ~50 s per variant,
    # half the time). Training sees the first 300k tokens (a seventh of an epoch) once,
    # without dropout (a model this far from fitting only loses by it): enough to rank the
    # variants early in training, not to reproduce converged perplexities. Logged every 50
    # batches so the scale's growth shows.
    "quick": Preset("quick", "d = 64, first 300k training tokens, full valid/test (2-core CPU)",
                    {"emsize": 64, "nhid": 64, "dropout": 0.0, "epochs": 1,
                     "max_train_tokens": 300_000, "log_interval": 50}),
    # Validation perplexity against trainable parameters (issue 14): every variant of
    # frontier_variants trains one full epoch (no dropout, as quick), at d = 64 on a CPU and at
    # the paper's d = 512 on CUDA. The smaller learned variants are whole smaller models (nhid =
    # emsize): with nhid = 64 and a projection down to emsize 16, SGD at lr 20 barely trained
    # (val ppl 1,741 after the epoch), so that point would measure the projection, not the size.
    "frontier": Preset("frontier", "17 variants along the trainable-parameter axis (--fix, "
                       "--learn-top, --delta-rank, learned at 3 sizes), 1 full epoch each, d = 64 "
                       "(d = 512 on CUDA)",
                       {"emsize": 64, "nhid": 64, "dropout": 0.0, "epochs": 1,
                        "max_train_tokens": None, "log_interval": 100},
                       cuda={"emsize": 512, "nhid": 512}, variants=frontier_variants),
}

VARIANTS_HELP = (
    "comma-separated variants, each NAME or NAME:KEY=VALUE[:KEY=VALUE...]. NAME: "
    + ", ".join(DEFAULT_VARIANTS) + ", hadamard, or an embedding file; KEY: "
    + ", ".join(VARIANT_KEYS) + " (the train flags of those names, for that variant alone). "
    "The run is named NAME-KEY-VALUE...: word2vec:fix=input -> word2vec-fix-input, "
    "pmi:learn-top=1000 -> pmi-learn-top-1000, learned:emsize=32 -> learned-emsize-32. "
    "Run-wide --fix/--learn-top/--delta-rank apply to the variants with vectors only. Default: "
    "the preset's list (frontier: its grid), else " + ",".join(DEFAULT_VARIANTS))
SEEDS_HELP = (
    "train every variant at several seeds: K (the run's --seed and the K - 1 after it), or a "
    "comma-separated list such as 1111,1,2. The run at --seed is runs/NAME, every other seed "
    "S runs/NAME-seed-S; a finished seed is never retrained, so a rerun with more seeds trains "
    "only the new ones, and the report shows mean ± sd over seeds (default: 1, the --seed "
    "alone)")


@dataclass(frozen=True)
class Variant:
    """One ``--variants`` entry: its run name, what it is built from, and its own settings."""

    name: str
    base: str  # a built method, a built-in (learned, ..., hadamard) or an embedding file path
    settings: tuple[tuple[str, object], ...] = ()  # (TrainConfig field, value), in given order


def parse_variants(text: str | None) -> list[str] | None:
    """``--variants``: None when not given; an empty list (``''``) is refused as one empty
    entry is (``learned,,x``)."""
    if text is None:
        return None
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise LmfixError(f"--variants {text!r} has an empty entry; name variants such as "
                         "learned,word2vec (leave the flag out for the preset's list)")
    return [item.strip() for item in items]


def parse_variant(text: str) -> Variant:
    """``word2vec:fix=input`` -> Variant("word2vec-fix-input", "word2vec", (("fix", "input"),)).

    An existing file is a file even if its name holds a ":". Values are checked as the flags
    of the same name check them; a bad entry is one :class:`LmfixError`.
    """
    if Path(text).is_file():
        path = Path(text)
        return Variant(f"file-{path.stem}", str(path.resolve()))
    head, *pairs = text.split(":")
    name, base = variant_spec(head, {m: m for m in BUILT_METHODS})
    settings: dict[str, object] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or key not in VARIANT_KEYS or not raw:
            raise LmfixError(f"variant {text!r}: {pair!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(VARIANT_KEYS)} (e.g. word2vec:fix=input)")
        field_ = VARIANT_KEYS[key]
        if field_ in settings:
            raise LmfixError(f"variant {text!r}: {key} is given twice")
        try:
            value = parse_value(field_, raw)
        except ValueError as e:
            raise LmfixError(f"variant {text!r}: {key}: {e}") from None
        settings[field_] = value
        name += f"-{key}-{value}"
    return Variant(name, base, tuple(settings.items()))


def parse_seeds(text: str | None, base_seed: int) -> list[int]:
    """``--seeds``: K (``base_seed`` and the K - 1 after it) or an explicit list."""
    if text is None:
        return [base_seed]
    items = [t.strip() for t in text.split(",")]
    if len(items) == 1:
        why = positive_int.error(_int(items[0]))
        if why or _int(items[0]) > MAX_SEEDS:
            raise LmfixError(f"--seeds {text}: a number of seeds is an integer in [1, "
                             f"{MAX_SEEDS}]; a list of seeds is comma-separated (1111,1,2)")
        seeds = [base_seed + i for i in range(_int(items[0]))]
    else:
        seeds = [_int(t) for t in items]
        bad = [t for t, s in zip(items, seeds) if seed_range.error(s)]
        if bad:
            raise LmfixError(f"--seeds {text}: {', '.join(bad)} is not a seed "
                             f"({seed_range.allowed})")
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            raise LmfixError(f"--seeds {text} names seed {', '.join(map(str, twice))} twice")
    if any(s > 2**32 - 1 for s in seeds):
        raise LmfixError(f"--seeds {text}: with --seed {base_seed} the seeds pass "
                         f"{seed_range.allowed}; use a smaller --seed or a list")
    return seeds


def _int(text: str):
    try:
        return int(text)
    except ValueError:
        return text  # refused by the range check, by name


def seed_suffix(seed: int, base_seed: int) -> str:
    """"" for the run's own --seed, "-seed-S" for every other: run and file names."""
    return "" if seed == base_seed else f"-seed-{seed}"


def variant_config(base: TrainConfig, v: Variant) -> TrainConfig:
    """``base`` with the variant's own settings; run-wide --fix/--learn-top/--delta-rank are
    dropped for learned variants (they have no vectors to fix). Checked here, before any
    embedding is built or run trained."""
    cfg = replace(base, **dict(v.settings))
    if v.base in LEARNED_SPECS:
        own = dict(v.settings)
        cfg = replace(cfg, **{k: DEFAULTS[k] for k in ("fix", "learn_top", "delta_rank")
                              if k not in own})
    try:
        check_embedding_options(v.base, cfg.fix, cfg.learn_top, cfg.delta_rank)
    except LmfixError as e:
        raise LmfixError(f"variant {v.name}: {e}") from None
    return cfg


def variant_spec(variant: str, embedding_files: dict[str, Path]) -> tuple[str, str]:
    """(run name, --embedding value) for a variant: a built method, a built-in, or a file."""
    if variant in BUILT_METHODS:
        return variant, str(embedding_files[variant])
    if variant in LEARNED_SPECS + BASIS_SPECS:
        return variant, variant
    path = Path(variant)
    if not path.is_file():
        raise LmfixError(f"variant {variant!r}: not one of {', '.join(DEFAULT_VARIANTS)}, "
                         "hadamard, or an embedding file")
    return f"file-{path.stem}", str(path.resolve())


def ensure_embedding(method: str, corpus: Corpus, dim: int, seed: int, path: Path,
                     force: bool, progress: bool = False) -> Path:
    """Build (or reuse) the method's embedding with BUILD_PARAMS at ``dim`` into ``path``."""
    params = BUILD_PARAMS[method]
    from .embeddings.build import build_and_save, make_config  # scipy, gensim: only here
    from .embeddings.vectors import sidecar_path
    sidecar = sidecar_path(path)
    if path.is_file() and sidecar.is_file() and not force:
        meta = read_json(sidecar)
        same = (meta.get("corpus", {}).get("sha256") == corpus.train_sha256
                and meta.get("dim") == dim and meta.get("seed") == seed
                and meta.get("params") == asdict(make_config(method, params))
                and same_tokenizer(meta.get("tokenizer"), corpus.tokenizer.identity()))
        if same:
            print(f"reusing {path}")
            return path
    t0 = time.perf_counter()
    build_and_save(method, corpus, dim, path, params, seed=seed, progress=progress)
    print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    return path


def run(preset: str, out: Path, data: str | None, variants: list[str] | None = None,
        overrides: dict | None = None, force: bool = False, progress: bool = True,
        command: str = "", jobs: int = 1, seeds: list[int] | None = None,
        baseline: str | None = None) -> list[Path]:
    """Build the embeddings and train every variant at every seed; returns the run
    directories, variant by variant, seeds in the order given.

    ``seeds`` (default: the base config's seed alone) are whole-run seeds: embeddings are
    built per seed too. ``baseline``, the report's reference variant, is checked here, before
    anything trains. ``jobs`` > 1 trains that many runs at once, each in a worker process
    (lmfix.jobs); a run that fails there does not stop the others, and
    :class:`lmfix.jobs.VariantsFailed` (carrying the run directories) is raised once all have
    ended. Another ``lmfix run`` working in ``out`` is refused (its lock).
    """
    if preset not in PRESETS:
        raise LmfixError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if positive_int.error(jobs):
        raise LmfixError(f"--jobs: {positive_int.error(jobs)}")
    if variants is not None and not variants:
        raise LmfixError("--variants is empty; name at least one variant")
    chosen = PRESETS[preset]
    base = _base_config(chosen, data, overrides or {})
    if not variants:
        variants = (chosen.variants(base.emsize or DEFAULT_DIM) if chosen.variants
                    else list(DEFAULT_VARIANTS))
    # catch a typo or a misfit setting before anything is built, trained or written
    parsed = [parse_variant(v) for v in variants]
    settings = [variant_config(base, v) for v in parsed]
    names = [v.name for v in parsed]
    if len(set(names)) != len(names):
        raise LmfixError("--variants names a run twice: "
                         + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    suffix = TokenizerConfig.from_settings(base).suffix
    if baseline is not None and baseline not in [n + suffix for n in names]:
        raise LmfixError(f"--baseline {baseline!r} is not a variant of this run: "
                         + ", ".join(n + suffix for n in names))
    out = Path(out)
    with RunDir(out).lock(command):
        return _run(chosen, base, out, variants, parsed, settings, force, progress, command,
                    jobs, seeds or [base.seed])


def _base_config(chosen: Preset, data: str | None, overrides: dict) -> TrainConfig:
    preset_cfg = dict(chosen.train)
    if chosen.cuda and pick_device(overrides.get("device", DEFAULTS["device"])).type == "cuda":
        preset_cfg.update(chosen.cuda)
    # words missing from the built embeddings: the tokenizer's default (a flag given still wins)
    preset_cfg["oov"] = TokenizerConfig(overrides.get("tokenizer", DEFAULTS["tokenizer"])
                                        ).default_oov
    return replace(TrainConfig(), data=data, **{**preset_cfg, **with_model_defaults(overrides)})


def _run(chosen: Preset, base: TrainConfig, out: Path, variants: list[str],
         parsed: list[Variant], settings: list[TrainConfig], force: bool, progress: bool,
         command: str, jobs: int, seeds: list[int]) -> list[Path]:
    corpus = load_corpus(base.data, TokenizerConfig.from_settings(base))
    V = len(corpus.vocab)
    for v, cfg in zip(parsed, settings):  # what needs the vocabulary, still before any build
        dim = cfg.emsize or (DEFAULT_DIM if v.base in BUILT_METHODS + LEARNED_SPECS
                             + BASIS_SPECS else None)
        try:
            check_embedding_options(v.base, cfg.fix, cfg.learn_top, cfg.delta_rank, V, dim)
        except LmfixError as e:
            raise LmfixError(f"variant {v.name}: {e}") from None
    files: dict[tuple[str, int, int], Path] = {}  # (method, d, seed) -> built file
    for v, cfg in zip(parsed, settings):
        for seed in seeds:
            key = (v.base, cfg.emsize or DEFAULT_DIM, seed)
            if v.base in BUILT_METHODS and key not in files:
                name = f"{v.base}-d{key[1]}{corpus.tokenizer.suffix}" \
                       f"{seed_suffix(seed, base.seed)}.bin"
                files[key] = ensure_embedding(v.base, corpus, key[1], seed,
                                              out / "embeddings" / name, force, progress)
    record_intrinsic(list(files.values()), corpus)
    cfgs = []
    for v, cfg in zip(parsed, settings):
        for seed in seeds:
            key = (v.base, cfg.emsize or DEFAULT_DIM, seed)
            spec = str(files[key]) if v.base in BUILT_METHODS else v.base
            # the tokenizer's suffix keeps subword runs distinct beside word runs
            name = f"{v.name}{corpus.tokenizer.suffix}{seed_suffix(seed, base.seed)}"
            cfgs.append(replace(cfg, embedding=spec, seed=seed, out=str(out / "runs" / name)))
    run_dirs = [Path(cfg.out) for cfg in cfgs]
    planned = [(cfg, plan_variant(cfg, force)) for cfg in cfgs]  # refusals before training
    failed = {}
    if jobs == 1:
        for cfg, _ in planned:
            _train_variant(cfg, corpus, force, progress)
    else:
        todo = []
        for cfg, action in planned:
            if action == "kept":
                print(f"{Path(cfg.out).name}: finished already, kept")
            else:
                todo.append((cfg, action))
        failed = train_parallel(todo, out, force, jobs)
    write_json(out / "run.json", {"preset": chosen.name, "command": command,
                                  "variants": variants, "seeds": seeds, "base": asdict(base)})
    if failed:
        raise VariantsFailed(run_dirs, failed, out)
    return run_dirs


def plan_variant(cfg: TrainConfig, force: bool) -> str:
    """What a variant's run directory needs: "kept" (finished, nothing more to train),
    "resume" (a checkpoint to continue from, or a finished run given more to train) or
    "fresh". A setting that defines the run and differs from the one there is refused by name
    (the resume rule), unless ``force``."""
    out = RunDir(cfg.out)
    if force or not (out / CONFIG).is_file():
        return "fresh"  # (a worker that failed before training records status, no config)
    changes = resume_changes(from_saved(out.read_config()["train"], str(out.path)), cfg,
                             str(out.path))
    if out.finished:
        return "resume" if {"epochs", "max_minutes"} & set(changes) else "kept"
    return "resume" if out.resumable else "fresh"


def record_intrinsic(paths: list[Path], corpus: Corpus) -> None:
    """Word similarity and analogy scores of each built embedding, in FILE.intrinsic.json
    beside it (lmfix.embeddings.intrinsic; the report shows them). Words only: the test sets
    hold words, not a subword tokenizer's pieces."""
    if not paths or not corpus.tokenizer.tokens_are_words:
        return
    from .embeddings.intrinsic import ensure_scores, headline, word_counts
    counts = word_counts(corpus)
    for path in paths:
        t0 = time.perf_counter()
        h = headline(ensure_scores(path, counts))
        shown = ", ".join(f"{k} {'—' if v is None else f'{v:.3f}'}" for k, v in h.items())
        print(f"intrinsic {path.name}: {shown} ({time.perf_counter() - t0:.0f} s)")


def _train_variant(cfg: TrainConfig, corpus: Corpus | None, force: bool, progress: bool) -> None:
    """One variant, as planned; its run directory is locked from the plan to the end."""
    out = RunDir(cfg.out)
    with out.lock(train_command(cfg)):
        action = plan_variant(cfg, force)
        if action == "kept":
            print(f"{out.name}: finished already, kept")
            return
        if action == "resume":
            print(f"{out.name}: {out.status().state}, resuming from its last checkpoint")
            train(cfg, command=train_command(cfg), corpus=corpus, resume=True,
                  progress=progress)
            return
        print(f"== {out.name}: training ({cfg.embedding})")
        train(cfg, command=train_command(cfg), corpus=corpus, force=True, progress=progress)


if __name__ == "__main__":  # a worker of ``lmfix run --jobs N`` (lmfix.jobs)
    import sys
    sys.exit(worker_main(sys.argv[1:], _train_variant))
