"""WikiText-style corpora: reading them (a directory or the hub), tokenizing them with a
:mod:`lmfix.tokenizer`, and the batch layout of the PyTorch ``word_language_model`` example, so
perplexities are comparable with it.

Word-level tokenization follows that example exactly: each line is split on whitespace and an
``<eos>`` is appended to every line, blank lines included. On WikiText-2 this gives 2,088,628 /
217,646 / 245,569 tokens (train/valid/test) and 33,278 types.

Example::

    >>> corpus = load_corpus("../shared/data/wikitext-2")      # doctest: +SKIP
    >>> len(corpus.vocab), corpus.train.numel()                  # doctest: +SKIP
    (33278, 2088628)
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import LmfixError, first_line
from .tokenizer import Tokenizer, TokenizerConfig
from .vocab import EOS, Vocab

SPLITS = ("train", "valid", "test")
# Accepted file names per split: the example's renamed files, then the original archive's.
_FILE_NAMES = {s: (f"{s}.txt", f"wiki.{s}.tokens") for s in SPLITS}
_HUB_REPO = "Salesforce/wikitext"
_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
DEFAULT_HUB = "wikitext-2-v1"


@dataclass
class RawText:
    """A corpus's lines per split, before tokenization."""

    name: str
    source: str
    lines: dict[str, list[str]]
    train_sha256: str


@dataclass
class Corpus:
    name: str
    source: str
    tokenizer: Tokenizer
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_sha256: str
    unk_replaced: dict[str, int] = field(default_factory=dict)
    # Word-level tokens (the example's count, <eos> included) and characters per split, so
    # perplexity can be compared across tokenizations (lmfix.evaluation).
    words: dict[str, int] = field(default_factory=dict)
    chars: dict[str, int] = field(default_factory=dict)

    @property
    def vocab(self) -> Vocab:
        return self.tokenizer.vocab

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def sentences(ids: torch.Tensor, vocab: Vocab) -> list[list[str]]:
    """The id stream cut after each <eos>, as words (each sentence keeps its <eos>)."""
    words, eos = vocab.words, vocab.index[EOS]
    out, cur = [], []
    for i in ids.tolist():
        cur.append(words[i])
        if i == eos:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def count_words(lines: list[str]) -> int:
    """Word-level tokens as the PyTorch example counts them: words + one <eos> per line."""
    return sum(len(line.split()) + 1 for line in lines)


def count_chars(lines: list[str]) -> int:
    """Characters of the text, one per line end, leading/trailing blanks not counted."""
    return sum(len(line.strip()) + 1 for line in lines)


def tokenize(raw: RawText, tokenizer: Tokenizer) -> Corpus:
    streams, unk = {}, {}
    for s in SPLITS:
        streams[s], unk[s] = tokenizer.encode(raw.lines[s])
    distinct = streams["train"].unique()
    if (distinct != tokenizer.vocab.index[EOS]).sum() < 2:
        # Blank lines only, or one word: a model of it learns nothing, and its perplexity
        # (1.00 for three splits of blank lines) would look like a result.
        raise LmfixError(f"{raw.source}: the training split has "
                         f"{int((distinct != tokenizer.vocab.index[EOS]).sum())} distinct "
                         f"token(s) besides {EOS}: nothing to learn (at least 2 are needed)")
    return Corpus(raw.name, raw.source, tokenizer, streams["train"], streams["valid"],
                  streams["test"], raw.train_sha256, unk, text_stats(raw, "words"),
                  text_stats(raw, "chars"))


def text_stats(raw: RawText, what: str) -> dict[str, int]:
    count = count_words if what == "words" else count_chars
    return {s: count(raw.lines[s]) for s in SPLITS}


MAX_LINE_CHARS = 10_000_000  # WikiText-103's longest line is ~50k; an endless one must stop


