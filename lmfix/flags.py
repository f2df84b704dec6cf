"""Allowed ranges of numeric flags, checked when they are parsed (issue 12).

Without these, a bad value either crashed deep inside torch or silently trained nonsense
(``--bptt -5`` exited 0 with perplexity 1.00). A :class:`Range` is both an argparse ``type=``
(raising ``ArgumentTypeError``, so argparse prints "argument --bptt: -5 is not an integer ≥ 1")
and the check of a value given in Python, where argparse never runs. Each setting names its
range where it is defined: :mod:`lmfix.config` for training, :mod:`lmfix.embeddings.methods`
for the build methods; ``docs/cli.md`` lists them all.

Why some bounds are what they are: seeds end at 2^32 − 1 (what numpy's RandomState, so gensim,
accepts); lr, clip, weight decay and the scale are float32 tensors or optimizer scalars (torch
refuses a larger lr mid-step); ``--clip 0`` means no clipping (clip_grad_norm_ with max_norm 0
would zero every gradient); word2vec's ``--window`` is a C int in gensim (10^20 hung it),
``--negative`` is drawn per word update (10^9 had not finished a 16-word corpus in 10 minutes)
and gensim starts one thread per worker (10^5 hung it); SentencePiece stores its vocabulary
size as an int32.

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



def format_number(x) -> str:
    """``1e-06``, ``0.25``, ``40``: a number as a flag would be written."""
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
            return (f"{kind} in {'(' if self.lo_open else '['}{format_number(lo)}, "
                    f"{format_number(hi)}{')' if self.hi_open else ']'}")
        if lo is not None:
            return f"{kind} {'>' if self.lo_open else '≥'} {format_number(lo)}"
        if hi is not None:
            return f"{kind} {'<' if self.hi_open else '≤'} {format_number(hi)}"
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
            # a value with a line break or control character is quoted: one line, readable
            shown = text if text.isprintable() else repr(text)
            raise ValueError(f"{shown} is not {self.allowed}")
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

# build-embeddings' and neighbors' own flags (each method's settings carry their ranges in
# lmfix.embeddings.methods)
EMBEDDING_FLAG_TYPES: dict[str, Range] = {"dim": positive_int, "seed": seed, "k": positive_int}
