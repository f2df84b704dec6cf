"""How lmfix scores a token stream: perplexity and its forms that compare across tokenizers.

One module for training's validation and test, ``lmfix evaluate`` and ``lmfix.load`` alike,
so a run's own split scored afterwards reproduces its summary.json.

Perplexity is exp of the token-weighted mean NLL over a batchified split (the PyTorch
``word_language_model`` example's ``evaluate``: eval batch 10, bptt chunks, the hidden state
carried from one chunk to the next). Per-token perplexity depends on what a token is;
word-level perplexity does not. With a subword tokenizer the total NLL of a split is spread
over the *words* the word-level corpus counts (whitespace words plus one <eos> per line, as
the example counts them), and bits per character over its characters. For a word-level model
both reduce to the usual figures (tokens = words).
"""

from __future__ import annotations

import math

import torch

from . import distributed
from .distributed import Dist


class Stopped(Exception):
    """Raised between chunks when ``interrupted()`` says a signal asked to stop; its argument
    is the signal's name."""


def ppl(mean_nll: float) -> float:
    """exp of a token-weighted mean NLL (nats); inf instead of an overflow."""
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")


def word_ppl(mean_nll: float, tokens: int, words: int) -> float:
    """Word-level perplexity: total NLL (mean × tokens) divided by the number of words."""
    return ppl(mean_nll * tokens / words)


def bits_per_char(mean_nll: float, tokens: int, chars: int) -> float:
    return mean_nll * tokens / chars / math.log(2)


@torch.no_grad()
def mean_nll(model, source: torch.Tensor, bptt: int, d: Dist = Dist(),
             interrupted=None) -> tuple[float, int]:
    """Token-weighted mean NLL over a batchified split (its columns shared among the
    processes of ``d``), every target scored once; and the number of targets.

    An RNN carries its hidden state across bptt chunks (the example's evaluation); a model
    that carries none (the Transformer) is scored by a sliding window (:func:`windows`).
    ``interrupted()``, polled per chunk, lets a signal stop a long evaluation promptly.
    """
    model.eval()
    source = distributed.eval_columns(source, d)
    total = torch.zeros((), dtype=torch.float64, device=source.device)
    ntok = 0
    if source.size(1):
        hidden = model.init_hidden(source.size(1))
        for start, first, end in _chunks(model, source.size(0), bptt):
            if interrupted is not None and interrupted():
                raise Stopped(interrupted())
            # (ids may be stored as int32, as the id cache keeps them; the model takes int64)
            out, hidden = model(source[start: end - 1].long(), hidden)
            # score the targets first..end-1 only: the window's earlier rows are its context
            out = out.view(end - 1 - start, source.size(1), -1)[first - 1 - start:]
            y = source[first:end].reshape(-1).long()
            total += model.loss(out.reshape(-1, out.size(-1)), y, reduction="sum").double()
            ntok += y.numel()
    total, ntok = distributed.all_reduce_sum([total.item(), ntok], d, source.device)
    return total / max(ntok, 1), int(ntok)


def _chunks(model, rows: int, bptt: int):
    """(first input row, first scored target row, end) of each chunk: inputs rows
    start..end-2 predict targets rows start+1..end-1, of which first..end-1 are scored."""
    if model.carries_state:
        for i in range(0, rows - 1, bptt):
            end = min(i + bptt, rows - 1) + 1
            yield i, i + 1, end
    else:
        yield from windows(rows, bptt)


def windows(rows: int, width: int):
    """The sliding window of a model without carried state, over a column of ``rows``:
    each window reads at most ``width`` inputs and scores its last ``stride`` = width // 2
    targets (the first window all of its own), so every target is scored once and each one
    after the first window is predicted from at least width − stride + 1 previous tokens."""
    stride = max(1, width // 2)
    first, end = 1, min(width + 1, rows)
    while first < rows:
        yield max(0, end - 1 - width), first, end
        first, end = end, min(end + stride, rows)


def context_of(model, bptt: int) -> dict:
    """What each scored token sees, for summaries and reports."""
    if model.carries_state:
        return {"kind": "carried state", "chunk": bptt}
    stride = max(1, bptt // 2)
    return {"kind": "sliding window", "window": bptt, "stride": stride,
            "min_context": bptt - stride + 1}


def word_level(loss: float, data: torch.Tensor, tokenizer, text_words: int,
               text_chars: int) -> dict:
    """Word-level perplexity and bits per character of a batchified split scored at ``loss``:
    the total NLL of its targets (rows 1..) over the words that start among them, and the
    text's characters per word (``text_chars`` / ``text_words``) applied to those words."""
    targets = data[1:]
    words = tokenizer.count_words(targets.t())
    chars = text_chars * words / max(text_words, 1)
    return {"words": words,
            "word_ppl": word_ppl(loss, targets.numel(), words) if words else None,
            "bpc": bits_per_char(loss, targets.numel(), chars) if chars else None}


UNK_WARN_PCT = 5.0  # above this share of tokens replaced by <unk>, a result carries a warning


def unk_warning(replaced: int, tokens: int, what: str) -> str | None:
    """A warning when more than UNK_WARN_PCT % of ``what``'s ``tokens`` are words the
    vocabulary lacks, scored as <unk> (the training text's own <unk> tokens not counted)."""
    pct = 100.0 * replaced / max(tokens, 1)
    if pct <= UNK_WARN_PCT:
        return None
    return (f"{pct:.1f}% of the tokens of {what} are words missing from the run's vocabulary, "
            "scored as <unk>; a perplexity over many <unk>s means little")


DIVERGED_FACTOR = 10  # a perplexity above this many times the vocabulary size is no result


def diverged(mean_nll: float, vocab_size: int) -> bool:
    """Far worse than a uniform guess over the vocabulary (whose perplexity is its size), or
    not finite: a model that diverged."""
    return not math.isfinite(mean_nll) or mean_nll > math.log(DIVERGED_FACTOR * vocab_size)
