"""The whole comparison: build embeddings and train every variant (``lmfix run`` then writes
the report with :mod:`lmfix.report`).

    OUT/
      embeddings/   word2vec-d200.bin, pmi-d200.bin (+ .json sidecars), reused when settings match,
                    one per dimension the variants need; FILE.intrinsic.json: word similarity
                    and analogy scores (lmfix.embeddings.intrinsic)
      runs/NAME/    one run directory per variant (see lmfix.rundir)
      logs/NAME.log what each variant's worker printed (``--jobs`` > 1 only; see lmfix.jobs)
      run.json      the preset, variants and settings of the last ``lmfix run``

A variant whose run is finished is not trained again; one that was interrupted or crashed is
resumed from its last checkpoint. ``force`` redoes everything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import rundir
from .data import Corpus, load_corpus
from .embedding_parts import FIX_SIDES
from .embedding_spec import LEARNED_SPECS, check_embedding_options
from .errors import LmfixError
from .flags import TRAIN_FLAG_TYPES, positive_int
from .fsutil import read_json, write_json
from .jobs import VariantsFailed, train_parallel, worker_main
from .model import DEFAULT_DIM
from .tokenizer import TokenizerConfig, same_tokenizer
from .train import TrainConfig, pick_device, train

DEFAULT_VARIANTS = ("learned", "learned-untied", "word2vec", "pmi", "random-orthogonal")
BUILT_METHODS = ("word2vec", "pmi")  # variants whose embedding this command builds
# Their settings: the methods' defaults, but word2vec on one thread, since gensim's threads
# make it irreproducible and a report's numbers must come out the same on a rerun.
BUILD_PARAMS = {"word2vec": {"workers": 1}, "pmi": {}}


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
    # 9-16 minutes on a 2-core CPU (AVX-512 or AVX2) for all five variants, still on real
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

# Per-variant settings, "NAME:KEY=VALUE:KEY=VALUE": KEY (a train flag without "--") -> field.
VARIANT_KEYS = {"fix": "fix", "learn-top": "learn_top", "delta-rank": "delta_rank",
                "emsize": "emsize", "nhid": "nhid", "embedding-norm": "embedding_norm"}
_CHOICES = {"fix": FIX_SIDES, "embedding_norm": ("raw", "unit", "mean-unit")}
VARIANTS_HELP = (
    "comma-separated variants, each NAME or NAME:KEY=VALUE[:KEY=VALUE...]. NAME: "
    + ", ".join(DEFAULT_VARIANTS) + ", hadamard, or an embedding file; KEY: "
    + ", ".join(VARIANT_KEYS) + " (the train flags of those names, for that variant alone). "
    "The run is named NAME-KEY-VALUE...: word2vec:fix=input -> word2vec-fix-input, "
    "pmi:learn-top=1000 -> pmi-learn-top-1000, word2vec:delta-rank=4 -> word2vec-delta-rank-4, "
    "learned:emsize=32 -> learned-emsize-32. Run-wide --fix/--learn-top/--delta-rank apply "
    "to the variants with vectors only. Default: the preset's list (frontier: its grid), "
    "else " + ",".join(DEFAULT_VARIANTS))


@dataclass(frozen=True)
class Variant:
    """One ``--variants`` entry: its run name, what it is built from, and its own settings."""

    name: str
    base: str  # a built method, a built-in (learned, ..., hadamard) or an embedding file path
    settings: tuple[tuple[str, object], ...] = ()  # (TrainConfig field, value), in given order


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
        if field_ in _CHOICES:
            if raw not in _CHOICES[field_]:
                raise LmfixError(f"variant {text!r}: {key} must be one of "
                                 f"{', '.join(_CHOICES[field_])}, not {raw!r}")
            value: object = raw
        else:
            try:
                value = TRAIN_FLAG_TYPES[field_].parse(raw)
            except ValueError as e:
                raise LmfixError(f"variant {text!r}: {key}: {e}") from None
        settings[field_] = value
        name += f"-{key}-{value}"
    return Variant(name, base, tuple(settings.items()))


def variant_config(base: TrainConfig, v: Variant) -> TrainConfig:
    """``base`` with the variant's own settings; run-wide --fix/--learn-top/--delta-rank are
    dropped for learned variants (they have no vectors to fix). Checked here, before any
    embedding is built or run trained."""
    cfg = replace(base, **dict(v.settings))
    if v.base in LEARNED_SPECS:
        own = dict(v.settings)
        cfg = replace(cfg, **{k: getattr(TrainConfig(), k) for k in ("fix", "learn_top",
                                                                      "delta_rank")
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
    if variant in ("learned", "learned-untied", "random-orthogonal", "hadamard"):
        return variant, variant
    path = Path(variant)
    if not path.is_file():
        raise LmfixError(f"variant {variant!r}: not one of {', '.join(DEFAULT_VARIANTS)}, "
                         "hadamard, or an embedding file")
    return f"file-{path.stem}", str(path.resolve())


def train_command(cfg: TrainConfig) -> str:
    """The ``lmfix train`` command that reproduces one variant on its own."""
    import shlex
    default = TrainConfig()
    parts = ["lmfix", "train"]
    for k, v in asdict(cfg).items():
        if v == getattr(default, k) and k not in ("data", "embedding", "out"):
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            parts += [flag] if v else []
        elif v is not None:
            parts += [flag, str(v)]
    return shlex.join(parts)


def ensure_embedding(method: str, corpus: Corpus, dim: int, seed: int, out_dir: Path,
                     force: bool, progress: bool = False) -> Path:
    """Build (or reuse) the method's embedding with BUILD_PARAMS at dimension ``dim``."""
    params = BUILD_PARAMS[method]
    from .embeddings.build import build_and_save, make_config  # scipy, gensim: only here
    from .embeddings.vectors import sidecar_path
    tok = corpus.tokenizer
    path = out_dir / (f"{method}-d{dim}.bin" if tok.kind == "word" else
                      f"{method}-d{dim}-{tok.label}.bin")
    sidecar = sidecar_path(path)
    if path.is_file() and sidecar.is_file() and not force:
        meta = read_json(sidecar)
        same = (meta.get("corpus", {}).get("sha256") == corpus.train_sha256
                and meta.get("dim") == dim and meta.get("seed") == seed
                and meta.get("params") == asdict(make_config(method, params))
                and same_tokenizer(meta.get("tokenizer"), tok.identity()))
        if same:
            print(f"reusing {path}")
            return path
    t0 = time.perf_counter()
    build_and_save(method, corpus, dim, path, params, seed=seed, progress=progress)
    print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    return path


