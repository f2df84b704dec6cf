"""The tokenizer object (issue 11): one face for word-level and SentencePiece tokens."""

import pytest

from lmfix.data import load_corpus
from lmfix.errors import LmfixError
from lmfix.tokenizer import (TokenizerConfig, WordTokenizer, describe, label_of, load_tokenizer,
                             same_tokenizer)
from lmfix.vocab import EOS, UNK, Vocab


def test_word_tokenizer_face(tmp_path):
    tok = WordTokenizer(Vocab(["a", "b", EOS, UNK]))
    ids, n_unk = tok.encode([" a b \n", " \n", " b zz \n"])
    assert ids.tolist() == [0, 1, 2, 2, 1, 3, 2] and n_unk == 1
    assert tok.count_words(ids) == 7 and tok.label == "word" and tok.identity() == {"kind": "word"}
    assert tok.decode(ids) == f"a b\n\nb {UNK}"
    tok.save_beside(tmp_path / "emb.bin")
    assert not list(tmp_path.iterdir())  # a word-level embedding file needs nothing beside it
    sha = tok.save_into(tmp_path)
    again = load_tokenizer(tok.identity(), tmp_path, sha)
    assert again.vocab.words == tok.vocab.words


def test_sentencepiece_tokenizer_face(tiny_corpus_dir, tmp_path):
    cfg = TokenizerConfig("sentencepiece", "bpe", 280, str(tmp_path / "cache"))
    corpus = load_corpus(str(tiny_corpus_dir), cfg)
    tok = corpus.tokenizer
    assert tok.label == "sp-bpe-280" == label_of(tok.identity())
    lines = [" the cat sat . \n", " \n"]
    ids, n_unk = tok.encode(lines)
    assert n_unk == 0 and tok.count_words(ids) == 6 and tok.decode(ids) == "the cat sat .\n"
    tok.save_beside(tmp_path / "e.bin")
    assert (tmp_path / "e.bin.tokenizer.model").read_bytes() == tok.model_bytes
    sha = tok.save_into(tmp_path / "run")
    assert sha == tok.identity()["model_sha256"]
    again = load_tokenizer(tok.identity(), tmp_path / "run", sha)
    assert again.encode(lines)[0].tolist() == ids.tolist()
    assert same_tokenizer(again.identity(), tok.identity())
    assert not same_tokenizer(tok.identity(), {"kind": "word"})
    assert "SentencePiece" in describe(tok.identity()) and describe({"kind": "word"}) == "word-level tokens"


def test_bad_kind_and_missing_files_are_one_clear_error(tmp_path):
    with pytest.raises(LmfixError, match="--tokenizer"):
        TokenizerConfig("chars")
    with pytest.raises(LmfixError, match="vocab.txt: cannot read"):
        load_tokenizer({"kind": "word"}, tmp_path, "0" * 64)
    with pytest.raises(LmfixError, match="tokenizer.model: cannot read"):
        load_tokenizer({"kind": "sentencepiece"}, tmp_path, "0" * 64)
    (tmp_path / "tokenizer.model").write_bytes(b"junk")
    with pytest.raises(LmfixError, match="sha256 differs"):
        load_tokenizer({"kind": "sentencepiece"}, tmp_path, "0" * 64)