def read_lines(path: str | os.PathLike, what: str = "lmfix expects word-level WikiText-style "
               "text files") -> list[str]:
    """A text file's lines, read as corpus splits are (see :func:`text_lines`)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            return _bounded_lines(f, str(path))
    except UnicodeDecodeError as e:
        raise LmfixError(f"{path}: not UTF-8 text (byte {e.start}); {what}") from None
    except OSError as e:
        raise LmfixError(f"{path}: cannot read ({e.strerror or e})") from None


def text_lines(text) -> list[str]:
    """Lines of a str, bytes, open text file or list of lines, read like a corpus file: UTF-8,
    a leading byte-order mark dropped (else the first word would be "\ufeff..."), CRLF and CR
    line ends read as LF, and no line longer than MAX_LINE_CHARS (an endless line, such as
    /dev/zero's, would otherwise fill memory)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise LmfixError(f"the text is not UTF-8 (byte {e.start})") from None
    if isinstance(text, str):
        return _bounded_lines(io.StringIO(text.removeprefix("\ufeff"), newline=None), "the text")
    if hasattr(text, "readline"):
        try:
            return _bounded_lines(text, getattr(text, "name", "the text"))
        except UnicodeDecodeError as e:
            raise LmfixError(f"the text is not UTF-8 (byte {e.start})") from None
    lines = list(text)
    if not all(isinstance(line, str) for line in lines):
        raise LmfixError("text must be a str, bytes, an open file or a list of str lines")
    return lines


def _bounded_lines(f, name: str) -> list[str]:
    lines: list[str] = []
    while line := f.readline(MAX_LINE_CHARS + 1):
        if not lines:
            line = line.removeprefix("\ufeff")  # a file opened as plain utf-8 keeps its BOM
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            raise LmfixError(f"{name}: line {len(lines) + 1:,} is longer than "
                             f"{MAX_LINE_CHARS:,} characters (not line-based text?)")
        lines.append(line)
    return lines


def find_split_files(directory: Path) -> dict[str, Path]:
    if not directory.exists():
        raise LmfixError(f"data directory {directory} does not exist")
    if not directory.is_dir():
        raise LmfixError(f"data path {directory} is not a directory")
    files = {}
    for s, names in _FILE_NAMES.items():
        hit = next((directory / n for n in names if (directory / n).is_file()), None)
        if hit is None:
            raise LmfixError(f"{directory}: no {s} split (expected {' or '.join(names)})")
        files[s] = hit
    return files


def read_directory(directory: str | os.PathLike) -> RawText:
    directory = Path(directory)
    files = find_split_files(directory)
    lines = {s: read_lines(p) for s, p in files.items()}
    for s, p in files.items():
        if not lines[s]:
            raise LmfixError(f"{p}: the {s} split is empty (no tokens)")
    # The checksum of the file's bytes, so it can be compared with published ones (e.g. the
    # sha256 in WikiText-2's SOURCE.md).
    digest = hashlib.sha256(files["train"].read_bytes()).hexdigest()
    return RawText(directory.name, str(directory.resolve()), lines, digest)


def read_hub(name: str = DEFAULT_HUB) -> RawText:
    """WikiText from the Hugging Face hub through ``datasets`` (cached by ``datasets``).

    ``name`` is a config of ``Salesforce/wikitext`` (``wikitext-2-v1``, ``wikitext-103-v1``) or
    ``OWNER/REPO:CONFIG`` for another dataset with a ``text`` column and the same splits.
    """
    repo, config = (name.split(":", 1) + [None])[:2] if "/" in name else (_HUB_REPO, name)
    try:
        import datasets
        ds = datasets.load_dataset(repo, config)
    except Exception as e:  # datasets raises many types offline (ConnectionError, HfHubHTTPError...)
        raise LmfixError(
            f"could not load {repo} ({config}) from the Hugging Face hub: {type(e).__name__}: "
            f"{first_line(e)}\n"
            "Provide the data either way:\n"
            "  --data DIR (or LMFIX_DATA=DIR): a directory with train.txt, valid.txt, test.txt\n"
            "      (or wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens)\n"
            "  --data hub:wikitext-2-v1 with network access (cached after the first download)"
        ) from None
    try:
        lines = {s: [t if t.endswith("\n") else t + "\n" for t in ds[_HUB_SPLITS[s]]["text"]]
                 for s in SPLITS}
    except (KeyError, TypeError) as e:
        raise LmfixError(f"hub dataset {repo} ({config}) lacks split/column {e}") from None
    for s, split_lines in lines.items():
        if not split_lines:
            raise LmfixError(f"hub dataset {repo} ({config}): the {s} split has no tokens")
    digest = hashlib.sha256("".join(lines["train"]).encode()).hexdigest()
    return RawText(config or repo, f"hub:{repo}:{config}", lines, digest)


def resolve_data_spec(spec: str | None) -> str:
    """``--data`` wins, then ``$LMFIX_DATA``, then the hub's WikiText-2."""
    return spec or os.environ.get("LMFIX_DATA") or f"hub:{DEFAULT_HUB}"


def read_text(spec: str | None = None) -> RawText:
    spec = resolve_data_spec(spec)
    if spec.startswith("hub:"):
        return read_hub(spec[4:] or DEFAULT_HUB)
    return read_directory(spec)


def load_corpus(spec: str | None = None, tokenizer: TokenizerConfig | None = None) -> Corpus:
    """Read and tokenize (word-level unless ``tokenizer`` says otherwise)."""
    raw = read_text(spec)
    return tokenize(raw, (tokenizer or TokenizerConfig()).fit(raw.lines["train"], raw.train_sha256))


# Batch layout, as in the PyTorch word_language_model example. The token stream
#   a b c d e f g h i j k l m n o p q r s t u v w x      (24 tokens)
# is cut into ``bsz`` = 4 contiguous columns, each read top to bottom independently:
#   ┌ a g m s ┐
#   │ b h n t │
#   │ c i o u │
#   │ d j p v │
#   │ e k q w │
#   └ f l r x ┘
# Tokens that do not fill a whole row are dropped. Batches are ``bptt`` consecutive rows
# (with bptt = 2: rows a..b as input, b..c as target), and the LSTM's hidden state is carried
# from one chunk to the next, so column j is one long sequence.


def batchify(data: torch.Tensor, bsz: int, what: str = "the data") -> torch.Tensor:
    """``what`` names the split in the error (two rows make one input/target window)."""
    nbatch = data.numel() // bsz
    if nbatch < 2:
        raise LmfixError(f"{what}: {data.numel()} tokens are too few for a batch size of {bsz} "
                         f"(one bptt window needs at least {2 * bsz})")
    return data[: nbatch * bsz].view(bsz, nbatch).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows i..i+L-1 as input and rows i+1..i+L as target (flattened), L ≤ bptt."""
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i: i + seq_len], source[i + 1: i + 1 + seq_len].reshape(-1)
