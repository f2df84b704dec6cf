"""Subword tokenization with SentencePiece, trained on the corpus's training split.

The tokenization is lossless on WikiText: a line's pieces decode to the line with its
whitespace collapsed (``" ".join(line.split())``), WikiText's own ``<unk>`` stays one piece and
one ``<eos>`` id follows every line, blank lines included, exactly as in the word-level path.
So the word-level token count of a split can be recovered from its piece stream
(:func:`words_in_pieces`), which is what word-level perplexity needs (lmfix.evaluation).

Models are cached as ``{model_dir}/sp-{model_type}-{vocab_size}-{hash12}.model``; the hash covers
the training text's checksum and every training option, so a matching model is reused and a
stale one never is. :mod:`lmfix.tokenizer` wraps this module into a tokenizer object.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch

from .config import SP_MODEL_TYPES as MODEL_TYPES
from .errors import LmfixError
from .fsutil import atomic_open
from .vocab import EOS, UNK

WORD_START = "\u2581"  # "▁", SentencePiece's marker for a piece that follows a space
SP_UNK = "<sp-unk>"  # SentencePiece's own unknown piece; never emitted (byte fallback)
_ENCODE_BATCH = 8192  # lines per sp.encode call: one C++ call each, bounded memory
# Bounds training time and memory on large corpora (WikiText-103 has 1.8M lines): above this,
# a seeded sample of the lines is used. WikiText-2 (23,767 non-blank lines) is used whole.
MAX_TRAIN_LINES = 1_000_000

# Fixed trainer options, all part of the model's cache key.
_TRAINER_OPTIONS = dict(
    # No NFKC: WikiText is already tokenized text, and normalizing would break the round trip.
    normalization_rule_name="identity",
    # Characters outside the learned vocabulary become UTF-8 byte pieces instead of an unknown
    # piece, so nothing is lost (the price: 256 byte pieces in every vocabulary).
    byte_fallback=True,
    # <unk> is WikiText's rare-word token and must stay one piece; <eos> is never in the text,
    # its id is appended after each line. Both are matched before segmentation.
    user_defined_symbols=[UNK, EOS],
    unk_piece=SP_UNK,  # the default "<unk>" would clash with WikiText's
    bos_id=-1, eos_id=-1, pad_id=-1,  # the LM has its own <eos> and needs no bos/pad
    # One thread: the trained unigram model differs with the thread count, so a fixed count
    # keeps models reproducible across machines; on a shared 2-core machine it was also the
    # fastest (WikiText-2, 8000 pieces: unigram ~5 s vs 9-23 s with 2 threads; bpe <1 s).
    num_threads=1,
    # Train on every line of WikiText-2 (longest line 3,839 bytes; the default limit of 4,192
    # would silently drop longer lines of other corpora).
    max_sentence_length=1 << 20,
    # Never let sentencepiece sample lines itself: its sampler ignores set_random_generator_seed
    # (0.2.3: the same model for any seed in one process, another model in the next process).
    # We sample, reproducibly, in training_lines().
    input_sentence_size=0, shuffle_input_sentence=False,
)


@dataclass
class SubwordConfig:
    model_type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000
    # One tokenizer per corpus and settings, shared by every run: sentencepiece only samples,
    # and so only uses the seed, past MAX_TRAIN_LINES training lines.
    seed: int = 0
    model_dir: str | None = None  # default $LMFIX_CACHE/sentencepiece or ~/.cache/lmfix/...


def model_dir(cfg: SubwordConfig) -> Path:
    if cfg.model_dir:
        return Path(cfg.model_dir).expanduser()
    root = os.environ.get("LMFIX_CACHE") or "~/.cache/lmfix"
    return Path(root).expanduser() / "sentencepiece"


def _trainer_args(cfg: SubwordConfig) -> dict:
    return dict(_TRAINER_OPTIONS, model_type=cfg.model_type, vocab_size=cfg.vocab_size)


def model_path(train_sha256: str, cfg: SubwordConfig) -> Path:
    # The sentencepiece version is in the key too: another version may train another model.
    key = json.dumps({"train_sha256": train_sha256, "seed": cfg.seed,
                      "max_train_lines": MAX_TRAIN_LINES, "sentencepiece": spm.__version__,
                      **_trainer_args(cfg)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return model_dir(cfg) / f"sp-{cfg.model_type}-{cfg.vocab_size}-{digest}.model"


def _check(cfg: SubwordConfig) -> None:
    if cfg.model_type not in MODEL_TYPES:
        raise LmfixError(f"sentencepiece model type {cfg.model_type!r}: use "
                         f"{' or '.join(MODEL_TYPES)}")
    if not isinstance(cfg.vocab_size, int) or cfg.vocab_size < 1:
        raise LmfixError(f"sentencepiece vocab size {cfg.vocab_size!r}: use a positive integer")


def _training_error(e: RuntimeError, cfg: SubwordConfig) -> LmfixError:
    msg = str(e)
    what = f"cannot train a sentencepiece {cfg.model_type} model of {cfg.vocab_size} pieces"
    if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg):
        return LmfixError(f"{what}: the vocabulary needs at least {m[1]} pieces (256 bytes, "
                          "<eos>, <unk> and the corpus's characters); raise the vocab size")
    if m := re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", msg):
        return LmfixError(f"{what}: the training text supports at most {m[1]}; "
                          "lower the vocab size")
    return LmfixError(f"{what}: {msg.split('] ')[-1] or msg}")


def training_lines(lines: list[str], seed: int) -> list[str]:
    """Lines as encoded (whitespace collapsed), blank ones left out; at most MAX_TRAIN_LINES,
    sampled with ``seed`` and kept in corpus order."""
    text = [t for t in (" ".join(line.split()) for line in lines) if t]
    if len(text) <= MAX_TRAIN_LINES:
        return text
    keep = sorted(random.Random(seed).sample(range(len(text)), MAX_TRAIN_LINES))
    return [text[i] for i in keep]


def train_sentencepiece(lines: list[str], cfg: SubwordConfig, path: Path) -> Path:
    """Train in-process on ``lines`` and save the model to ``path`` (atomically)."""
    _check(cfg)
    text = training_lines(lines, cfg.seed)
    out = io.BytesIO()
    # Training logs hundreds of lines to stderr; keep only errors. (Its logstream= argument
    # fails where sys.stderr has no file descriptor, as in notebooks.)
    spm.set_min_log_level(2)
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=out,
                                       **_trainer_args(cfg))
    except RuntimeError as e:
        raise _training_error(e, cfg) from None
    with atomic_open(path, "wb") as f:
        f.write(out.getvalue())
    return path


def load_model(path: Path) -> spm.SentencePieceProcessor | None:
    """The model at ``path``, or None when it is absent or unreadable."""
    try:
        return spm.SentencePieceProcessor(model_proto=path.read_bytes())
    except (OSError, RuntimeError):
        return None


def load_or_train(train_lines: list[str], train_sha256: str,
                  cfg: SubwordConfig) -> tuple[spm.SentencePieceProcessor, Path]:
    """The cached model for these settings and training text, trained first if absent."""
    _check(cfg)
    path = model_path(train_sha256, cfg)
    sp = load_model(path) if path.is_file() else None
    if sp is None:  # absent or unreadable (a cache: retraining is always safe)
        train_sentencepiece(train_lines, cfg, path)
        sp = load_model(path)
        if sp is None:
            raise LmfixError(f"{path}: cannot read back the sentencepiece model just written")
    return sp, path


def encode_lines(sp: spm.SentencePieceProcessor, lines: list[str]) -> torch.Tensor:
    """Piece ids with the <eos> id after every line (as WordTokenizer.encode does for words)."""
    eos = sp.piece_to_id(EOS)
    ids: list[int] = []
    for start in range(0, len(lines), _ENCODE_BATCH):
        batch = [" ".join(line.split()) for line in lines[start: start + _ENCODE_BATCH]]
        for line_ids in sp.encode(batch, num_threads=1):
            ids.extend(line_ids)
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def starts_word(prev: str, piece: str) -> bool:
    """Whether ``piece`` (after ``prev``) begins a word-level token.

    Every word starts with a "▁" piece (a whole "▁" before a user-defined symbol such as
    <unk>, which sentencepiece emits as "▁", "<unk>"); every <eos> piece is one, except a
    literal "<eos>" word in the text ("▁", "<eos>"), whose "▁" already began it. A line's
    first piece begins a word even without its "▁": encoded text always has one there (the
    dummy prefix), but a generated line may not, and it is a word of the text all the same.
    """
    if piece == EOS:
        return prev != WORD_START
    return piece.startswith(WORD_START) or prev == EOS


def words_in_pieces(pieces: list[str]) -> int:
    """The word-level token count (words + one <eos> per line) of a piece stream."""
    return sum(starts_word(prev, p) for prev, p in zip([""] + pieces, pieces))
