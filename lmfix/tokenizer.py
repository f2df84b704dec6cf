"""How text becomes token ids: one object, two kinds, the word/subword decision made here only.

- :class:`WordTokenizer`: the PyTorch ``word_language_model`` example's tokens (split on
  whitespace, ``<eos>`` after every line, words unseen in training become ``<unk>``).
- :class:`SentencePieceTokenizer`: a SentencePiece model trained on the training split
  (mechanics and caching in :mod:`lmfix.subword`).

Both have the same face: ``vocab``, ``label`` (for file and run names), ``identity()`` (what
metadata records and compatibility checks compare), ``encode(lines)``, ``count_words(ids)``
(word-level tokens, for word-level perplexity), ``decode(ids)``, ``save_beside(file)`` (next to
an embedding file) and ``save_into(directory)`` (into a run directory, so the run stays usable
without any cache). :class:`TokenizerConfig` is made once from the flags and ``fit`` turns it
into a tokenizer; :func:`load_tokenizer` reads one back from a run directory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from . import flags
from .errors import LmfixError
from .fsutil import atomic_open, write_text
from .vocab import EOS, UNK, Vocab, build_vocab

KINDS = ("word", "sentencepiece")
SP_MODEL_TYPES = ("unigram", "bpe")
VOCAB_FILE = "vocab.txt"  # a word run's vocabulary, one word per line, in id order
SP_MODEL_FILE = "tokenizer.model"


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer flags (``--tokenizer``, ``--sp-model-type``, ``--sp-vocab-size``)."""

    kind: str = "word"
    sp_model_type: str = "unigram"
    sp_vocab_size: int = 8000
    sp_model_dir: str | None = None  # SentencePiece cache; default $LMFIX_CACHE/sentencepiece

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LmfixError(f"--tokenizer {self.kind!r}: use {' or '.join(KINDS)}")

    @classmethod
    def from_flags(cls, obj) -> TokenizerConfig:
        """From anything with ``tokenizer``, ``sp_model_type``, ``sp_vocab_size`` attributes
        (parsed flags or a TrainConfig)."""
        return cls(obj.tokenizer, obj.sp_model_type, obj.sp_vocab_size)

    @property
    def label(self) -> str:
        return "word" if self.kind == "word" else f"sp-{self.sp_model_type}-{self.sp_vocab_size}"

    def fit(self, train_lines: list[str], train_sha256: str) -> Tokenizer:
        """A tokenizer for this corpus: the word vocabulary of the training lines, or the
        (cached) SentencePiece model trained on them."""
        if self.kind == "word":
            return WordTokenizer(build_vocab(train_lines))
        from . import subword  # sentencepiece is only imported by subword runs
        cfg = subword.SubwordConfig(self.sp_model_type, self.sp_vocab_size,
                                    model_dir=self.sp_model_dir)
        sp, path = subword.load_or_train(train_lines, train_sha256, cfg)
        return SentencePieceTokenizer(sp, path.read_bytes(), cfg, str(path))


def add_tokenizer_flags(group, defaults: TokenizerConfig = TokenizerConfig()) -> list:
    """The tokenizer flags, shared by ``train``, ``run`` and ``build-embeddings``; returns
    their argparse actions."""
    return [group.add_argument("--tokenizer", choices=KINDS, default=defaults.kind,
                       help="word: the example's word-level tokens (default); sentencepiece: a "
                            "subword model trained on the training split (embeddings and runs "
                            "must use the same tokenizer flags)"),
            group.add_argument("--sp-model-type", choices=SP_MODEL_TYPES,
                               default=defaults.sp_model_type,
                               help="SentencePiece model type (default %(default)s)"),
            group.add_argument("--sp-vocab-size", type=flags.sp_vocab_size, default=defaults.sp_vocab_size,
                               help="SentencePiece vocabulary size (default %(default)s)")]


class WordTokenizer:
    kind = "word"
    label = "word"

    def __init__(self, vocab: Vocab):
        self.vocab = vocab

    def identity(self) -> dict:
        return {"kind": "word"}

    def encode(self, lines: list[str]) -> tuple[torch.Tensor, int]:
        """Token ids with one <eos> per line; words outside the vocabulary become <unk>
        (returned: how many)."""
        index, eos, unk = self.vocab.index, self.vocab.index[EOS], self.vocab.index[UNK]
        ids: list[int] = []
        n_unk = 0
        for line in lines:
            for w in line.split():
                i = index.get(w)
                if i is None:
                    i, n_unk = unk, n_unk + 1
                ids.append(i)
            ids.append(eos)
        return torch.tensor(ids, dtype=torch.long), n_unk

    def count_words(self, ids: torch.Tensor) -> int:
        return ids.numel()

    def decode(self, ids) -> str:
        """WikiText-style: tokens joined by spaces, ``<eos>`` as a line break."""
        words = self.vocab.words
        return "\n".join(" ".join(words[i] for i in line)
                         for line in _lines(ids, self.vocab.index[EOS]))

    def save_beside(self, path: str | Path) -> None:
        """Nothing to write: a word-level embedding file's rows are its words."""

    def save_into(self, directory: str | Path) -> None:
        write_text(Path(directory) / VOCAB_FILE, "".join(w + "\n" for w in self.vocab.words))


