"""SentencePiece tokenization: lossless on WikiText, word counts recoverable, cached models."""

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmfix.subword as subword
from lmfix.data import SPLITS, RawText, count_words, load_corpus, read_text, tokenize
from lmfix.vocab import EOS, UNK
from lmfix.errors import LmfixError
from lmfix.subword import (SP_UNK, SubwordConfig, encode_lines, load_or_train, model_path,
                           train_sentencepiece, words_in_pieces)
from lmfix.tokenizer import TokenizerConfig

from conftest import TINY_TRAIN

TINY_VOCAB = 280  # the tiny corpus allows 278..282 (unigram): 256 bytes + specials + chars
WT2_TRAIN_LINES = 4000  # train on a slice: ~1 s for 2000 pieces; byte fallback covers the rest


def sp_config(model_type="unigram", vocab_size=TINY_VOCAB, model_dir=None) -> TokenizerConfig:
    return TokenizerConfig("sentencepiece", model_type, vocab_size, model_dir)


def fit_args(raw: RawText) -> tuple:
    return raw.lines["train"], raw.train_sha256


def tiny_raw(sha="tiny") -> RawText:
    lines = (TINY_TRAIN * 40).splitlines(keepends=True)
    return RawText("tiny", "test", {"train": lines, "valid": lines[:5], "test": lines[:5]}, sha)


@pytest.fixture(scope="module")
def _wt2_cache():
    return {}


@pytest.fixture
def wt2(wikitext2, _wt2_cache, tmp_path_factory):
    """WikiText-2 (train sliced), a 2000-piece unigram model trained on it, and its Corpus."""
    if not _wt2_cache:
        full = read_text(str(wikitext2))
        raw = RawText("wt2-slice", full.source,
                      {**full.lines, "train": full.lines["train"][:WT2_TRAIN_LINES]},
                      full.train_sha256 + f"[:{WT2_TRAIN_LINES}]")
        cfg = SubwordConfig(vocab_size=2000, model_dir=str(tmp_path_factory.mktemp("sp")))
        sp, _ = load_or_train(*fit_args(raw), cfg)
        _wt2_cache.update(full=full, raw=raw, cfg=cfg, sp=sp, corpus=tokenize(raw, sp_config(vocab_size=2000, model_dir=cfg.model_dir)
                                        .fit(*fit_args(raw))))
    return _wt2_cache


@pytest.fixture(scope="module")
def tiny_sp(tmp_path_factory):
    cfg = SubwordConfig(vocab_size=TINY_VOCAB, model_dir=str(tmp_path_factory.mktemp("tiny")))
    return load_or_train(*fit_args(tiny_raw()), cfg)[0]


def pieces(corpus, split):
    return [corpus.vocab.words[i] for i in corpus.split(split).tolist()]


def test_wikitext2_lines_round_trip(wt2):
    sp, lines = wt2["sp"], wt2["raw"].lines
    for s in SPLITS:
        expected = [" ".join(line.split()) for line in lines[s]]
        assert sp.decode(sp.encode(expected)) == expected


def test_wikitext2_stream_has_one_eos_per_line_and_decodes_to_the_lines(wt2):
    corpus, sp, raw = wt2["corpus"], wt2["sp"], wt2["raw"]
    eos = corpus.vocab.index[EOS]
    assert eos == sp.piece_to_id(EOS)
    for s in SPLITS:
        ids = corpus.split(s).tolist()
        assert ids.count(eos) == len(raw.lines[s]) and ids[-1] == eos
        assert corpus.vocab.index[SP_UNK] not in ids  # byte fallback: nothing is unknown
        decoded, cur = [], []
        for i in ids:
            if i == eos:
                decoded.append(sp.decode(cur))
                cur = []
            else:
                cur.append(i)
        assert decoded == [" ".join(line.split()) for line in raw.lines[s]]


def test_wikitext2_word_counts_recovered_from_pieces(wt2):
    corpus, raw = wt2["corpus"], wt2["raw"]
    for s in SPLITS:
        assert corpus.words[s] == count_words(raw.lines[s])
        assert words_in_pieces(pieces(corpus, s)) == corpus.words[s]
    assert corpus.words["valid"] == 217646 and corpus.words["test"] == 245569


