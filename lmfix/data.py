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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .corpus import SPLITS, Corpus, CorpusSource, RawText, check_learnable  # noqa: F401
from .corpus_cache import file_sha256, load_encoded
from .errors import LmfixError, first_line
from .textfile import (MAX_LINE_CHARS, FileRange, chunk_lines, file_parts,  # noqa: F401
                       lines_chunk, text_chunks)
from .tokenizer import Tokenizer, TokenizerConfig
from .vocab import EOS, Vocab

# Accepted file names per split: the example's renamed files, then the original archive's.
_FILE_NAMES = {s: (f"{s}.txt", f"wiki.{s}.tokens") for s in SPLITS}
_HUB_REPO = "Salesforce/wikitext"
_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
DEFAULT_HUB = "wikitext-2-v1"


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
    """A Corpus of lines already read, with a fitted tokenizer (in memory, no cache)."""
    streams, unk, words = {}, {}, {}
    for s in SPLITS:
        parts = [tokenizer.encode_text(c) for c in line_chunks(raw.lines[s])]
        streams[s] = torch.from_numpy(np.concatenate([p[0] for p in parts] or
                                                     [np.empty(0, np.int32)]))
        unk[s], words[s] = sum(p[1] for p in parts), sum(p[2] for p in parts)
    check_learnable(np.bincount(streams["train"].numpy(), minlength=len(tokenizer.vocab)),
                    tokenizer.vocab.index[EOS], raw.source)
    return Corpus(raw.name, raw.source, tokenizer, streams["train"], streams["valid"],
                  streams["test"], raw.train_sha256, unk, words,
                  {s: count_chars(raw.lines[s]) for s in SPLITS})


def line_chunks(lines: list[str], size: int = 1 << 16) -> Iterator[str]:
    """Lines as text chunks of whole lines, each line ending in a newline."""
    for i in range(0, len(lines), size):
        yield lines_chunk(lines[i: i + size])


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
    """The lines as readline gives them: each with its newline, the last as it is."""
    return [t for chunk in text_chunks(f, name, end_newline=False) for t in chunk_lines(chunk)]


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


def open_directory(directory: str | os.PathLike) -> CorpusSource:
    directory = Path(directory)
    files = find_split_files(directory)

    def chunks(split: str) -> Iterator[str]:
        path, empty = files[split], True
        for chunk in FileRange(str(path), 0, path.stat().st_size).chunks():
            empty = False
            yield chunk
        if empty:
            raise LmfixError(f"{path}: the {split} split is empty (no tokens)")

    # The checksum of each file's bytes, so it can be compared with published ones (e.g. the
    # sha256 in WikiText-2's SOURCE.md).
    sha = {}
    for s, p in files.items():
        try:
            sha[s] = file_sha256(p)
        except OSError as e:
            raise LmfixError(f"{p}: cannot read ({e.strerror or e})") from None
    return CorpusSource(directory.name, str(directory.resolve()), sha, chunks,
                        lambda split, n: file_parts(files[split], n))


_HUB_BATCH = 20_000  # lines per batch read from a hub dataset's arrow table


def open_hub(name: str = DEFAULT_HUB) -> CorpusSource:
    """WikiText from the Hugging Face hub through ``datasets`` (cached by ``datasets``, whose
    arrow tables are memory-mapped: the text is read a batch of lines at a time).

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

    def chunks(split: str) -> Iterator[str]:
        try:
            table = ds[_HUB_SPLITS[split]]
            batches = (b["text"] for b in table.iter(batch_size=_HUB_BATCH))
            empty = True
            for texts in batches:
                if texts:
                    empty = False
                    yield lines_chunk(texts)
        except (KeyError, TypeError) as e:
            raise LmfixError(f"hub dataset {repo} ({config}) lacks split/column {e}") from None
        if empty:
            raise LmfixError(f"hub dataset {repo} ({config}): the {split} split has no tokens")

    sha = {}
    for s in SPLITS:  # the sha256 of the split's lines joined, each ending in a newline
        h = hashlib.sha256()
        for chunk in chunks(s):
            h.update(chunk.encode("utf-8"))
        sha[s] = h.hexdigest()
    return CorpusSource(config or repo, f"hub:{repo}:{config}", sha, chunks)


def resolve_data_spec(spec: str | None) -> str:
    """``--data`` wins, then ``$LMFIX_DATA``, then the hub's WikiText-2."""
    return spec or os.environ.get("LMFIX_DATA") or f"hub:{DEFAULT_HUB}"


def open_source(spec: str | None = None) -> CorpusSource:
    spec = resolve_data_spec(spec)
    if spec.startswith("hub:"):
        return open_hub(spec[4:] or DEFAULT_HUB)
    return open_directory(spec)


def read_directory(directory: str | os.PathLike) -> RawText:
    return open_directory(directory).read()


def read_hub(name: str = DEFAULT_HUB) -> RawText:
    return open_hub(name).read()


def read_text(spec: str | None = None) -> RawText:
    return open_source(spec).read()


def load_corpus(spec: str | None = None, tokenizer: TokenizerConfig | None = None) -> Corpus:
    """Read and tokenize (word-level unless ``tokenizer`` says otherwise), through the on-disk
    id cache (:mod:`lmfix.corpus_cache`): a corpus already encoded is memory-mapped."""
    return load_encoded(open_source(spec), tokenizer or TokenizerConfig())


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
    # Ids may be stored compactly (int32, as the id cache keeps them); the model and loss
    # index with int64.
    return source[i: i + seq_len].long(), source[i + 1: i + 1 + seq_len].reshape(-1).long()
