"""How text becomes token ids: one object, two kinds, the word/subword decision made here only.

- :class:`WordTokenizer`: the PyTorch ``word_language_model`` example's tokens (split on
  whitespace, ``<eos>`` after every line, words unseen in training become ``<unk>``).
- :class:`SentencePieceTokenizer`: a SentencePiece model trained on the training split
  (mechanics and caching in :mod:`lmfix.subword`).

Both have the same face, so no other module asks which kind it holds:

- ``vocab``, ``label`` ("word", "sp-unigram-8000"), ``suffix`` (for run and file names beside
  word-level ones: "" or "-sp-unigram-8000"), ``identity()`` (what metadata records and
  compatibility checks compare), ``tokens_are_words`` (word similarity tests apply);
- ``encode(lines)`` (ids and how many words became ``<unk>``), ``decode(ids)``,
  ``text_stream()`` (the same text, produced as ids arrive: generation streams it);
- ``count_words(ids)`` (word-level tokens, for word-level perplexity), ``starts_word(prev, id)``
  (the rule it counts by, which generation stops by), ``unknown_words(words)``,
  ``count_unknown(lines, limit)`` and ``compare_vocab(train_lines)`` (what a text has that the
  vocabulary lacks: nothing, for SentencePiece's byte fallback);
- ``save_beside(file)`` (next to an embedding file) and ``save_into(directory)`` (into a run
  directory, so the run stays usable without any cache; returns the file's sha256, which
  config.json records and :func:`load_tokenizer` checks).

:class:`TokenizerConfig` is made once from the settings and ``fit`` turns it into a tokenizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from .config import DEFAULTS, SP_MODEL_TYPES, TOKENIZERS
from .errors import LmfixError
from . import word_ids
from .fsutil import atomic_open
from .textfile import chunk_chars
from .vocab import EOS, UNK, Vocab, build_vocab

VOCAB_FILE = "vocab.txt"  # a word run's vocabulary, one word per line, in id order
SP_MODEL_FILE = "tokenizer.model"


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer settings (``--tokenizer``, ``--sp-model-type``, ``--sp-vocab-size``)."""

    kind: str = DEFAULTS["tokenizer"]
    sp_model_type: str = DEFAULTS["sp_model_type"]
    sp_vocab_size: int = DEFAULTS["sp_vocab_size"]
    sp_model_dir: str | None = None  # SentencePiece cache; default $LMFIX_CACHE/sentencepiece

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZERS:
            raise LmfixError(f"--tokenizer {self.kind!r}: use {' or '.join(TOKENIZERS)}")

    @classmethod
    def from_settings(cls, obj) -> TokenizerConfig:
        """From a TrainConfig, or parsed flags (a setting not given keeps its default)."""
        return cls(*(getattr(obj, name, DEFAULTS[name])
                     for name in ("tokenizer", "sp_model_type", "sp_vocab_size")))

    @property
    def suffix(self) -> str:
        """What names of runs and files over these tokens end with ("" for words)."""
        return "" if self.kind == "word" else f"-sp-{self.sp_model_type}-{self.sp_vocab_size}"

    @property
    def settings_key(self) -> list:
        """What a cache of this tokenizer's ids is keyed by (the settings that change them)."""
        return ["word"] if self.kind == "word" else [self.kind, self.sp_model_type,
                                                     self.sp_vocab_size]

    @property
    def default_oov(self) -> str:
        """How ``lmfix run`` fills LM tokens its built embeddings lack: never, for words (their
        vectors cover the vocabulary); at random for SentencePiece, whose byte-fallback pieces
        mostly never occur in training text, so word2vec and PMI give them no vector."""
        return "error" if self.kind == "word" else "random"

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

    def fit_encode(self, parts: list, train_sha256: str, sink, scratch: Path,
                   workers: int = 1) -> Tokenizer:
        """Fit on the training text and encode it, handing ``sink(ids, n_unk, words, chars)``
        the int32 ids in order. ``parts`` cover the text in order, each with ``chunks()``
        (chunks of whole lines, :mod:`lmfix.textfile`). Words: one pass, the parts encoded
        side by side in ``workers`` processes (:mod:`lmfix.word_ids`); the vocabulary is the
        one :func:`lmfix.vocab.build_vocab` builds from the same lines, without holding them.
        SentencePiece trains on the lines, then encodes them."""
        if self.kind == "word":
            index, done = word_ids.encode_parts(parts, scratch, workers)
            for part in done:
                for ids in word_ids.global_ids(part, index):
                    sink(ids, 0, ids.size, 0)
                sink(np.empty(0, np.int32), 0, 0, part.chars)
            if UNK not in index:  # as build_vocab: valid/test words absent from train need it
                index[UNK] = len(index)
            return WordTokenizer(Vocab(list(index), index))
        chunks = [c for part in parts for c in part.chunks()]
        tokenizer = self.fit([t for c in chunks for t in c[:-1].split("\n")], train_sha256)
        for chunk in chunks:
            sink(*tokenizer.encode_text(chunk), chunk_chars(chunk))
        return tokenizer


