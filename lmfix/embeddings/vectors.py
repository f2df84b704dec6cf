"""Word embeddings as a value: words + float32 matrix + provenance, and their file formats.

An :class:`Embeddings` does not know how it was made (like gensim's ``KeyedVectors``): PMI,
word2vec, a random basis or a downloaded GloVe file all end up as the same small value.
Rows are always matched to a language model's vocabulary **by word** (:func:`align_to_vocab`),
never by position: word2vec files are sorted by frequency, GloVe files by whatever.

Files (``save_embeddings`` writes the first two, ``load_embeddings`` reads all of them)::

    word2vec text    "N D\\n" then N lines "word v1 … vD\\n"      .txt, .vec (fastText), other
    word2vec binary  "N D\\n" then N × ("word " + D little-endian float32 [+ "\\n"])   .bin
    GloVe text       like word2vec text without the "N D" header line
    numpy            .npy matrix (N × D) + one word per line in FILE.vocab,
                     FILE-without-.npy.vocab, or vocab.txt in the same directory
    sidecar          FILE.json: the provenance dict (``meta``), plain JSON

Example::

    >>> import numpy as np, tempfile, os
    >>> from lmfix.embeddings.vectors import Embeddings, save_embeddings, load_embeddings
    >>> emb = Embeddings(["a", "b"], np.eye(2, dtype=np.float32), {"method": "demo"})
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.txt")
    >>> save_embeddings(emb, path)
    >>> back = load_embeddings(path)
    >>> back.words, back.meta["method"]
    (['a', 'b'], 'demo')
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LmfixError
from ..fsutil import atomic_path, read_json, write_json

FORMATS = ("text", "binary", "glove", "npy")
OOV_POLICIES = ("error", "random", "zero")
_NPY_MAGIC = b"\x93NUMPY"
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark
_EXAMPLES = 10  # how many missing / bad words an error message or coverage report lists
_SEPARATORS = frozenset(" \n\r")  # cannot appear inside a word in word2vec files


@dataclass
class Embeddings:
    """``words[i]`` has vector ``vectors[i]``; ``meta`` says how it was made (JSON-able).

    Construction checks the invariants every file reader and builder relies on: a 2-D
    float32 matrix with one row per word, words unique, non-empty, without space or line break,
    all values finite. Violations raise :class:`LmfixError`.
    """

    words: list[str]
    vectors: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.words = list(self.words)
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2:
            raise LmfixError(f"embedding matrix must be 2-D, got shape {self.vectors.shape}")
        if len(self.words) != self.vectors.shape[0]:
            raise LmfixError(f"{len(self.words)} words but {self.vectors.shape[0]} vectors")
        if not self.words:
            raise LmfixError("embeddings contain no words")
        if self.vectors.shape[1] < 1:
            raise LmfixError("embedding vectors have dimension 0")
        bad = [w for w in self.words if not isinstance(w, str) or not w or _SEPARATORS.intersection(w)]
        if bad:
            raise LmfixError(f"{len(bad)} words are empty or contain a space or line break, "
                             f"e.g. {bad[:_EXAMPLES]!r}")
        if len(set(self.words)) != len(self.words):
            seen, dups = set(), []
            for w in self.words:
                if w in seen and w not in dups:
                    dups.append(w)
                seen.add(w)
            raise LmfixError(f"duplicate words: {len(dups)} words occur more than once, "
                             f"e.g. {dups[:_EXAMPLES]!r}")
        finite = np.isfinite(self.vectors).all(axis=1)
        if not finite.all():
            bad_rows = np.flatnonzero(~finite)
            raise LmfixError(f"{bad_rows.size} vectors contain NaN or infinite values, "
                             f"e.g. {[self.words[i] for i in bad_rows[:_EXAMPLES]]!r}")
        if not isinstance(self.meta, dict):
            raise LmfixError(f"embedding metadata must be a dict, got {type(self.meta).__name__}")

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.words)

    def index(self) -> dict[str, int]:
        """word → row."""
        return {w: i for i, w in enumerate(self.words)}


# ---------------------------------------------------------------------------------------------
# Saving


def save_embeddings(emb: Embeddings, path: str | os.PathLike, fmt: str | None = None) -> None:
    """Write ``emb`` in word2vec format via gensim, plus its metadata sidecar ``path + ".json"``.

    ``fmt`` is ``"text"`` or ``"binary"``; by default binary for ``.bin`` and text otherwise.
    Both files are written atomically (temporary sibling, fsync, rename). The sidecar records
    ``meta`` plus the file's shape and sha256, so a sidecar left over from an earlier file is
    detected on load. Order: vectors to a temporary file → sidecar → rename, so a crash leaves
    either the old pair or a sidecar whose sha256 does not match (reported on load).
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    binary = save_format(path, fmt) == "binary"
    with atomic_path(path) as tmp:
        kv = KeyedVectors(vector_size=emb.dim, count=0, dtype=np.float32)
        kv.add_vectors(emb.words, emb.vectors)
        # Counts in row order, so gensim (which sorts by count) keeps our row order.
        kv.allocate_vecattrs(attrs=["count"], types=[np.int64])
        kv.expandos["count"][:] = np.arange(len(emb), 0, -1)
        kv.save_word2vec_format(str(tmp), binary=binary)
        meta = dict(emb.meta)
        meta["file"] = {"format": "binary" if binary else "text", "n_words": len(emb),
                        "dim": emb.dim, "sha256": file_sha256(tmp)}
        write_json(sidecar_path(path), meta)