def run(preset: str, out: Path, data: str | None, variants: list[str] | None = None,
        overrides: dict | None = None, force: bool = False, progress: bool = True,
        command: str = "", jobs: int = 1) -> list[Path]:
    """Build the embeddings and train every variant; returns the run directories, in order.

    ``jobs`` > 1 trains that many variants at once, each in a worker process (lmfix.jobs);
    a variant that fails there does not stop the others, and :class:`lmfix.jobs.VariantsFailed`
    (carrying the run directories) is raised once all have ended.
    """
    if preset not in PRESETS:
        raise LmfixError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if positive_int.error(jobs):
        raise LmfixError(f"--jobs: {positive_int.error(jobs)}")
    chosen = PRESETS[preset]
    preset_cfg = dict(chosen.train)
    if chosen.cuda and pick_device({**preset_cfg, **(overrides or {})}.get(
            "device", "auto")).type == "cuda":
        preset_cfg.update(chosen.cuda)
    if (overrides or {}).get("tokenizer", "word") != "word":
        # SentencePiece's byte-fallback pieces mostly never occur in training text, so word2vec
        # and PMI give them no vector; they get random ones of the mean norm (coverage recorded).
        preset_cfg["oov"] = "random"
    base = replace(TrainConfig(), data=data, **{**preset_cfg, **(overrides or {})})
    if not variants:
        variants = (chosen.variants(base.emsize or DEFAULT_DIM) if chosen.variants
                    else list(DEFAULT_VARIANTS))
    # catch a typo or a misfit setting before anything is built or trained
    parsed = [parse_variant(v) for v in variants]
    settings = [variant_config(base, v) for v in parsed]
    names = [v.name for v in parsed]
    if len(set(names)) != len(names):
        raise LmfixError("--variants names a run twice: "
                         + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    corpus = load_corpus(data, TokenizerConfig.from_flags(base))
    files: dict[tuple[str, int], Path] = {}  # (method, d) -> built file, one per d needed
    for v, cfg in zip(parsed, settings):
        key = (v.base, cfg.emsize or DEFAULT_DIM)
        if v.base in BUILT_METHODS and key not in files:
            files[key] = ensure_embedding(v.base, corpus, key[1], base.seed,
                                          out / "embeddings", force, progress)
    record_intrinsic(list(files.values()), corpus)
    label = corpus.tokenizer.label
    cfgs = []
    for v, cfg in zip(parsed, settings):
        spec = str(files[(v.base, cfg.emsize or DEFAULT_DIM)]) if v.base in BUILT_METHODS \
            else v.base
        name = v.name if label == "word" else f"{v.name}-{label}"  # distinct beside word runs
        cfgs.append(replace(cfg, embedding=spec, out=str(out / "runs" / name)))
    run_dirs = [Path(cfg.out) for cfg in cfgs]
    failed = {}
    if jobs == 1:
        for cfg in cfgs:
            _train_variant(cfg, corpus, force, progress)
    else:  # every variant's settings are checked before any worker starts
        todo = []
        for cfg in cfgs:
            action = plan_variant(cfg, force)
            if action == "kept":
                print(f"{Path(cfg.out).name}: finished already, kept")
            else:
                todo.append((cfg, action))
        failed = train_parallel(todo, out, force, jobs)
    write_json(out / "run.json", {"preset": preset, "command": command, "variants": variants,
                                  "base": asdict(base)})
    if failed:
        raise VariantsFailed(run_dirs, failed, out)
    return run_dirs


def plan_variant(cfg: TrainConfig, force: bool) -> str:
    """What a variant's run directory needs: "kept" (finished), "resume" (a checkpoint of an
    unfinished run) or "fresh"; a run there with other settings is refused unless ``force``."""
    out = Path(cfg.out)
    status = rundir.read_status(out).get("status")
    if not status or force or not (out / "config.json").is_file():
        return "fresh"  # (a worker that failed before training records status, no config)
    # a field added to TrainConfig since the run was made counts as its default
    prev = {**asdict(TrainConfig()), **rundir.load_config(out)["train"]}
    if {**prev, "data": None} != {**asdict(cfg), "data": None}:
        raise LmfixError(f"{out} holds a run with other settings; pass --force to redo it or "
                         "choose another --out")
    if status == "finished":
        return "kept"
    return "resume" if (out / rundir.LAST).is_file() else "fresh"


def record_intrinsic(paths: list[Path], corpus: Corpus) -> None:
    """Word similarity and analogy scores of each built embedding, in FILE.intrinsic.json
    beside it (lmfix.embeddings.intrinsic; the report shows them). Words only: the test sets
    hold words, not a subword tokenizer's pieces."""
    if not paths or corpus.tokenizer.kind != "word":
        return
    from .embeddings.intrinsic import ensure_scores, headline, word_counts
    counts = word_counts(corpus)
    for path in paths:
        t0 = time.perf_counter()
        h = headline(ensure_scores(path, counts))
        shown = ", ".join(f"{k} {'—' if v is None else f'{v:.3f}'}" for k, v in h.items())
        print(f"intrinsic {path.name}: {shown} ({time.perf_counter() - t0:.0f} s)")


def _train_variant(cfg: TrainConfig, corpus: Corpus | None, force: bool, progress: bool) -> None:
    out = Path(cfg.out)
    action = plan_variant(cfg, force)
    if action == "kept":
        print(f"{out.name}: finished already, kept")
        return
    if action == "resume":
        status = rundir.read_status(out).get("status")
        print(f"{out.name}: {status}, resuming from its last checkpoint")
        train(cfg, command=train_command(cfg), corpus=corpus, resume=True, progress=progress)
        return
    print(f"== {out.name}: training ({cfg.embedding})")
    train(cfg, command=train_command(cfg), corpus=corpus, force=True, progress=progress)


if __name__ == "__main__":  # a worker of ``lmfix run --jobs N`` (lmfix.jobs)
    import sys
    sys.exit(worker_main(sys.argv[1:], _train_variant))
