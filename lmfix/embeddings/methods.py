"""The four build methods and their settings, each defined once (a light module: no numpy,
scipy or gensim, so ``lmfix --help`` stays fast).

Each settings dataclass field carries its flag's help and range (:func:`lmfix.config.setting`);
``lmfix build-embeddings`` derives its method flags from them (:mod:`lmfix.embeddings.cli`),
and :mod:`lmfix.embeddings.build` builds with them. PMI's names are hyperwords' (Levy, Goldberg
& Dagan 2015), word2vec's gensim's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .. import flags
from ..config import setting
from ..errors import LmfixError


@dataclass(frozen=True)
class PMIConfig:
    """Shifted-PPMI + SVD settings, named as in hyperwords (see :mod:`lmfix.embeddings.pmi`)."""

    window: int = setting(5, "context window on each side", range=flags.positive_c_int)
    dyn: bool = setting(True, "weight contexts by distance, (window - dist + 1) / window, the "
                        "expected weight of word2vec's dynamic window")
    sub: float = setting(0.0, "subsampling threshold t: drop tokens of words with frequency "
                         "f > t with probability 1 - sqrt(t/f) (0: off)", range=flags.fraction)
    cds: float = setting(0.75, "context distribution smoothing: context counts raised to this "
                         "power", range=flags.positive_finite_float)
    neg: float = setting(1.0, "PMI shift k: PPMI = max(PMI - log k, 0) (1: plain PPMI)",
                         range=flags.positive_finite_float)
    eig: float = setting(0.5, "eigenvalue weighting p: vectors U * S^p (0 = U alone; a "
                         "negative one is written --eig=-0.5)", range=flags.finite_float)
    w_plus_c: bool = setting(False, "add the context vectors V * S^p to the word vectors")


@dataclass(frozen=True)
class Word2VecConfig:
    """gensim Word2Vec settings (gensim's defaults except min_count = 1)."""

    sg: int = setting(0, "0 = CBOW, 1 = skip-gram", range=flags.int_in(0, 1, name="sg"))
    window: int = setting(5, "context window on each side", range=flags.positive_c_int)
    negative: int = setting(5, "negative samples per positive example (Mikolov et al. use "
                            "2-20)", range=flags.negative_samples)
    sample: float = setting(1e-3, "down-sampling threshold for frequent words (0 = off; gensim "
                            "reads >= 1 as a count)", range=flags.nonneg_finite_float)
    epochs: int = setting(5, "passes over the corpus", range=flags.positive_int)
    workers: int | None = setting(None, "training threads (1 makes runs reproducible)",
                                  range=flags.workers, none_means="min(4, CPUs)")


@dataclass(frozen=True)
class BasisConfig:
    """Random orthogonal and Hadamard bases have no settings besides dim and seed."""


CONFIGS = {"word2vec": Word2VecConfig, "pmi": PMIConfig,
           "random-orthogonal": BasisConfig, "hadamard": BasisConfig}
METHODS = tuple(CONFIGS)


def make_config(method: str, params: dict):
    """The method's settings dataclass from ``params`` (missing keys keep their defaults),
    each value checked against its range."""
    if method not in CONFIGS:
        raise LmfixError(f"unknown embedding method {method!r}: choose one of {', '.join(METHODS)}")
    cls = CONFIGS[method]
    known = {f.name: f.metadata["setting"] for f in fields(cls)}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise LmfixError(f"{method} has no setting {', '.join(unknown)}; its settings are: "
                         f"{', '.join(sorted(known)) or '(none)'}")
    for name, value in params.items():
        s = known[name]
        if s.range is not None and not (value is None and s.none_means):
            if why := s.range.error(value):
                raise LmfixError(f"{method} {name}: {why}")
    return cls(**params)


def method_settings() -> dict[str, tuple[object, tuple[str, ...]]]:
    """Every method setting once: name -> (its dataclass field, the methods that have it)."""
    out: dict[str, tuple[object, tuple[str, ...]]] = {}
    for method, cls in CONFIGS.items():
        for f in fields(cls):
            first, methods = out.get(f.name, (f, ()))
            out[f.name] = (first, methods + (method,))
    return out
