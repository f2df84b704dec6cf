"""The whole comparison: build embeddings and train every variant (``lmfix run`` then writes
the report with :mod:`lmfix.report`).

    OUT/
      embeddings/   word2vec-d200.bin, pmi-d200.bin (+ .json sidecars), reused when settings match
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

from . import rundir
from .data import Corpus, load_corpus
from .errors import LmfixError
from .flags import positive_int
from .fsutil import read_json, write_json
from .model import DEFAULT_DIM
from .tokenizer import TokenizerConfig, same_tokenizer
from .train import TrainConfig, train

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


PRESETS = {
    # The paper's LM: 2-layer LSTM, d = 512 (Hoffer et al. 2018), in the example's SGD regime.
    # Dropout 0.5: the regularization the example and Zaremba et al. use at 650 units ("medium"),
    # since 0.2 overfits WikiText-2 badly once d is in the hundreds.
    "paper": Preset("paper", "2-layer LSTM, d = 512, SGD lr 20, 40 epochs, dropout 0.5 (GPU)",
                    {"emsize": 512, "nhid": 512, "dropout": 0.5, "epochs": 40}),
    # About 10 minutes on a 2-core CPU for all five variants, still on real WikiText-2 with the
    # full valid and test splits (at d = 64 they cost ~50 s per variant, half the time). Training
    # sees the first 300k tokens (a seventh of an epoch) once, without dropout (a model this far
    # from fitting only loses by it): enough to rank the variants early in training, not to
    # reproduce converged perplexities. Logged every 50 batches so the scale's growth shows.
    "quick": Preset("quick", "d = 64, first 300k training tokens, full valid/test (2-core CPU)",
                    {"emsize": 64, "nhid": 64, "dropout": 0.0, "epochs": 1,
                     "max_train_tokens": 300_000, "log_interval": 50}),
}


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
    variants = list(variants or DEFAULT_VARIANTS)
    for v in variants:  # catch a typo before anything is built or trained
        variant_spec(v, {m: Path() for m in BUILT_METHODS})
    preset_cfg = dict(PRESETS[preset].train)
    if (overrides or {}).get("tokenizer", "word") != "word":
        # SentencePiece's byte-fallback pieces mostly never occur in training text, so word2vec
        # and PMI give them no vector; they get random ones of the mean norm (coverage recorded).
        preset_cfg["oov"] = "random"
    base = replace(TrainConfig(), data=data, **{**preset_cfg, **(overrides or {})})
    corpus = load_corpus(data, TokenizerConfig.from_flags(base))
    dim = base.emsize or DEFAULT_DIM
    files = {m: ensure_embedding(m, corpus, dim, base.seed, out / "embeddings", force, progress)
             for m in BUILT_METHODS if m in variants}
    label = corpus.tokenizer.label
    cfgs = []
    for v in variants:
        name, spec = variant_spec(v, files)
        name = name if label == "word" else f"{name}-{label}"  # distinct beside word-level runs
        cfgs.append(replace(base, embedding=spec, out=str(out / "runs" / name)))
    run_dirs = [Path(cfg.out) for cfg in cfgs]
    failed = {}
    if jobs == 1:
        for cfg in cfgs:
            _train_variant(cfg, corpus, force, progress)
    else:
        from .jobs import train_parallel
        failed = train_parallel(cfgs, out, force, jobs)
    write_json(out / "run.json", {"preset": preset, "command": command, "variants": variants,
                                  "base": asdict(base)})
    if failed:
        from .jobs import VariantsFailed
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