class WordTokenizer:
    kind = "word"
    label = "word"
    suffix = ""
    tokens_are_words = True

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

    def encode_text(self, chunk: str) -> tuple[np.ndarray, int, int]:
        """:meth:`encode` of a chunk of whole lines (each ending in a newline), as int32 ids,
        with how many words became <unk> and the word-level token count."""
        index, words = self.vocab.index, word_ids.words_of(chunk)
        try:
            return np.fromiter(map(index.__getitem__, words), np.int32, len(words)), 0, len(words)
        except KeyError:  # some word is not in the vocabulary
            ids = np.fromiter((index.get(w, -1) for w in words), np.int32, len(words))
            unknown = ids < 0
            ids[unknown] = index[UNK]
            return ids, int(unknown.sum()), len(words)

    def count_words(self, ids: torch.Tensor) -> int:
        return ids.numel()

    def starts_word(self, prev: int, token: int) -> bool:
        return True  # every token is a word (an <eos> too, as the example counts it)

    def unknown_words(self, words: list[str]) -> list[str]:
        return [w for w in words if w not in self.vocab.index]

    def count_unknown(self, lines: list[str], limit: int) -> int:
        """Words among the first ``limit`` tokens of ``lines`` that the vocabulary lacks."""
        index, n, seen = self.vocab.index, 0, 0
        for line in lines:
            for w in line.split():
                if seen >= limit:
                    return n
                seen += 1
                n += w not in index
            seen += 1  # the line's <eos>
        return n

    def compare_vocab(self, train_lines: list[str]) -> dict:
        """How the vocabulary of another training text compares with this one."""
        words = build_vocab(train_lines).words
        missing = self.unknown_words(words)
        return {"vocab_identical": words == self.vocab.words, "vocab_size": len(words),
                "vocab_missing": len(missing), "vocab_missing_examples": missing[:5]}

    def decode(self, ids) -> str:
        """WikiText-style: tokens joined by spaces, ``<eos>`` as a line break."""
        words = self.vocab.words
        return "\n".join(" ".join(words[i] for i in line)
                         for line in _lines(ids, self.vocab.index[EOS]))

    def text_stream(self) -> TextStream:
        return TextStream(self.vocab.index[EOS], lambda ids: self.vocab.words[ids[0]],
                          self.starts_word)

    def save_beside(self, path: str | Path) -> None:
        """Nothing to write: a word-level embedding file's rows are its words."""

    def save_into(self, directory: str | Path) -> str:
        data = "".join(w + "\n" for w in self.vocab.words).encode("utf-8")
        return _write(Path(directory) / VOCAB_FILE, data)


class SentencePieceTokenizer:
    kind = "sentencepiece"
    tokens_are_words = False

    def __init__(self, sp, model_bytes: bytes, cfg, model_path: str | None = None):
        self.sp, self.model_bytes, self.cfg, self.model_path = sp, model_bytes, cfg, model_path
        self.vocab = Vocab([sp.id_to_piece(i) for i in range(sp.get_piece_size())])
        self.label = f"sp-{cfg.model_type}-{cfg.vocab_size}"
        self.suffix = f"-{self.label}"

    def identity(self) -> dict:
        return {"kind": "sentencepiece", "model_type": self.cfg.model_type,
                "vocab_size": self.cfg.vocab_size, "seed": self.cfg.seed,
                "model_path": self.model_path,
                "model_sha256": hashlib.sha256(self.model_bytes).hexdigest()}

    def encode(self, lines: list[str]) -> tuple[torch.Tensor, int]:
        from .subword import encode_lines
        return encode_lines(self.sp, lines), 0  # byte fallback: nothing is ever unknown

    def encode_text(self, chunk: str) -> tuple[np.ndarray, int, int]:
        """:meth:`encode` of a chunk of whole lines, as int32 ids, 0 unknown, and the
        chunk's word-level token count (words + one <eos> per line, as the example counts)."""
        ids, _ = self.encode(chunk[:-1].split("\n"))
        return ids.numpy().astype(np.int32), 0, len(chunk.split()) + chunk.count("\n")

    def count_words(self, ids: torch.Tensor) -> int:
        from .subword import words_in_pieces
        return words_in_pieces([self.vocab.words[i] for i in _as_list(ids)])

    def starts_word(self, prev: int, token: int) -> bool:
        from .subword import starts_word
        pieces = self.vocab.words
        return starts_word(pieces[prev] if prev >= 0 else "", pieces[token])

    def unknown_words(self, words: list[str]) -> list[str]:
        return []

    def count_unknown(self, lines: list[str], limit: int) -> int:
        return 0

    def compare_vocab(self, train_lines: list[str]) -> dict:
        return {}  # pieces spell any text: there is no vocabulary to compare

    def decode(self, ids) -> str:
        return "\n".join(self.sp.decode(line) for line in _lines(ids, self.vocab.index[EOS]))

    def text_stream(self) -> TextStream:
        return TextStream(self.vocab.index[EOS], self.sp.decode, self.starts_word)

    def save_beside(self, path: str | Path) -> None:
        _write(Path(f"{path}.tokenizer.model"), self.model_bytes)

    def save_into(self, directory: str | Path) -> str:
        return _write(Path(directory) / SP_MODEL_FILE, self.model_bytes)