@pytest.mark.slow
def test_wikitext2_full_train_split_word_count(wt2):
    sp, lines = wt2["sp"], wt2["full"].lines["train"]
    ids = encode_lines(sp, lines).tolist()
    assert words_in_pieces([sp.id_to_piece(i) for i in ids]) == count_words(lines) == 2088628


def test_unk_is_one_piece(wt2, tiny_sp):
    corpus, raw = wt2["corpus"], wt2["raw"]
    unk = corpus.vocab.index[UNK]
    assert corpus.vocab.words[unk] == UNK
    n_unk = sum(line.split().count(UNK) for line in raw.lines["valid"])
    assert n_unk > 0 and corpus.valid.tolist().count(unk) == n_unk
    for sp in (wt2["sp"], tiny_sp):
        got = sp.encode("the <unk> sat", out_type=str)
        assert got.count(UNK) == 1 and got[got.index(UNK) - 1] == "\u2581"
        assert sp.encode(UNK, out_type=str) == ["\u2581", UNK]


def test_corpus_metadata(wt2):
    corpus, cfg = wt2["corpus"], wt2["cfg"]
    assert len(corpus.vocab) == 2000 and corpus.vocab.words[0] == SP_UNK
    assert corpus.unk_replaced == {s: 0 for s in SPLITS}
    assert set(corpus.chars) == set(SPLITS) and corpus.chars["valid"] > corpus.words["valid"]
    tok = corpus.tokenizer.identity()
    assert {k: tok[k] for k in ("kind", "model_type", "vocab_size", "seed")} == {
        "kind": "sentencepiece", "model_type": "unigram", "vocab_size": 2000, "seed": 0}
    assert tok["model_path"] == str(model_path(wt2["raw"].train_sha256, cfg))
    with open(tok["model_path"], "rb") as f:
        assert tok["model_sha256"] == hashlib.sha256(f.read()).hexdigest()


# Words: plain text (any script), <unk> alone or glued, a whole-word literal <eos>.
_word = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"),
                          blacklist_characters="\u2581<"), min_size=1, max_size=6),
    st.just(UNK), st.just(EOS), st.just("x<unk>y"))
_line = st.lists(_word, max_size=8).flatmap(
    lambda ws: st.sampled_from([" ", "  ", "\t", " \u3000 "]).map(lambda sep: sep + sep.join(ws)))


@settings(max_examples=150, deadline=None)
@given(st.lists(_line, min_size=1, max_size=4))
def test_any_text_round_trips_and_keeps_its_word_count(tiny_sp, lines):
    ids = encode_lines(tiny_sp, lines).tolist()
    assert words_in_pieces([tiny_sp.id_to_piece(i) for i in ids]) == count_words(lines)
    for line in lines:
        assert tiny_sp.decode(tiny_sp.encode(" ".join(line.split()))) == " ".join(line.split())


def test_words_in_pieces_examples():
    assert words_in_pieces([]) == 0
    assert words_in_pieces([EOS, EOS]) == 2  # two blank lines
    assert words_in_pieces(["\u2581the", "\u2581", UNK, "\u2581ca", "t", "\u2581.", EOS]) == 5
    assert words_in_pieces(["\u2581", "<0xE2>", "<0x80>", "<0x93>", EOS]) == 2
    assert words_in_pieces(["\u2581a", "\u2581", EOS, "\u2581b", EOS]) == 4  # literal "<eos>"


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_training_is_deterministic(tmp_path, model_type):
    cfg = SubwordConfig(model_type=model_type, vocab_size=TINY_VOCAB)
    a = train_sentencepiece(tiny_raw().lines["train"], cfg, tmp_path / "a.model")
    b = train_sentencepiece(tiny_raw().lines["train"], cfg, tmp_path / "b.model")
    assert a.read_bytes() == b.read_bytes()


def test_large_corpora_train_on_a_seeded_sample_in_corpus_order(monkeypatch):
    lines = [f" w{i} \n" for i in range(100)] + [" \n"]
    assert subword.training_lines(lines, seed=0) == [f"w{i}" for i in range(100)]
    monkeypatch.setattr(subword, "MAX_TRAIN_LINES", 10)
    a, b = subword.training_lines(lines, seed=0), subword.training_lines(lines, seed=1)
    assert len(a) == 10 and a == subword.training_lines(lines, seed=0) and a != b
    assert a == sorted(a, key=lambda w: int(w[1:]))


