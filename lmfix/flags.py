"""Allowed ranges of numeric flags, checked when they are parsed (issue 12).

Without these, a bad value either crashed deep inside torch or silently trained nonsense
(``--bptt -5`` exited 0 with perplexity 1.00). Each range lives once, in a :class:`Range`,
which is both an argparse ``type=`` (raising ``ArgumentTypeError``, so argparse prints
"argument --bptt: -5 is not an integer ≥ 1") and the check :func:`check_train_config`
applies to a config built in Python, where argparse never runs.

``lmfix train`` / ``lmfix run`` (:data:`TRAIN_FLAG_TYPES`, keyed by TrainConfig field)::

    emsize, nhid, nlayers         ≥ 1       a layer of size 0 or no layer is no model
    batch_size, eval_batch_size   ≥ 1       0 columns: ZeroDivisionError in batchify
    bptt                          ≥ 1       ≤ 0 made zero batches: "ppl 1.00" from no data
    epochs, log_interval          ≥ 1
    dropout                       [0, 1)    p = 1 drops everything; torch refuses p > 1
    lr                            > 0       finite; ≤ 0 learns nothing or ascends
    clip                          ≥ 0       finite; 0 means NO clipping: clip_grad_norm_ with
                                            max_norm 0 would zero every gradient (no learning)
    weight_decay                  ≥ 0       finite
    scale_init                    > 0       finite; the logit scale's sign flips every logit
    seed                          [0, 2^32 − 1]  what numpy's RandomState (gensim) accepts;
                                            torch.manual_seed takes 64 bits, even after + rank
    max_train_tokens,
    max_eval_tokens               ≥ 0       0 = no limit (how `lmfix run` lifts a preset's
                                            cap); a negative value used to count from the end
                                            (all but 5 tokens)
    max_minutes                   > 0       finite
    checkpoint_every              ≥ 0       finite minutes; 0 = at epoch ends only
    learn_top, delta_rank         ≥ 0       0 = off; learn_top ≤ V is checked once the
                                            vocabulary is known (lmfix.embedding_spec)
    sp_vocab_size                 [1, 2^31 − 1]  sentencepiece stores it as int32 and reports
                                            too small / too large for the corpus itself

``lmfix build-embeddings`` / ``neighbors`` (:data:`EMBEDDING_FLAG_TYPES`, keyed by dest)::

    dim, epochs                   ≥ 1       (dim: and the vectors must fit in memory)
    window                        [1, 2^31 − 1]  gensim keeps it in a C int (10^20 hung it);
                                            PMI counts no offset past the corpus's length
    negative                      [1, 1000] lmfix trains with hs=0, and gensim with negative=0
                                            and hs=0 has no output layer; each word's update
                                            draws that many samples (Mikolov et al. 2013 use
                                            2-20): 10^9 had not finished a 16-word corpus in 10 min
    workers                       [1, 1024] one thread each (gensim started 10^5 and hung)
    neg (PMI shift k), cds        > 0       finite; log k and context counts ** cds
    eig                           finite    any real (U · S^eig); 0..1 is usual
    sub                           [0, 1)    a frequency threshold (as pmi.cooccurrence checks)
    sample                        ≥ 0       finite; gensim reads ≥ 1 as a count threshold
    seed                          as above; sp_vocab_size as above
    k                             ≥ 1       neighbours per word

Integers may be written 10, 1_000 or 1e6 (an integral value); "2.5", "nan", "abc" are refused.
Floats must be finite: "nan" and "inf" are refused everywhere. argparse reads "-1e-3" and
"-inf" after a space as an option (its negative-number pattern has no exponent), so a
negative --eig in that notation is written --eig=-1e-3; "--bptt -5" reaches the check.
"""

from __future__ import annotations

import argparse
import math
import numbers
from decimal import Decimal, InvalidOperation

from .errors import LmfixError

_MISSING = object()


def _num(x) -> str:
    return format(x, "g") if isinstance(x, float) else str(x)


