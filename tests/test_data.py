import pytest
import torch

from lmfix.data import batchify, get_batch, load_corpus, resolve_data_spec, sentences
from lmfix.errors import LmfixError
from lmfix.tokenizer import WordTokenizer
from lmfix.vocab import EOS, UNK, build_vocab


def test_wikitext2_counts_match_the_pytorch_example(wikitext2):
    c = load_corpus(str(wikitext2))
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (2088628, 217646, 245569)
    assert len(c.vocab) == 33278
    assert c.vocab.words[0] == EOS  # the first line of train.txt is blank
    assert c.unk_replaced == {"train": 0, "valid": 0, "test": 0}
    # ../shared/data/wikitext-2/SOURCE.md's published checksum of wiki.train.tokens
    assert c.train_sha256 == "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"


def test_tokenization_appends_eos_to_every_line_blank_included():
    lines = [" a b \n", " \n", " b c \n"]
    v = build_vocab(lines)
    ids, n_unk = WordTokenizer(v).encode(lines)
    assert [v.words[i] for i in ids] == ["a", "b", EOS, EOS, "b", "c", EOS]
    assert n_unk == 0 and UNK in v.index


def test_unseen_words_map_to_unk(tiny_corpus_dir):
    c = load_corpus(str(tiny_corpus_dir))
    assert "bird" not in c.vocab.index
    assert c.unk_replaced["valid"] == 20 and c.unk_replaced["test"] == 0
    assert (c.valid == c.vocab.index[UNK]).sum() == 20


def test_original_file_names_are_accepted(tmp_path, tiny_corpus_dir):
    d = tmp_path / "orig"
    d.mkdir()
    for s in ("train", "valid", "test"):
        (d / f"wiki.{s}.tokens").write_text((tiny_corpus_dir / f"{s}.txt").read_text())
    assert len(load_corpus(str(d)).vocab) == len(load_corpus(str(tiny_corpus_dir)).vocab)


def test_sentences_cut_after_eos(tiny_corpus_dir):
    c = load_corpus(str(tiny_corpus_dir))
    sents = sentences(c.train[:40], c.vocab)
    assert all(s[-1] == EOS for s in sents[:-1])
    assert sum(map(len, sents)) == 40


def test_batchify_layout_matches_the_example():
    data = torch.arange(26)
    b = batchify(data, 4)  # 26 // 4 = 6 rows; 2 tokens dropped
    assert b.shape == (6, 4)
    assert b[:, 1].tolist() == [6, 7, 8, 9, 10, 11]  # each column is a contiguous stretch
    x, y = get_batch(b, 0, 2)
    assert x.tolist() == [[0, 6, 12, 18], [1, 7, 13, 19]]
    assert y.tolist() == [1, 7, 13, 19, 2, 8, 14, 20]
    x, y = get_batch(b, 4, 35)  # the last chunk is shorter
    assert x.shape == (1, 4) and y.tolist() == [5, 11, 17, 23]


def test_data_spec_resolution(monkeypatch):
    monkeypatch.delenv("LMFIX_DATA", raising=False)
    assert resolve_data_spec(None) == "hub:wikitext-2-v1"
    monkeypatch.setenv("LMFIX_DATA", "/some/dir")
    assert resolve_data_spec(None) == "/some/dir"
    assert resolve_data_spec("hub:wikitext-103-v1") == "hub:wikitext-103-v1"


@pytest.mark.parametrize("case", ["missing", "file", "no_valid", "empty", "binary"])
def test_bad_data_gives_one_clear_error(tmp_path, tiny_corpus_dir, case):
    d = tiny_corpus_dir
    if case == "missing":
        d = tmp_path / "nope"
    elif case == "file":
        d = tmp_path / "afile"
        d.write_text("x")
    elif case == "no_valid":
        (d / "valid.txt").unlink()
    elif case == "empty":
        (d / "test.txt").write_text("")
    elif case == "binary":
        (d / "train.txt").write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(LmfixError):
        load_corpus(str(d))


def test_hub_offline_error_names_both_ways(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LmfixError, match="--data DIR") as e:
        load_corpus("hub:wikitext-2-v1")
    assert "hub:wikitext-2-v1" in str(e.value)


def test_hub_loader_reproduces_directory_counts(monkeypatch, tiny_corpus_dir):
    """The hub path must tokenize exactly like the directory path (lines in a text column)."""
    import datasets
    texts = {s: (tiny_corpus_dir / f).read_text().splitlines(keepends=True)
             for s, f in [("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")]}
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, cfg: {
        s: datasets.Dataset.from_dict({"text": t}) for s, t in texts.items()})
    hub, local = load_corpus("hub:wikitext-2-v1"), load_corpus(str(tiny_corpus_dir))
    assert hub.vocab.words == local.vocab.words
    assert torch.equal(hub.train, local.train) and torch.equal(hub.test, local.test)
