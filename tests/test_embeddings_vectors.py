"""Embeddings value, file formats (round trips through gensim), malformed files, alignment."""

import json
import os

import numpy as np
import pytest
from gensim.models import KeyedVectors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmfix.embeddings.vectors import (
    Embeddings,
    align_to_vocab,
    coverage,
    load_embeddings,
    nearest_neighbors,
    save_embeddings,
)
from lmfix.errors import LmfixError

WORDS = ["the", "cat", "<eos>", "<unk>", "Ünïcode", "x" * 30]


@pytest.fixture
def emb():
    vectors = np.random.default_rng(0).standard_normal((len(WORDS), 7)).astype(np.float32)
    return Embeddings(WORDS, vectors, {"method": "test", "params": {"a": 1}})


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name,binary", [("e.txt", False), ("e.bin", True), ("e.vec", False)])
def test_round_trip_through_gensim(emb, tmp_path, name, binary):
    path = tmp_path / name
    save_embeddings(emb, path)
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert kv.index_to_key == WORDS  # our row order is kept
    np.testing.assert_array_equal(kv.vectors, emb.vectors)
    back = load_embeddings(path)
    assert back.words == WORDS
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.meta["method"] == "test" and back.meta["params"] == {"a": 1}
    assert back.meta["file"]["n_words"] == len(WORDS)
    assert sorted(os.listdir(tmp_path)) == sorted([name, name + ".json"])  # no temp files left


@pytest.mark.parametrize("binary", [False, True])
def test_reads_files_written_by_gensim(emb, tmp_path, binary):
    kv = KeyedVectors(vector_size=emb.dim)
    kv.add_vectors(emb.words, emb.vectors)
    path = tmp_path / "g.data"  # extension says nothing: content is sniffed
    kv.save_word2vec_format(str(path), binary=binary)
    back = load_embeddings(path)
    assert back.words == WORDS and back.meta == {}
    np.testing.assert_array_equal(back.vectors, emb.vectors)


def test_format_override_and_binary_text_extension(emb, tmp_path):
    save_embeddings(emb, tmp_path / "e.txt", fmt="binary")
    assert load_embeddings(tmp_path / "e.txt", fmt="binary").words == WORDS
    with pytest.raises(LmfixError):  # text reader on binary data
        load_embeddings(tmp_path / "e.txt")
    with pytest.raises(LmfixError):
        save_embeddings(emb, tmp_path / "e.x", fmt="npy")


def test_glove_without_header_and_fasttext_vec(tmp_path):
    (tmp_path / "glove.txt").write_text("the 0.1 0.2 0.3\ncat -1 2e-3 4\nsat 1 1 1\n")
    g = load_embeddings(tmp_path / "glove.txt")
    assert g.words == ["the", "cat", "sat"] and g.dim == 3
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "glove.txt"), no_header=True)
    np.testing.assert_allclose(g.vectors, kv.vectors)
    # fastText .vec: header, and every line ends with a space
    (tmp_path / "ft.vec").write_text("2 3 \n</s> 0.1 0.2 0.3 \n, 0.4 0.5 0.6 \n")
    f = load_embeddings(tmp_path / "ft.vec")
    assert f.words == ["</s>", ","]
    np.testing.assert_allclose(f.vectors[1], [0.4, 0.5, 0.6], rtol=1e-6)
    # CRLF line endings
    (tmp_path / "crlf.txt").write_bytes(b"2 2\r\na 1 2\r\nb 3 4\r\n")
    assert load_embeddings(tmp_path / "crlf.txt").words == ["a", "b"]


BOM = b"\xef\xbb\xbf"
W2V_TEXT = b"3 2\nthe 0.5 -1.25\ncat 2 3\nsat 4e-1 5\n"
GLOVE_TEXT = b"the 0.5 -1.25\ncat 2 3\nsat 4e-1 5\n"
FT_VEC = b"3 2 \nthe 0.5 -1.25 \ncat 2 3 \nsat 4e-1 5 \n"  # fastText: a space ends each line


@pytest.mark.parametrize("name,data", [("w.txt", W2V_TEXT), ("g.txt", GLOVE_TEXT),
                                       ("f.vec", FT_VEC), ("w.emb", W2V_TEXT),
                                       ("g.emb", GLOVE_TEXT)])
@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_bom_and_crlf_text_files_load_like_plain_ones(tmp_path, name, data, bom, crlf):
    # Issue 12: a UTF-8 BOM made the first word "\ufeffthe" (and hid a word2vec header).
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    (tmp_path / name).write_bytes((BOM if bom else b"") + data)
    e = load_embeddings(tmp_path / name)
    assert e.words == ["the", "cat", "sat"]
    assert e.words[0] == "the"
    np.testing.assert_array_equal(e.vectors, np.array([[0.5, -1.25], [2, 3], [0.4, 5]], np.float32))


