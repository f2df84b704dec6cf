"""Perplexity, and its forms that compare models across tokenizations.

Per-token perplexity depends on what a token is; word-level perplexity does not. With a
subword tokenizer the total NLL of a split is spread over the *words* the word-level corpus
counts (whitespace words plus one <eos> per line, as the PyTorch example counts them), and
bits per character over its characters. For a word-level model both reduce to the usual
figures (tokens = words).
"""

from __future__ import annotations

import math


def ppl(mean_nll: float) -> float:
    """exp of a token-weighted mean NLL (nats); inf instead of an overflow."""
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")


def word_ppl(mean_nll: float, tokens: int, words: int) -> float:
    """Word-level perplexity: total NLL (mean × tokens) divided by the number of words."""
    return ppl(mean_nll * tokens / words)


def bits_per_char(mean_nll: float, tokens: int, chars: int) -> float:
    return mean_nll * tokens / chars / math.log(2)
