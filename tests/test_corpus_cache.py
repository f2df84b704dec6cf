"""The streamed, cached corpus encoding (lmfix.corpus_cache, lmfix.word_ids, lmfix.textfile):
the same ids as the lines read whole, a cache reused when it is the corpus's and rebuilt when
it is not, and the training file's parts encoded side by side giving the serial ids."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmfix import corpus_cache, textfile, word_ids
from lmfix.data import load_corpus, open_directory, read_directory, tokenize
from lmfix.errors import LmfixError
from lmfix.tokenizer import TokenizerConfig
from lmfix.vocab import build_vocab

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("LMFIX_CACHE", str(root))
    return root / "corpus"


def _reference(directory):
    """The ids as lmfix made them before streaming: lines read whole, then encoded."""
    raw = read_directory(directory)
    return tokenize(raw, TokenizerConfig().fit(raw.lines["train"], raw.train_sha256))


def _same(a, b):
    assert a.vocab.words == b.vocab.words
    for s in ("train", "valid", "test"):
        assert torch.equal(a.split(s).long(), b.split(s).long()), s
    assert (a.unk_replaced, a.words, a.chars, a.train_sha256) == \
        (b.unk_replaced, b.words, b.chars, b.train_sha256)


def test_cached_ids_equal_the_lines_read_whole_and_are_reused(tiny_corpus_dir, cache):
    first = load_corpus(str(tiny_corpus_dir))
    _same(first, _reference(tiny_corpus_dir))
    assert first.unk_replaced["valid"] == 20  # "bird", absent from train
    (where,) = cache.iterdir()
    meta = json.loads((where / "meta.json").read_text())
    assert meta["splits"]["train"]["tokens"] == first.train.numel()
    mtime = (where / "train.ids").stat().st_mtime_ns
    again = load_corpus(str(tiny_corpus_dir))
    _same(again, first)
    assert (where / "train.ids").stat().st_mtime_ns == mtime  # read, not rewritten


def test_a_changed_corpus_gets_its_own_cache(tiny_corpus_dir, cache):
    load_corpus(str(tiny_corpus_dir))
    (tiny_corpus_dir / "train.txt").write_text((tiny_corpus_dir / "train.txt").read_text()
                                               + " a new line with bird \n")
    c = load_corpus(str(tiny_corpus_dir))
    assert "bird" in c.vocab.index and c.unk_replaced["valid"] == 0
    assert len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("damage", ["truncate", "foreign-ids", "foreign-meta", "bad-json",
                                    "vocab"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tiny_corpus_dir, cache, capsys, damage):
    good = _reference(tiny_corpus_dir)  # (a mapped corpus would see the file change)
    load_corpus(str(tiny_corpus_dir))
    (where,) = cache.iterdir()
    ids = where / "train.ids"
    if damage == "truncate":
        ids.write_bytes(ids.read_bytes()[:-8])
    elif damage == "foreign-ids":  # same size, other ids: caught by the checksum
        data = np.fromfile(ids, dtype="<i4")
        data[::7] = 0
        data.tofile(ids)
    elif damage == "foreign-meta":
        meta = json.loads((where / "meta.json").read_text())
        meta["key"] = "0" * 32
        (where / "meta.json").write_text(json.dumps(meta))
    elif damage == "bad-json":
        (where / "meta.json").write_text("{not json")
    else:
        (where / "vocab.txt").write_text("a\nb\n")
    capsys.readouterr()
    again = load_corpus(str(tiny_corpus_dir))
    err = capsys.readouterr().err
    assert "corpus cache" in err and "damaged" in err and "rebuilding" in err
    _same(again, good)
    load_corpus(str(tiny_corpus_dir))
    assert "damaged" not in capsys.readouterr().err  # rebuilt for good


def test_an_unwritable_cache_warns_and_encodes_in_memory(tiny_corpus_dir, tmp_path, monkeypatch,
                                                         capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LMFIX_CACHE", str(blocker))
    c = load_corpus(str(tiny_corpus_dir))
    assert "cannot write the corpus cache" in capsys.readouterr().err
    _same(c, _reference(tiny_corpus_dir))


def _write(path, text, newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_parts_encoded_side_by_side_give_the_serial_ids(tmp_path, monkeypatch, newline):
    """Words first seen in a later part must get their ids in file order; CRLF never cut."""
    rng = np.random.default_rng(0)
    lines = [" ".join(f"w{int(rng.zipf(1.3)) % 500}" for _ in range(rng.integers(0, 30)))
             for _ in range(3000)]
    d = tmp_path / "c"
    d.mkdir()
    _write(d / "train.txt", "\ufeff" + "\n".join(lines) + "\n", newline)
    for s in ("valid", "test"):
        _write(d / f"{s}.txt", "w1 w2 zzz\n", newline)
    monkeypatch.setattr(textfile, "CHUNK_CHARS", 997)  # many chunks, cut mid-line
    parts = textfile.file_parts(d / "train.txt", 4)
    assert len(parts) == 4 and parts[0].start == 0 and parts[-1].end == (d / "train.txt").stat().st_size
    index, done = word_ids.encode_parts(parts, tmp_path, workers=2)
    ids = np.concatenate([np.concatenate(list(word_ids.global_ids(p, index))) for p in done])
    vocab = build_vocab([t + "\n" for t in lines])
    assert list(index) == [w for w in vocab.words if w != "<unk>"]
    serial = [vocab.index[w] for t in lines for w in t.split() + ["<eos>"]]
    assert ids.tolist() == serial
    assert sum(p.chars for p in done) == sum(len(t.strip()) + 1 for t in lines)


def test_file_parts_never_cut_a_cr_only_file(tmp_path):
    p = tmp_path / "mac.txt"
    p.write_bytes(b"a b\rc d\r" * 1000)
    assert len(textfile.file_parts(p, 4)) == 1


def test_big_training_file_is_encoded_in_parallel_parts(tmp_path, cache, monkeypatch):
    """Through load_corpus: a file in several parts (the workers forked) equals one part."""
    d = tmp_path / "c"
    d.mkdir()
    rng = np.random.default_rng(1)
    text = "".join(" ".join(f"w{int(x)}" for x in rng.zipf(1.2, rng.integers(1, 40)) % 3000)
                   + " \n" for _ in range(4000))
    (d / "train.txt").write_text(text)
    (d / "valid.txt").write_text(text[:2000].rsplit("\n", 1)[0] + "\n")
    (d / "test.txt").write_text(text[:3000].rsplit("\n", 1)[0] + "\n")
    monkeypatch.setattr(word_ids, "default_workers", lambda: 3)
    calls = []
    real = word_ids.encode_parts
    monkeypatch.setattr(word_ids, "encode_parts",
                        lambda parts, scratch, workers: calls.append(len(parts)) or
                        real(parts, scratch, workers))
    _same(load_corpus(str(d)), _reference(d))
    assert calls == [3]


def test_empty_and_blank_splits_are_refused(tiny_corpus_dir, cache):
    (tiny_corpus_dir / "test.txt").write_text("")
    with pytest.raises(LmfixError, match="test split is empty"):
        load_corpus(str(tiny_corpus_dir))
    (tiny_corpus_dir / "test.txt").write_text(" a \n")
    (tiny_corpus_dir / "train.txt").write_text(" \n \n\n")
    with pytest.raises(LmfixError, match="nothing to learn"):
        load_corpus(str(tiny_corpus_dir))
    assert not any(p.name.endswith(tuple("0123456789abcdef")) and (p / "meta.json").exists()
                   for p in cache.iterdir() if not p.name.startswith("."))


def test_a_long_line_in_a_later_part_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(textfile, "MAX_LINE_CHARS", 50)
    monkeypatch.setattr(textfile, "CHUNK_CHARS", 16)
    p = tmp_path / "t.txt"
    p.write_text("a b\n" * 40 + "x" * 60 + "\n")
    parts = textfile.file_parts(p, 2)
    with pytest.raises(LmfixError, match="longer than 50 characters"):
        for part in parts:
            list(part.chunks())


def test_the_cache_directory_holds_no_corpus_text(tiny_corpus_dir, cache):
    load_corpus(str(tiny_corpus_dir))
    (where,) = cache.iterdir()
    assert sorted(p.name for p in where.iterdir()) == \
        ["meta.json", "test.ids", "train.ids", "valid.ids", "vocab.txt"]


def test_load_from_the_cache_in_a_fresh_process_maps_the_ids(tiny_corpus_dir, cache):
    load_corpus(str(tiny_corpus_dir))
    code = ("import numpy as np, torch\nfrom lmfix.data import load_corpus\n"
            f"c = load_corpus({str(tiny_corpus_dir)!r})\n"
            "assert c.train.dtype == torch.int32\n"
            "print(c.train.numel())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, cwd=REPO, check=True)
    assert int(out.stdout) == _reference(tiny_corpus_dir).train.numel()
    assert "warning" not in out.stderr


def test_cache_key_changes_with_the_tokenizer(tiny_corpus_dir, cache):
    src = open_directory(tiny_corpus_dir)
    word = corpus_cache.cache_key(src, TokenizerConfig())
    sp = corpus_cache.cache_key(src, TokenizerConfig("sentencepiece", "unigram", 100))
    sp2 = corpus_cache.cache_key(src, TokenizerConfig("sentencepiece", "unigram", 200))
    assert len({word, sp, sp2}) == 3


def test_chunk_lines_cut_only_at_newlines_and_round_trip():
    # str.splitlines would also cut at the form feed and U+2028 inside these lines
    lines = ["a \x0c b\n", "c\u2028d\n", "\n", "last"]
    chunk = "".join(lines)
    assert textfile.chunk_lines(chunk) == lines
    assert textfile.chunk_lines(textfile.lines_chunk(lines)) == lines[:-1] + ["last\n"]
    assert textfile.chunk_lines("") == []


def test_read_keeps_form_feeds_inside_lines(tmp_path):
    for s in ("train", "valid", "test"):
        (tmp_path / f"{s}.txt").write_text("x \x0c y\nz\n", encoding="utf-8")
    raw = read_directory(tmp_path)
    assert raw.lines["train"] == ["x \x0c y\n", "z\n"]


def _counting_digests(monkeypatch):
    calls = []
    real = corpus_cache.hashlib.file_digest

    def digest(f, name):
        calls.append(name)
        return real(f, name)
    monkeypatch.setattr(corpus_cache.hashlib, "file_digest", digest)
    return calls


def test_an_unchanged_file_is_hashed_once(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(corpus_cache, "_RACY_S", 0.0)
    calls = _counting_digests(monkeypatch)
    f = tmp_path / "t.txt"
    f.write_bytes(b"a b c\n")
    first = corpus_cache.file_sha256(f)
    assert corpus_cache.file_sha256(f) == first and len(calls) == 1
    f.write_bytes(b"a b d\n")  # same size, new bytes: its stat moved, so it is read again
    assert corpus_cache.file_sha256(f) != first and len(calls) == 2
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))  # ctime moves even so
    corpus_cache.file_sha256(f)
    assert len(calls) == 3


def test_a_just_written_file_is_not_remembered(tmp_path, cache, monkeypatch):
    calls = _counting_digests(monkeypatch)
    f = tmp_path / "t.txt"
    f.write_bytes(b"a b c\n")
    corpus_cache.file_sha256(f)
    corpus_cache.file_sha256(f)
    assert len(calls) == 2  # within _RACY_S of its change: a same-tick rewrite could hide


def test_a_foreign_ids_file_is_caught_even_once_remembered(tiny_corpus_dir, cache, monkeypatch,
                                                           capsys):
    monkeypatch.setattr(corpus_cache, "_RACY_S", 0.0)
    load_corpus(str(tiny_corpus_dir))
    load_corpus(str(tiny_corpus_dir))  # the ids' sha256 is remembered now
    (where,) = [p for p in cache.iterdir() if p.is_dir()]
    data = np.fromfile(where / "train.ids", dtype="<i4")
    data[::5] = 0
    data.tofile(where / "train.ids")
    capsys.readouterr()
    load_corpus(str(tiny_corpus_dir))
    assert "damaged" in capsys.readouterr().err


def _resident_kb(address: int) -> int:
    """Rss of the mapping holding ``address``, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "Rss:":
            return int(line.split()[1])
    raise AssertionError("no mapping holds the address")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists()
                    or tuple(map(int, os.uname().release.split(".")[:2])) < (5, 4),
                    reason="needs Linux ≥ 5.4 (MADV_PAGEOUT) and /proc")
def test_release_pages_gives_a_mapped_split_back_and_keeps_its_ids(tmp_path):
    """PMI's counting left the 103M-token ids resident (0.42 GB of its peak); released, the
    pages leave the process, and the ids read back the same, a written page included."""
    path = tmp_path / "train.ids"
    want = np.arange(8 << 20, dtype=np.int32)  # 32 MB
    want.tofile(path)
    ids = torch.from_numpy(np.memmap(path, dtype=np.int32, mode="c"))
    assert int(ids.sum()) == int(want.astype(np.int64).sum())
    address = ids.numpy().ctypes.data
    before = _resident_kb(address)
    assert before > 30_000
    ids[5] = -1  # a copy-on-write page: its value must survive
    corpus_cache.release_pages(ids)
    assert _resident_kb(address) < before // 4
    want[5] = -1
    assert np.array_equal(ids.numpy(), want)