def test_bom_before_a_binary_header_is_ignored(tmp_path):
    vecs = np.arange(6, dtype="<f4").reshape(2, 3)
    data = b"2 3\n" + b"".join(w + b" " + v.tobytes() for w, v in zip([b"the", b"b"], vecs))
    (tmp_path / "b.bin").write_bytes(BOM + data)
    back = load_embeddings(tmp_path / "b.bin")
    assert back.words == ["the", "b"]
    np.testing.assert_array_equal(back.vectors, vecs)


def test_bom_file_with_sidecar_and_bom_npy_vocabulary(emb, tmp_path):
    save_embeddings(emb, tmp_path / "e.txt")
    path = tmp_path / "e.txt"
    path.write_bytes(BOM + path.read_bytes())  # the sidecar's sha256 is now stale: reported
    with pytest.raises(LmfixError, match="stale sidecar"):
        load_embeddings(path)
    os.remove(tmp_path / "e.txt.json")
    assert load_embeddings(path).words == WORDS
    np.save(tmp_path / "m.npy", np.eye(2))
    (tmp_path / "m.vocab").write_bytes(BOM + b"the\r\ncat\r\n")
    assert load_embeddings(tmp_path / "m.npy").words == ["the", "cat"]


def test_only_a_bom_is_an_empty_file(tmp_path):
    (tmp_path / "e.txt").write_bytes(BOM + b"\r\n")
    with pytest.raises(LmfixError, match="empty"):
        load_embeddings(tmp_path / "e.txt")


def test_word2vec_c_binary_with_newline_after_each_vector(tmp_path):
    vecs = np.arange(6, dtype="<f4").reshape(2, 3)
    data = b"2 3\n" + b"".join(w + b" " + v.tobytes() + b"\n" for w, v in zip([b"a", b"b"], vecs))
    (tmp_path / "c.bin").write_bytes(data)
    back = load_embeddings(tmp_path / "c.bin")
    assert back.words == ["a", "b"]
    np.testing.assert_array_equal(back.vectors, vecs)


@pytest.mark.parametrize("vocab_name", ["m.npy.vocab", "m.vocab", "vocab.txt"])
def test_npy_with_vocabulary(tmp_path, vocab_name):
    np.save(tmp_path / "m.npy", np.arange(6, dtype=np.float64).reshape(3, 2))
    (tmp_path / vocab_name).write_text("a\nb\nc\n")
    e = load_embeddings(tmp_path / "m.npy")
    assert e.words == ["a", "b", "c"] and e.vectors.dtype == np.float32
    np.testing.assert_array_equal(e.vectors[2], [4, 5])


def test_npy_errors(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((3, 2)))
    with pytest.raises(LmfixError, match="vocabulary"):
        load_embeddings(tmp_path / "m.npy")
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(LmfixError, match="2 words"):
        load_embeddings(tmp_path / "m.npy")
    np.save(tmp_path / "m.npy", np.zeros(3))
    with pytest.raises(LmfixError, match="2-D"):
        load_embeddings(tmp_path / "m.npy")
    np.save(tmp_path / "o.npy", np.array([[None]], dtype=object), allow_pickle=True)
    with pytest.raises(LmfixError):
        load_embeddings(tmp_path / "o.npy")  # never unpickles