def save_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format ``save_embeddings`` will write: ``fmt`` if given, else by extension."""
    if fmt is None:
        return "binary" if Path(path).suffix.lower() == ".bin" else "text"
    if fmt not in ("text", "binary"):
        raise LmfixError(f"cannot save embeddings as {fmt!r}: choose 'text' or 'binary'")
    return fmt


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where an embedding file's JSON metadata lives: FILE.json beside FILE."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (embedding files run to 100s of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading


def load_embeddings(path: str | os.PathLike, fmt: str | None = None) -> Embeddings:
    """Read embeddings from a word2vec text/binary, GloVe, fastText ``.vec`` or ``.npy`` file.

    ``fmt`` (``"text"`` = word2vec text with header, ``"binary"``, ``"glove"`` = text without
    header, ``"npy"``) defaults to: ``.npy`` → npy, ``.bin`` → binary, ``.txt``/``.vec`` →
    text with or without header (sniffed from the first line), anything else sniffed from
    the content. The reader is strict where gensim's ``load_word2vec_format`` is lenient
    (gensim keeps the first of duplicate words, ignores lines past the header's count and
    broadcasts a one-value line to every dimension): any malformed file raises one
    :class:`LmfixError` naming the file and the problem. A leading UTF-8 byte order mark is
    ignored and CRLF line ends read as LF. ``meta`` comes from the JSON sidecar
    ``path + ".json"`` when there is one (``{}`` otherwise).
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise LmfixError(f"unknown embedding format {fmt!r}: choose one of {', '.join(FORMATS)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LmfixError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LmfixError(f"{path}: is a directory, not an embedding file") from None
    except OSError as e:
        raise LmfixError(f"{path}: cannot read ({e.strerror or e})") from None
    # Some Windows tools (older Notepad, PowerShell 5's "Out-File -Encoding utf8") start text
    # with a byte order mark; kept, it made the first word "\ufeffthe". Stripped here, before
    # sniffing, so the header is recognized too; the sidecar's sha256 covers the whole file.
    body = data[len(_BOM):] if data.startswith(_BOM) else data
    if not body.strip():
        raise LmfixError(f"{path}: empty file")
    fmt = fmt or _sniff(path, body)
    try:
        if fmt == "npy":
            words, vectors = _parse_npy(path)
        elif fmt == "binary":
            words, vectors = _parse_binary(body)
        else:
            words, vectors = _parse_text(body, header=(fmt == "text"))
        emb = Embeddings(words, vectors, {})
    except LmfixError as e:
        raise LmfixError(f"{path}: {e} (read as {_FORMAT_NAMES[fmt]})") from None
    emb.meta = _read_sidecar(path, data, emb)
    return emb


_FORMAT_NAMES = {"text": "word2vec text", "binary": "word2vec binary",
                 "glove": "GloVe text (no header)", "npy": "numpy .npy + vocabulary"}


def _sniff(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npy" or data.startswith(_NPY_MAGIC):
        return "npy"
    if suffix == ".bin":
        return "binary"
    header = _parse_header(data.split(b"\n", 1)[0])
    if header is None:
        return "glove"
    if suffix in (".txt", ".vec"):
        return "text"
    # Unknown extension with a header: text if the first entry is a text line of D+1 fields.
    dim = header[1]
    rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
    first = rest.split(b"\n", 1)[0]
    try:
        fields = first.decode("utf-8").split()
        if len(fields) == dim + 1:
            [float(x) for x in fields[1:]]
            return "text"
    except (UnicodeDecodeError, ValueError):
        pass
    return "binary"


def _parse_header(line: bytes) -> tuple[int, int] | None:
    """``(n_words, dim)`` if ``line`` is a word2vec header "N D", else None."""
    fields = line.split()
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        return None
    return int(fields[0]), int(fields[1])


def _parse_text(data: bytes, header: bool) -> tuple[list[str], np.ndarray]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LmfixError(f"not UTF-8 text (binary data at byte {e.start}?; word2vec binary "
                         "files are recognized by the .bin extension)") from None
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise LmfixError("no vectors (only whitespace)")
    start = 0
    if header:
        parsed = _parse_header(lines[0].encode("utf-8")) if lines else None
        if parsed is None:
            raise LmfixError(f"bad header {lines[0][:80]!r}: expected 'N_WORDS DIM'")
        n_words, dim = parsed
        if n_words < 1 or dim < 1:
            raise LmfixError(f"header declares {n_words} words of dimension {dim}")
        start = 1
        if len(lines) - 1 < n_words:
            raise LmfixError(f"truncated: header declares {n_words} words, file has {len(lines) - 1}")
        if len(lines) - 1 > n_words:
            raise LmfixError(f"header declares {n_words} words but the file has {len(lines) - 1} lines "
                             "of vectors")
    else:
        dim = None
    words: list[str] = []
    rows: list[np.ndarray] = []
    for number, line in enumerate(lines[start:], start=start + 1):
        word, _, rest = line.strip(" \r").partition(" ")
        values = rest.split()
        if not word or not values:
            raise LmfixError(f"line {number}: expected a word and its vector, got {line[:80]!r}")
        if dim is None:
            dim = len(values)
        if len(values) != dim:
            raise LmfixError(f"line {number} ({word!r}): {len(values)} values, expected {dim}")
        try:
            with np.errstate(over="ignore"):  # too large for float32 → inf, reported below
                rows.append(np.array(values, dtype=np.float32))
        except ValueError:
            raise LmfixError(f"line {number} ({word!r}): not a number in {rest[:80]!r}") from None
        words.append(word)
    return words, np.stack(rows)


def _parse_binary(data: bytes) -> tuple[list[str], np.ndarray]:
    end = data.find(b"\n")
    parsed = _parse_header(data[:end]) if end >= 0 else None
    if parsed is None:
        first_line = data[:80].split(b"\n")[0]
        raise LmfixError(f"bad header {first_line!r}: expected 'N_WORDS DIM'")
    n_words, dim = parsed
    if n_words < 1 or dim < 1:
        raise LmfixError(f"header declares {n_words} words of dimension {dim}")
    size = 4 * dim
    if n_words * (size + 2) > len(data) - end - 1:  # each entry: ≥ 1 byte word, space, floats
        raise LmfixError(f"truncated: header declares {n_words} words × {dim} float32, "
                         f"but only {len(data) - end - 1} bytes follow")
    words: list[str] = []
    vectors = np.empty((n_words, dim), dtype=np.float32)
    pos = end + 1
    for i in range(n_words):
        while pos < len(data) and data[pos] == 0x0A:  # the C tool ends each vector with "\n"
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + size > len(data):
            raise LmfixError(f"truncated: entry {i + 1} of {n_words} is incomplete")
        try:
            words.append(data[pos:space].decode("utf-8"))
        except UnicodeDecodeError:
            raise LmfixError(f"entry {i + 1}: word is not UTF-8 ({data[pos:space][:40]!r}); "
                             "garbage or not a word2vec binary file") from None
        vectors[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + size
    if data[pos:].strip():
        raise LmfixError(f"{len(data) - pos} bytes of trailing data after the {n_words} words the "
                         "header declares")
    return words, vectors


def _parse_npy(path: Path) -> tuple[list[str], np.ndarray]:
    try:  # memory-mapped, so a header claiming a huge shape cannot allocate it
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise LmfixError(f"not a readable .npy array ({e})") from None
    if mapped.ndim != 2 or mapped.dtype.kind not in "fiu":
        raise LmfixError(f"expected a 2-D real-valued array, got shape {mapped.shape} {mapped.dtype}")
    vectors = np.array(mapped, dtype=np.float32)
    del mapped
    candidates = [path.with_name(path.name + ".vocab"), path.with_suffix(".vocab"),
                  path.with_name("vocab.txt")]
    vocab = next((c for c in candidates if c.is_file()), None)
    if vocab is None:
        raise LmfixError("no vocabulary file next to it; expected one word per line in "
                         + " or ".join(str(c) for c in candidates))
    try:
        words = vocab.read_text(encoding="utf-8-sig").split("\n")  # -sig: drops a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise LmfixError(f"cannot read vocabulary {vocab}: {e}") from None
    if words and words[-1] == "":
        words.pop()
    words = [w.rstrip("\r") for w in words]
    if len(words) != vectors.shape[0]:
        raise LmfixError(f"vocabulary {vocab} has {len(words)} words, the matrix {vectors.shape[0]} rows")
    return words, vectors


def _read_sidecar(path: Path, data: bytes, emb: Embeddings) -> dict:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    meta = read_json(sidecar)
    if not isinstance(meta, dict):
        raise LmfixError(f"{sidecar}: expected a JSON object of metadata")
    recorded = meta.get("file")
    if isinstance(recorded, dict):
        if recorded.get("n_words", len(emb)) != len(emb) or recorded.get("dim", emb.dim) != emb.dim:
            raise LmfixError(f"{sidecar} describes {recorded.get('n_words')} × {recorded.get('dim')} "
                             f"vectors but {path} holds {len(emb)} × {emb.dim}: stale sidecar?")
        digest = recorded.get("sha256")
        if digest and digest != hashlib.sha256(data).hexdigest():
            raise LmfixError(f"{sidecar} does not match {path} (sha256 differs): stale sidecar? "
                             "Delete it to load the vectors without metadata.")
    return meta


# ---------------------------------------------------------------------------------------------
# Using embeddings


def coverage(emb: Embeddings, vocab_words: list[str]) -> dict:
    """How many of ``vocab_words`` have a vector in ``emb``."""
    have = set(emb.words)
    missing = [w for w in vocab_words if w not in have]
    return {"covered": len(vocab_words) - len(missing), "missing": len(missing),
            "vocab_size": len(vocab_words), "examples_missing": missing[:_EXAMPLES]}


def align_to_vocab(emb: Embeddings, vocab_words: list[str], oov: str = "error",
                   seed: int = 0) -> tuple[np.ndarray, dict]:
    """The V×d float32 matrix whose row i is the vector of ``vocab_words[i]``, and coverage.

    Rows are matched by word. Words without a vector raise :class:`LmfixError` (naming how
    many and a few of them) unless ``oov`` is ``"zero"`` (zero rows) or ``"random"``
    (Gaussian directions, seeded, scaled to the mean row norm of ``emb``).
    """
    if oov not in OOV_POLICIES:
        raise LmfixError(f"unknown OOV policy {oov!r}: choose one of {', '.join(OOV_POLICIES)}")
    if len(set(vocab_words)) != len(vocab_words):
        raise LmfixError("the vocabulary to align to has duplicate words")
    index = emb.index()
    rows = np.fromiter((index.get(w, -1) for w in vocab_words), dtype=np.int64, count=len(vocab_words))
    found = rows >= 0
    report = coverage(emb, vocab_words)
    if report["missing"] and oov == "error":
        raise LmfixError(f"{report['missing']} of {len(vocab_words)} vocabulary words have no vector, "
                         f"e.g. {report['examples_missing']!r}; choose an OOV policy "
                         "('random' or 'zero') to fill them")
    matrix = np.zeros((len(vocab_words), emb.dim), dtype=np.float32)
    matrix[found] = emb.vectors[rows[found]]
    if report["missing"] and oov == "random":
        mean_norm = float(np.linalg.norm(emb.vectors, axis=1).mean())
        noise = np.random.default_rng(seed).standard_normal((report["missing"], emb.dim))
        noise *= mean_norm / np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
        matrix[~found] = noise
    return matrix, report


def nearest_neighbors(emb: Embeddings, word: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` words with the highest cosine similarity to ``word`` (itself excluded)."""
    if k < 1:
        raise LmfixError(f"k must be at least 1, got {k}")
    index = emb.index()
    if word not in index:
        raise LmfixError(f"{word!r} is not in the embeddings ({len(emb)} words)")
    norms = np.linalg.norm(emb.vectors, axis=1)
    unit = emb.vectors / np.maximum(norms, 1e-12)[:, None]
    cosines = unit @ unit[index[word]]
    cosines[index[word]] = -np.inf
    k = min(k, len(emb) - 1)
    top = np.argpartition(-cosines, k - 1)[:k] if k > 0 else np.array([], dtype=np.int64)
    top = top[np.argsort(-cosines[top], kind="stable")]
    return [(emb.words[i], float(cosines[i])) for i in top]