class SentencePieceTokenizer:
    kind = "sentencepiece"

    def __init__(self, sp, model_bytes: bytes, cfg, model_path: str | None = None):
        self.sp, self.model_bytes, self.cfg, self.model_path = sp, model_bytes, cfg, model_path
        self.vocab = Vocab([sp.id_to_piece(i) for i in range(sp.get_piece_size())])
        self.label = f"sp-{cfg.model_type}-{cfg.vocab_size}"

    def identity(self) -> dict:
        return {"kind": "sentencepiece", "model_type": self.cfg.model_type,
                "vocab_size": self.cfg.vocab_size, "seed": self.cfg.seed,
                "model_path": self.model_path,
                "model_sha256": hashlib.sha256(self.model_bytes).hexdigest()}

    def encode(self, lines: list[str]) -> tuple[torch.Tensor, int]:
        from .subword import encode_lines
        return encode_lines(self.sp, lines), 0  # byte fallback: nothing is ever unknown

    def count_words(self, ids: torch.Tensor) -> int:
        from .subword import words_in_pieces
        return words_in_pieces([self.vocab.words[i] for i in _as_list(ids)])

    def decode(self, ids) -> str:
        return "\n".join(self.sp.decode(line) for line in _lines(ids, self.vocab.index[EOS]))

    def save_beside(self, path: str | Path) -> None:
        self._write(Path(f"{path}.tokenizer.model"))

    def save_into(self, directory: str | Path) -> None:
        self._write(Path(directory) / SP_MODEL_FILE)

    def _write(self, dest: Path) -> None:
        with atomic_open(dest, "wb") as f:
            f.write(self.model_bytes)


Tokenizer = Union[WordTokenizer, SentencePieceTokenizer]


def _as_list(ids) -> list[int]:
    return ids.reshape(-1).tolist() if isinstance(ids, torch.Tensor) else list(ids)


def _lines(ids, eos: int) -> list[list[int]]:
    """Ids cut at each <eos> (dropped); a last line without one is kept."""
    lines, cur = [], []
    for i in _as_list(ids):
        if i == eos:
            lines.append(cur)
            cur = []
        else:
            cur.append(i)
    return lines + ([cur] if cur else [])


def load_tokenizer(identity: dict | None, directory: str | Path) -> Tokenizer:
    """The tokenizer a run directory was trained with (its ``save_into`` files)."""
    directory = Path(directory)
    if kind_of(identity) == "word":
        path = directory / VOCAB_FILE
        try:
            words = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise LmfixError(f"{path}: cannot read the run's vocabulary ({e.strerror or e})"
                             ) from None
        if len(set(words)) != len(words) or EOS not in words or UNK not in words:
            raise LmfixError(f"{path}: not an lmfix vocabulary (duplicate words, or no "
                             f"{EOS}/{UNK})")
        return WordTokenizer(Vocab(words))
    from . import subword
    path = directory / SP_MODEL_FILE
    sp = subword.load_model(path)
    if sp is None:
        raise LmfixError(f"{path}: missing or not a SentencePiece model")
    cfg = subword.SubwordConfig(identity.get("model_type", "?"), identity.get("vocab_size", 0),
                                seed=identity.get("seed", 0))
    tok = SentencePieceTokenizer(sp, path.read_bytes(), cfg, str(path))
    if identity.get("model_sha256") not in (None, tok.identity()["model_sha256"]):
        raise LmfixError(f"{path} is not the SentencePiece model this run was trained with "
                         "(sha256 differs)")
    return tok


# Identities are plain dicts in JSON (config.json, summary.json, embedding sidecars); files
# written before tokenizers were recorded have none, which means word-level.

def kind_of(identity: dict | None) -> str:
    return (identity or {}).get("kind", "word") if isinstance(identity, dict) else "word"


def label_of(identity: dict | None) -> str:
    """"word", or e.g. "sp-unigram-8000" for a SentencePiece vocabulary."""
    if kind_of(identity) == "word":
        return "word"
    return f"sp-{identity.get('model_type', '?')}-{identity.get('vocab_size', '?')}"


def describe(identity: dict | None) -> str:
    if kind_of(identity) == "word":
        return "word-level tokens"
    return (f"a {identity.get('model_type')} SentencePiece model of "
            f"{identity.get('vocab_size')} pieces")


def same_tokenizer(a: dict | None, b: dict | None) -> bool:
    """Same kind and, for SentencePiece, the very same model file (by checksum)."""
    return (kind_of(a), (a or {}).get("model_sha256")) == (kind_of(b), (b or {}).get("model_sha256"))