def test_save_is_atomic_and_keeps_the_old_file_on_failure(emb, tmp_path):
    path = tmp_path / "e.bin"
    save_embeddings(emb, path)
    before = path.read_bytes()
    bad = Embeddings(["ok"], np.zeros((1, 7), np.float32), {"not json": object()})
    with pytest.raises(TypeError):
        save_embeddings(bad, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["e.bin", "e.bin.json"]
    with pytest.raises(LmfixError, match="directory"):
        save_embeddings(emb, tmp_path)


def test_stale_sidecar_is_detected(emb, tmp_path):
    save_embeddings(emb, tmp_path / "a.txt")
    other = Embeddings(WORDS, emb.vectors + 1, {})
    save_embeddings(other, tmp_path / "b.txt")
    os.replace(tmp_path / "b.txt", tmp_path / "a.txt")  # a.txt.json now describes old vectors
    with pytest.raises(LmfixError, match="stale sidecar"):
        load_embeddings(tmp_path / "a.txt")
    (tmp_path / "a.txt.json").write_text("[1, 2")
    with pytest.raises(LmfixError, match="JSON"):
        load_embeddings(tmp_path / "a.txt")


# ------------------------------------------------------------------------------ malformed files

BAD_FILES = {
    "empty": (b"", "empty"),
    "blank": (b"\n \n", "empty"),
    "bad header": (b"3 x\na 1 2\n", "bad header|not a number"),
    "header zero words": (b"0 3\n", "0 words"),
    "truncated text": (b"3 2\na 1 2\nb 3 4\n", "truncated"),
    "extra lines": (b"1 2\na 1 2\nb 3 4\n", "declares 1 words"),
    "too few values": (b"2 3\na 1 2 3\nb 1 2\n", "2 values, expected 3"),
    "too many values": (b"2 3\na 1 2 3\nb 1 2 3 4\n", "4 values, expected 3"),
    "one value (gensim broadcasts it)": (b"2 3\na 1 2 3\nb 1\n", "1 values, expected 3"),
    "word without vector": (b"2 3\na 1 2 3\nb\n", "expected a word and its vector"),
    "glove ragged": (b"a 1 2 3\nb 1 2\n", "2 values, expected 3"),
    "not a number": (b"2 2\na 1 2\nb 1 two\n", "not a number"),
    "duplicate words": (b"3 2\na 1 2\nb 3 4\na 5 6\n", "duplicate"),
    "nan": (b"2 2\na 1 nan\nb 3 4\n", "NaN"),
    "inf": (b"2 2\na 1 2\nb -inf 4\n", "NaN or infinite"),
    "float32 overflow": (b"1 2\na 1e39 0\n", "NaN or infinite"),
    "binary garbage as text": (bytes(range(256)) * 4, "UTF-8|bad header|values|word"),
    "blank line inside": (b"3 2\na 1 2\n\nb 3 4\n", "expected a word"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_text_files_raise_lmfix_error(tmp_path, case):
    data, message = BAD_FILES[case]
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(LmfixError, match=message) as info:
        load_embeddings(path)
    assert str(path) in str(info.value)


def binary_file(words, vectors, dim=None):
    dim = vectors.shape[1] if dim is None else dim
    return f"{len(words)} {dim}\n".encode() + b"".join(
        w.encode() + b" " + v.astype("<f4").tobytes() for w, v in zip(words, vectors))


@pytest.mark.parametrize("case,message", [
    ("truncated", "truncated"),
    ("header says more words", "truncated"),
    ("header says fewer words", "trailing data"),
    ("wrong dimension in header", "trailing data|truncated|UTF-8"),
    ("duplicate", "duplicate"),
    ("nan", "NaN"),
    ("garbage", "bad header|truncated|UTF-8|trailing|NaN|space"),
    ("huge header", "truncated"),
    ("bad header", "bad header"),
    ("no header line", "bad header"),
])
def test_malformed_binary_files_raise_lmfix_error(tmp_path, case, message):
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    good = binary_file(["a", "b", "c"], vecs)
    data = {
        "truncated": good[:-5],
        "header says more words": b"4 4\n" + good[4:],
        "header says fewer words": b"2 4\n" + good[4:],
        "wrong dimension in header": b"3 3\n" + good[4:],
        "duplicate": binary_file(["a", "b", "a"], vecs),
        "nan": binary_file(["a", "b", "c"], np.where(vecs == 5, np.nan, vecs)),
        "garbage": b"3 4\n" + np.random.default_rng(0).bytes(200),
        "huge header": b"99999999999 99999999\n" + good[4:],
        "bad header": b"three 4\n" + good[4:],
        "no header line": b"3 4",
    }[case]
    (tmp_path / "bad.bin").write_bytes(data)
    with pytest.raises(LmfixError, match=message):
        load_embeddings(tmp_path / "bad.bin")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LmfixError, match="no such file"):
        load_embeddings(tmp_path / "nope.txt")
    with pytest.raises(LmfixError, match="directory"):
        load_embeddings(tmp_path)
    with pytest.raises(LmfixError, match="unknown embedding format"):
        load_embeddings(tmp_path / "x", fmt="hdf5")


SUFFIXES = st.sampled_from([".txt", ".bin", ".vec", ".npy", ".emb", ""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), suffix=SUFFIXES)
def test_fuzz_arbitrary_bytes_give_embeddings_or_lmfix_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        emb = load_embeddings(path)
    except LmfixError:
        return
    assert isinstance(emb, Embeddings) and np.isfinite(emb.vectors).all()
    assert len(emb.words) == len(set(emb.words)) == emb.vectors.shape[0] > 0


def _valid_files():
    e = Embeddings(["a", "bb", "ccc"], np.arange(9, dtype=np.float32).reshape(3, 3) / 7, {})
    kv = KeyedVectors(vector_size=3)
    kv.add_vectors(e.words, e.vectors)
    return e, kv


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(binary=st.booleans(), cut=st.integers(0, 200), flip=st.integers(0, 200),
       byte=st.integers(0, 255), suffix=SUFFIXES)
def test_fuzz_damaged_valid_files(tmp_path, binary, cut, flip, byte, suffix):
    _, kv = _valid_files()
    path = tmp_path / f"damaged{suffix}"
    kv.save_word2vec_format(str(path), binary=binary)
    data = bytearray(path.read_bytes())
    if flip < len(data):
        data[flip] = byte
    path.write_bytes(bytes(data[: max(len(data) - cut, 0)]) if cut % 3 == 0 else bytes(data))
    try:
        emb = load_embeddings(path)
    except LmfixError:
        return
    assert np.isfinite(emb.vectors).all() and len(set(emb.words)) == len(emb)


# ------------------------------------------------------------------------------ the value itself


def test_embeddings_invariants():
    v = np.zeros((2, 3), np.float32)
    with pytest.raises(LmfixError, match="duplicate"):
        Embeddings(["a", "a"], v)
    with pytest.raises(LmfixError, match="2 words but 3 vectors"):
        Embeddings(["a", "b"], np.zeros((3, 3)))
    with pytest.raises(LmfixError, match="space"):
        Embeddings(["a b", "c"], v)
    with pytest.raises(LmfixError, match="NaN"):
        Embeddings(["a", "b"], np.array([[0, 0, np.nan], [0, 0, 0]]))
    with pytest.raises(LmfixError, match="no words"):
        Embeddings([], np.zeros((0, 3)))
    assert Embeddings(["a", "b"], np.zeros((2, 3), np.float64)).vectors.dtype == np.float32


# ------------------------------------------------------------------------------ alignment


def test_align_matches_rows_by_word_not_index(emb):
    vocab = ["<unk>", "cat", "the"]
    matrix, cov = align_to_vocab(emb, vocab)
    for i, w in enumerate(vocab):
        np.testing.assert_array_equal(matrix[i], emb.vectors[WORDS.index(w)])
    assert cov == {"covered": 3, "missing": 0, "vocab_size": 3, "examples_missing": []}
    assert matrix.dtype == np.float32 and matrix.shape == (3, emb.dim)


def test_align_missing_words(emb):
    vocab = ["the", "dog", "cat", "bird"]
    with pytest.raises(LmfixError, match=r"2 of 4 .*'dog', 'bird'"):
        align_to_vocab(emb, vocab)
    zero, cov = align_to_vocab(emb, vocab, oov="zero")
    assert cov["missing"] == 2 and cov["examples_missing"] == ["dog", "bird"]
    assert (zero[1] == 0).all() and (zero[3] == 0).all()
    rand, _ = align_to_vocab(emb, vocab, oov="random", seed=4)
    again, _ = align_to_vocab(emb, vocab, oov="random", seed=4)
    np.testing.assert_array_equal(rand, again)
    mean_norm = np.linalg.norm(emb.vectors, axis=1).mean()
    np.testing.assert_allclose(np.linalg.norm(rand[[1, 3]], axis=1), mean_norm, rtol=1e-5)
    np.testing.assert_array_equal(rand[0], emb.vectors[0])
    with pytest.raises(LmfixError, match="OOV policy"):
        align_to_vocab(emb, vocab, oov="mean")
    assert coverage(emb, vocab)["covered"] == 2


def test_nearest_neighbors():
    e = Embeddings(["a", "b", "c", "d"],
                   np.array([[1, 0], [2, 0.1], [0, 1], [-1, 0]], np.float32), {})
    near = nearest_neighbors(e, "a", k=2)
    assert [w for w, _ in near] == ["b", "c"]
    assert near[0][1] == pytest.approx(2 / np.hypot(2, 0.1), rel=1e-6)
    assert [w for w, _ in nearest_neighbors(e, "a", k=10)] == ["b", "c", "d"]  # itself excluded
    with pytest.raises(LmfixError, match="not in the embeddings"):
        nearest_neighbors(e, "zebra")
    zero = Embeddings(["z", "a"], np.array([[0, 0], [1, 0]], np.float32))
    assert np.isfinite(nearest_neighbors(zero, "z")[0][1])


def test_sidecar_is_plain_json(emb, tmp_path):
    save_embeddings(emb, tmp_path / "e.bin")
    meta = json.loads((tmp_path / "e.bin.json").read_text())
    assert meta["method"] == "test" and meta["file"]["format"] == "binary"
    assert len(meta["file"]["sha256"]) == 64