Tokenizer = Union[WordTokenizer, SentencePieceTokenizer]


class TextStream:
    """The text of an id stream, produced as the ids arrive: ``feed(id)`` returns what is
    complete so far, the pieces of a word once the next word starts, a line break once the
    next token comes, so that all of it joined equals ``decode(ids)``."""

    def __init__(self, eos: int, decode_word, starts_word):
        self.eos, self.decode_word, self.starts_word = eos, decode_word, starts_word
        self.word: list[int] = []
        self.prev = -1
        self.line_start = True
        self.pending_eos = False

    def feed(self, token: int) -> str:
        out = []
        if token == self.eos:
            out.append(self._flush_word())
            if self.pending_eos:
                out.append("\n")
            self.pending_eos, self.line_start = True, True
        else:
            if self.pending_eos:
                out.append("\n")
                self.pending_eos = False
            if self.word and self.starts_word(self.prev, token):
                out.append(self._flush_word())
            self.word.append(token)
        self.prev = token
        return "".join(out)

    def end(self) -> str:
        return self._flush_word()

    def _flush_word(self) -> str:
        if not self.word:
            return ""
        text = self.decode_word(self.word)
        self.word = []
        sep = "" if self.line_start else " "
        self.line_start = False
        return sep + text


def _write(dest: Path, data: bytes) -> str:
    with atomic_open(dest, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


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


def load_tokenizer(identity: dict, directory: str | Path, sha256: str) -> Tokenizer:
    """The tokenizer a run directory was trained with (its ``save_into`` file), which must be
    the very file the run recorded (``sha256``)."""
    directory = Path(directory)
    word = identity.get("kind") == "word"
    path = directory / (VOCAB_FILE if word else SP_MODEL_FILE)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LmfixError(f"{path}: cannot read the run's tokenizer ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise LmfixError(f"{path} is not the file this run was trained with (its sha256 differs "
                         "from the one config.json records): restore it from the run's copy")
    if not word:
        from . import subword
        sp = subword.load_model(path)
        if sp is None:
            raise LmfixError(f"{path}: not a SentencePiece model")
        cfg = subword.SubwordConfig(identity["model_type"], identity["vocab_size"],
                                    seed=identity["seed"])
        return SentencePieceTokenizer(sp, data, cfg, str(path))
    try:
        words = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise LmfixError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if len(set(words)) != len(words) or EOS not in words or UNK not in words:
        raise LmfixError(f"{path}: not an lmfix vocabulary (duplicate words, or no {EOS}/{UNK})")
    return WordTokenizer(Vocab(words))


# Identities are plain dicts in JSON (config.json, summary.json, embedding sidecars).

def label_of(identity: dict) -> str:
    """"word", or e.g. "sp-unigram-8000" for a SentencePiece vocabulary."""
    if identity.get("kind") == "word":
        return "word"
    return f"sp-{identity.get('model_type', '?')}-{identity.get('vocab_size', '?')}"


def describe(identity: dict) -> str:
    if identity.get("kind") == "word":
        return "word-level tokens"
    return (f"a {identity.get('model_type')} SentencePiece model of "
            f"{identity.get('vocab_size')} pieces")


def same_tokenizer(a: dict | None, b: dict | None) -> bool:
    """Same kind and, for SentencePiece, the very same model file (by checksum)."""
    return ((a or {}).get("kind"), (a or {}).get("model_sha256")) == \
        ((b or {}).get("kind"), (b or {}).get("model_sha256"))