class Range:
    """A numeric range, usable as argparse ``type=`` and as a check of Python values."""

    def __init__(self, name: str, integer: bool, lo=None, hi=None,
                 lo_open: bool = False, hi_open: bool = False):
        self.__name__ = name  # argparse names the type by __name__ in some messages
        self.integer, self.lo, self.hi = integer, lo, hi
        self.lo_open, self.hi_open = lo_open, hi_open

    @property
    def allowed(self) -> str:
        """The range in words: "an integer ≥ 1", "a finite number in [0, 1)"."""
        kind = "an integer" if self.integer else "a finite number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return (f"{kind} in {'(' if self.lo_open else '['}{_num(lo)}, "
                    f"{_num(hi)}{')' if self.hi_open else ']'}")
        if lo is not None:
            return f"{kind} {'>' if self.lo_open else '≥'} {_num(lo)}"
        if hi is not None:
            return f"{kind} {'<' if self.hi_open else '≤'} {_num(hi)}"
        return kind

    def _in_range(self, v) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def error(self, value) -> str | None:
        """Why the Python ``value`` is not allowed, or None if it is."""
        ok = isinstance(value, numbers.Integral if self.integer else numbers.Real) and \
            not isinstance(value, bool)  # True is an int to Python, never a count to a user
        shown = str(value) if ok else repr(value)
        if not ok or not (self.integer or _finite(value)) or not self._in_range(value):
            return f"{shown} is not {self.allowed}"
        return None

    def parse(self, text: str):
        """The value of the flag text ``text``; ValueError naming the range if not allowed."""
        value = _parse_int(text) if self.integer else _parse_float(text)
        if value is None or not self._in_range(value):
            raise ValueError(f"{text} is not {self.allowed}")
        return value

    def __call__(self, text: str):
        try:
            return self.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    def __repr__(self) -> str:
        return f"<flag type {self.__name__}: {self.allowed}>"


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400
        return False


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:  # 1e6, 2.0: integral values in float notation; the exponent cap keeps int() cheap
        d = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not d.is_finite() or d != d.to_integral_value() or d.adjusted() > 30:
        return None
    return int(d)


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def int_in(lo: int | None, hi: int | None = None, name: str | None = None) -> Range:
    """Integers in [lo, hi] (either bound may be None: unbounded)."""
    return Range(name or f"int_in({lo}, {hi})", True, lo, hi)


def float_in(lo: float | None, hi: float | None = None, lo_open: bool = False,
             hi_open: bool = False, name: str | None = None) -> Range:
    """Finite floats between lo and hi, each end closed unless ``*_open``."""
    return Range(name or f"float_in({lo}, {hi})", False, lo, hi, lo_open, hi_open)


positive_int = int_in(1, name="positive_int")
nonneg_int = int_in(0, name="nonneg_int")
dropout = float_in(0.0, 1.0, hi_open=True, name="dropout")
positive_finite_float = float_in(0.0, lo_open=True, name="positive_finite_float")
nonneg_finite_float = float_in(0.0, name="nonneg_finite_float")
finite_float = float_in(None, name="finite_float")
seed = int_in(0, 2**32 - 1, name="seed")
sp_vocab_size = int_in(1, 2**31 - 1, name="sp_vocab_size")
positive_c_int = int_in(1, 2**31 - 1, name="positive_c_int")
workers = int_in(1, 1024, name="workers")
negative_samples = int_in(1, 1000, name="negative_samples")
fraction = float_in(0.0, 1.0, hi_open=True, name="fraction")
# Values that become float32 tensors or optimizer scalars must fit a float32: torch refuses
# a larger lr mid-step ("cannot be converted to type float without overflow").
F32_MAX = 3.4028234663852886e38
positive_f32 = float_in(0.0, F32_MAX, lo_open=True, name="positive_f32")
nonneg_f32 = float_in(0.0, F32_MAX, name="nonneg_f32")

TRAIN_FLAG_TYPES: dict[str, Range] = {
    "emsize": positive_int, "nhid": positive_int, "nlayers": positive_int,
    "dropout": dropout, "scale_init": positive_f32, "sp_vocab_size": sp_vocab_size,
    "lr": positive_f32, "clip": nonneg_f32, "epochs": positive_int,
    "batch_size": positive_int, "eval_batch_size": positive_int, "bptt": positive_int,
    "weight_decay": nonneg_f32, "seed": seed,
    "max_train_tokens": nonneg_int, "max_eval_tokens": nonneg_int,  # 0: no limit
    "max_minutes": positive_finite_float, "log_interval": positive_int,
    "checkpoint_every": nonneg_finite_float,
    "learn_top": nonneg_int, "delta_rank": nonneg_int,
}
# TrainConfig fields whose None means "default / no limit" rather than a missing value.
TRAIN_OPTIONAL = frozenset({"emsize", "nhid", "scale_init", "max_train_tokens",
                            "max_eval_tokens", "max_minutes"})

EMBEDDING_FLAG_TYPES: dict[str, Range] = {
    "dim": positive_int, "seed": seed, "k": positive_int, "sp_vocab_size": sp_vocab_size,
    "window": positive_c_int, "sub": fraction, "cds": positive_finite_float,
    "neg": positive_finite_float, "eig": finite_float, "negative": negative_samples,
    "sample": nonneg_finite_float, "epochs": positive_int, "workers": workers,
}


def flag_name(field: str) -> str:
    """``max_train_tokens`` → ``--max-train-tokens``."""
    return "--" + field.replace("_", "-")


def check_train_config(cfg) -> None:
    """Raise one :class:`LmfixError` listing every field of ``cfg`` outside its range.

    ``cfg`` is a TrainConfig or anything with the same attributes (missing ones are
    skipped); a None is allowed where TrainConfig uses it for "default" or "no limit".
    """
    problems = []
    for field, rng in TRAIN_FLAG_TYPES.items():
        value = getattr(cfg, field, _MISSING)
        if value is _MISSING or (value is None and field in TRAIN_OPTIONAL):
            continue
        why = rng.error(value)
        if why:
            problems.append(f"{flag_name(field)}: {why}")
    if problems:
        raise LmfixError("; ".join(problems))