def test_saved_model_is_reused(tmp_path, monkeypatch):
    cfg = SubwordConfig(vocab_size=TINY_VOCAB, model_dir=str(tmp_path))
    sp1, path = load_or_train(*fit_args(tiny_raw()), cfg)
    assert path.parent == tmp_path and path.name.startswith(f"sp-unigram-{TINY_VOCAB}-")
    mtime = path.stat().st_mtime_ns

    def no_training(*a, **k):
        raise AssertionError("retrained although a matching model was saved")

    monkeypatch.setattr(subword, "train_sentencepiece", no_training)
    sp2, path2 = load_or_train(*fit_args(tiny_raw()), cfg)
    assert path2 == path and path.stat().st_mtime_ns == mtime
    assert sp2.serialized_model_proto() == sp1.serialized_model_proto()


def test_unreadable_cached_model_is_retrained(tmp_path):
    cfg = SubwordConfig(vocab_size=TINY_VOCAB, model_dir=str(tmp_path))
    path = model_path(tiny_raw().train_sha256, cfg)
    path.write_bytes(b"not a model")
    sp, path2 = load_or_train(*fit_args(tiny_raw()), cfg)
    assert path2 == path and sp.get_piece_size() == TINY_VOCAB


def test_other_settings_or_text_give_another_model_path(tmp_path):
    base = SubwordConfig(model_dir=str(tmp_path))
    paths = {model_path(tiny_raw().train_sha256, base),
             model_path(tiny_raw().train_sha256, SubwordConfig(model_dir=str(tmp_path), model_type="bpe")),
             model_path(tiny_raw().train_sha256, SubwordConfig(model_dir=str(tmp_path), vocab_size=4000)),
             model_path(tiny_raw().train_sha256, SubwordConfig(model_dir=str(tmp_path), seed=1)),
             model_path(tiny_raw(sha="other text").train_sha256, base)}
    assert len(paths) == 5 and all(p.parent == tmp_path for p in paths)
    assert model_path(tiny_raw().train_sha256, base) == model_path(tiny_raw().train_sha256, SubwordConfig(model_dir=str(tmp_path)))


def test_default_model_dir_respects_lmfix_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFIX_CACHE", str(tmp_path))
    assert model_path(tiny_raw().train_sha256, SubwordConfig()).parent == tmp_path / "sentencepiece"
    monkeypatch.delenv("LMFIX_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "lmfix" / "sentencepiece"
    assert model_path(tiny_raw().train_sha256, SubwordConfig()).parent == expected


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@pytest.mark.parametrize("vocab_size, message", [(10, "at least 278"), (5000, "at most")])
def test_vocab_size_that_does_not_fit_the_corpus(tmp_path, model_type, vocab_size, message):
    cfg = SubwordConfig(model_type=model_type, vocab_size=vocab_size, model_dir=str(tmp_path))
    with pytest.raises(LmfixError, match=message):
        load_or_train(*fit_args(tiny_raw()), cfg)
    assert os.listdir(tmp_path) == []  # nothing half-written is left to be reused


@pytest.mark.parametrize("cfg, message", [(SubwordConfig(model_type="char"), "model type"),
                                          (SubwordConfig(vocab_size=0), "vocab size")])
def test_bad_settings(tmp_path, cfg, message):
    cfg.model_dir = str(tmp_path)
    with pytest.raises(LmfixError, match=message):
        load_or_train(*fit_args(tiny_raw()), cfg)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_load_corpus_end_to_end_on_tiny_corpus(tiny_corpus_dir, tmp_path, model_type):
    corpus = load_corpus(str(tiny_corpus_dir), sp_config(model_type, model_dir=str(tmp_path)))
    words = load_corpus(str(tiny_corpus_dir))
    assert EOS in corpus.vocab.index and UNK in corpus.vocab.index
    assert corpus.words == words.words and corpus.chars == words.chars
    assert corpus.train_sha256 == words.train_sha256
    for s in SPLITS:
        assert words_in_pieces(pieces(corpus, s)) == words.words[s]
        n_lines = len((tiny_corpus_dir / f"{s}.txt").read_text().splitlines())
        assert corpus.split(s).tolist().count(corpus.vocab.index[EOS]) == n_lines
    assert corpus.tokenizer.identity()["model_type"] == model_type
    # "bird" is not in the training text: it comes out as pieces/bytes, not as an unknown.
    assert corpus.vocab.index[SP_UNK] not in corpus.valid.tolist()


def test_subword_training_reports_word_level_perplexity_two_ways(tiny_corpus_dir, tmp_path,
                                                                   monkeypatch):
    """Word-level ppl from the summary (NLL of the evaluated pieces over the words starting
    among them) against an independent computation: plain logits over the whole test stream in
    one column (eval batch 1), divided by the word-level count of the raw text."""
    import math

    import torch

    from lmfix.checkpoint import load_checkpoint
    from lmfix.data import count_words, read_text
    from lmfix.model import LM, ModelConfig
    from lmfix.report import write_report
    from lmfix.train import TrainConfig, train
    monkeypatch.setenv("LMFIX_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(data=str(tiny_corpus_dir), out=str(tmp_path / "sp"), emsize=16,
                      batch_size=4, bptt=8, epochs=2, lr=5.0, tokenizer="sentencepiece",
                      sp_vocab_size=280, dropout=0.0, eval_batch_size=1)
    s = train(cfg, progress=False)
    assert s["tokenizer"]["kind"] == "sentencepiece" and s["vocab_size"] == 280
    assert (tmp_path / "sp" / "tokenizer.model").is_file()
    corpus = load_corpus(str(tiny_corpus_dir), sp_config(vocab_size=280,
                                                         model_dir=str(tmp_path / "cache")))
    model = LM(ModelConfig(**s["config"]["model"]))
    model.load_state_dict(load_checkpoint(tmp_path / "sp" / "best.pt")["model"])
    model.eval()
    stream = corpus.test.long().view(-1, 1)  # (stored as int32 by the id cache)
    with torch.no_grad():  # one chunk: the hidden state is carried across bptt chunks anyway
        feats, _ = model(stream[:-1], model.init_hidden(1))
        nll = torch.nn.functional.cross_entropy(model.logits(feats), stream[1:].view(-1),
                                                reduction="sum").item()
    words = count_words(read_text(str(tiny_corpus_dir)).lines["test"])
    assert corpus.vocab.words[corpus.test[0]].startswith("▁")  # so the first word is unscored
    assert s["test_word_ppl"] == pytest.approx(math.exp(nll / (words - 1)), rel=1e-4)
    assert s["test_word_ppl"] > s["test_ppl"]  # more tokens than words
    word = train(TrainConfig(data=str(tiny_corpus_dir), out=str(tmp_path / "w"), emsize=16,
                             batch_size=4, bptt=8, epochs=1), progress=False)
    write_report([tmp_path / "sp", tmp_path / "w"], tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "sp-unigram-280" in md and "| word |" in md
    assert word["test_word_ppl"] == pytest.approx(word["test_ppl"])


def test_subword_embeddings_build_and_train_and_refuse_a_word_level_file(tiny_corpus_dir, tmp_path,
                                                                       monkeypatch, capsys):
    """build-embeddings --tokenizer sentencepiece, then train with it; a word-level file is
    refused for a subword run with one clear message."""
    from lmfix.cli import main
    monkeypatch.setenv("LMFIX_CACHE", str(tmp_path / "cache"))
    sp = ["--tokenizer", "sentencepiece", "--sp-vocab-size", "280"]
    common = ["--data", str(tiny_corpus_dir), "--quiet"]
    assert main(["build-embeddings", "--method", "pmi", "--dim", "8", *common, *sp,
                 "--out", str(tmp_path / "sp.bin")]) == 0
    assert main(["build-embeddings", "--method", "pmi", "--dim", "8", *common,
                 "--out", str(tmp_path / "word.bin")]) == 0
    # byte-fallback pieces never seen in training have no vector: filled at random
    train = ["train", *common, *sp, "--epochs", "1", "--batch-size", "4", "--bptt", "8",
             "--oov", "random"]
    assert (tmp_path / "sp.bin.tokenizer.model").is_file()
    assert not (tmp_path / "word.bin.tokenizer.model").exists()
    assert main([*train, "--embedding", str(tmp_path / "sp.bin"), "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main([*train, "--embedding", str(tmp_path / "word.bin"), "--out",
                 str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "word-level tokens" in err and "Traceback" not in err
