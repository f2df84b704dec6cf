"""lmfix evaluate / generate and the Python API (lmfix.load), on tiny runs trained once."""

import json
import math
import shutil
import subprocess
import sys

import pytest

import lmfix
from conftest import TINY_TRAIN
from lmfix.cli import main
from lmfix.errors import LmfixError
from lmfix.inference import LanguageModel
from lmfix.train import TrainConfig, train

TINY_RUN = dict(emsize=8, epochs=1, batch_size=4, bptt=8)


def write_tiny_corpus(d):
    """The tiny_corpus_dir fixture's corpus, for module-scoped runs."""
    d.mkdir()
    (d / "train.txt").write_text(TINY_TRAIN * 40)
    (d / "valid.txt").write_text(" the cat sat on the log . \n the bird ran . \n" * 20)
    (d / "test.txt").write_text(" a dog sat on the mat . \n \n" * 20)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A word-level learned run, a fixed (random-orthogonal) one and a SentencePiece one."""
    root = tmp_path_factory.mktemp("inference")
    data = write_tiny_corpus(root / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMFIX_CACHE", str(root / "cache"))
        out = {}
        for name, kw in {"word": {}, "fixed": {"embedding": "random-orthogonal"},
                         "sp": {"tokenizer": "sentencepiece", "sp_vocab_size": 280}}.items():
            train(TrainConfig(data=str(data), out=str(root / name), **TINY_RUN, **kw),
                  progress=False)
            out[name] = root / name
    out["data"], out["root"] = data, root
    return out


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's errors (lmfix.cli._Parser: one line, exit 2)
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def evaluate_json(capsys, *args) -> dict:
    code, out, err = cli(capsys, "evaluate", *args, "--json", "--device", "cpu")
    assert code == 0, err
    return json.loads(out)


def summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("kind", ["word", "sp"])
def test_evaluate_reproduces_the_summary(runs, capsys, kind):
    s = summary(runs[kind])
    for split, key in (("test", "test"), ("valid", "val")):
        r = evaluate_json(capsys, runs[kind], "--split", split)["splits"][split]
        assert r["ppl"] == pytest.approx(s[f"{key}_ppl"], rel=1e-4)
        assert r["word_ppl"] == pytest.approx(s[f"{key}_word_ppl"], rel=1e-4)
        assert r["bpc"] == pytest.approx(s[f"{key}_bpc"], rel=1e-4)
        assert r["tokens"] == s["eval_tokens"][split] and r["summary_ppl"] == s[f"{key}_ppl"]
    # the text form says the same, with the corpus check
    code, out, _ = cli(capsys, "evaluate", runs[kind], "--device", "cpu")
    assert code == 0 and f"{s['test_ppl']:.2f}" in out and "same training text" in out
    if kind == "word":
        assert "identical vocabulary" in out


def test_evaluate_all_other_data_and_unk_warning(runs, capsys, tmp_path):
    rep = evaluate_json(capsys, runs["word"], "--split", "all")
    assert list(rep["splits"]) == ["valid", "test", "train"]
    # "bird" (valid only) is not in the vocabulary: 20 of 260 tokens, > 5%: a warning
    valid = rep["splits"]["valid"]
    assert valid["unk"] == 20 and valid["unk_pct"] == pytest.approx(100 * 20 / 260)
    assert valid["warning"] and rep["warnings"] == [valid["warning"]]
    other = write_tiny_corpus(tmp_path / "other")
    (other / "train.txt").write_text(" the fox sat . \n" * 30)
    rep = evaluate_json(capsys, runs["word"], "--data", other, "--batch-size", 2,
                        "--max-eval-tokens", 40)
    c, r = rep["corpus"], rep["splits"]["test"]
    assert not c["same_train_text"] and not c["vocab_identical"] and c["vocab_missing"] == 1
    assert r["batch_size"] == 2 and r["tokens"] == 40 // 2 * 2 - 2 and r["summary_ppl"] is None
    code, out, _ = cli(capsys, "evaluate", runs["word"], "--data", other)
    assert code == 0 and "not the run's training text" in out and "fox" in out


def test_api_perplexity_equals_evaluate_file(runs, capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_bytes(("\ufeff" + "the cat sat on the zebra .\r\n the dog ran to the mat . \n" * 6)
                     .encode())
    m = lmfix.load(runs["word"], device="cpu")
    with open(text, encoding="utf-8") as f:
        api = m.perplexity(f)
    file = evaluate_json(capsys, runs["word"], "--file", text)["splits"]["file"]
    for key in ("ppl", "loss", "tokens", "words", "word_ppl", "bpc", "unk", "unk_pct"):
        assert api[key] == pytest.approx(file[key], rel=1e-9), key
    assert api["unk"] == 6 and api["warning"]  # "zebra": 6 of 96 tokens
    # a str and a list of lines are read the same way
    lines = text.read_text(encoding="utf-8-sig").splitlines()
    assert m.perplexity(text.read_text(encoding="utf-8"))["loss"] == pytest.approx(api["loss"])
    assert m.perplexity(lines)["loss"] == pytest.approx(api["loss"])
    assert m.perplexity(lines, batch_size=1, max_tokens=20)["tokens"] == 19


def test_load_api(runs):
    m = lmfix.load(str(runs["word"]))
    assert isinstance(m, LanguageModel) and isinstance(m, lmfix.LanguageModel)
    assert not m.model.training and str(m.device) == "cpu" and m.to("cpu") is m
    assert m.config["train"]["emsize"] == 8 and m.summary["test_ppl"] > 1
    assert m.vocab is m.tokenizer.vocab and "cat" in m.vocab.index
    assert "learned" in repr(m)


@pytest.mark.parametrize("kind", ["word", "sp"])
def test_generate_is_seeded(runs, kind):
    m = lmfix.load(runs[kind])
    a = m.generate("the cat", words=30, seed=1, samples=2)
    assert a == m.generate("the cat", words=30, seed=1, samples=2)
    assert a != m.generate("the cat", words=30, seed=2, samples=2)
    assert len(a) == 2 and all(t.startswith("the cat") for t in a)
    greedy = m.generate("the cat", words=10, top_k=1, seed=1)
    assert greedy == m.generate("the cat", words=10, top_k=1, seed=99)
    three = m.generate(words=5, seed=3, samples=3, temperature=0.5, top_k=3)
    assert len(three) == 3 and all(isinstance(t, str) for t in three)


def test_generate_word_level_length_and_unknown_words(runs, capsys):
    m = lmfix.load(runs["word"])
    # 12 tokens after the prompt (an <eos> is a line break)
    text = m.generate("the dog", words=12, seed=5)[0]
    assert len(text.split()) + text.count("\n") - 2 in (11, 12)  # a final <eos> leaves no "\n"
    ids, unknown = m.encode_prompt("the zebra sat\non")
    w = m.vocab.words
    assert [w[i] for i in ids] == ["<eos>", "the", "<unk>", "sat", "<eos>", "on"]
    assert unknown == ["zebra"]
    assert m.generate("the zebra", words=3, seed=1)[0].startswith("the <unk>")
    code, out, err = cli(capsys, "generate", runs["word"], "--prompt", "the zebra", "--words",
                         4, "--seed", 1, "--samples", 2, "--device", "cpu")
    assert code == 0 and "--- sample 1 ---" in out and "--- sample 2 ---" in out
    assert "zebra" in err and out.count("the <unk>") == 2


def test_subword_length_counts_words(runs):
    """Generation stops by the rule word-level perplexity counts by (one starts_word)."""
    from lmfix.subword import words_in_pieces
    m = lmfix.load(runs["sp"])
    ix = m.vocab.index
    # words: "th", <eos>, and a literal "<eos>" word ("▁" then <eos>: one word, not two)
    pieces = ["▁t", "h", "<eos>", "▁", "<eos>", "▁t", "h"]
    ids = [ix[p] for p in pieces]
    starts = [m.tokenizer.starts_word(prev, i) for prev, i in zip([-1] + ids, ids)]
    assert starts == [True, False, True, True, False, True, False]
    assert sum(starts) == words_in_pieces(pieces) == m.tokenizer.count_words(ids) == 4
    for n in (1, 5, 12):
        text = m.generate(words=n, seed=n)[0]
        assert len(text.split()) + text.count("\n") in (n - 1, n)  # a final <eos>: no "\n"


def test_embedding_is_keyed_vectors(runs):
    import numpy as np
    from gensim.models import KeyedVectors
    m = lmfix.load(runs["word"])
    kv = m.embedding()
    assert isinstance(kv, KeyedVectors) and kv.vector_size == 8
    assert kv.index_to_key == m.vocab.words
    np.testing.assert_array_equal(kv["cat"], m.model.encoder.weight[m.vocab.index["cat"]]
                                  .detach().numpy())
    assert len(kv.most_similar("cat", topn=3)) == 3
    fixed = lmfix.load(runs["fixed"])
    kv = fixed.embedding()
    assert len(kv) == len(fixed.vocab) and kv.vector_size == 8
    np.testing.assert_allclose(np.linalg.norm(kv.vectors, axis=1), 1, rtol=1e-5)  # unit rows
    np.testing.assert_array_equal(kv.vectors, fixed.model.fixed_weight.numpy())


@pytest.mark.parametrize("kind", ["word", "sp"])
def test_a_tokenizer_file_that_is_not_the_runs_is_refused(runs, capsys, tmp_path, kind):
    """Swapping two lines of vocab.txt gave test ppl 313.03 against the summary's 310.72 and
    generated ", , . . ." with no word (issue 22): config.json now records the file's sha256."""
    run = tmp_path / kind
    shutil.copytree(runs[kind], run)
    name = "vocab.txt" if kind == "word" else "tokenizer.model"
    config = json.loads((run / "config.json").read_text())
    assert config["tokenizer_sha256"] == __import__("hashlib").sha256(
        (run / name).read_bytes()).hexdigest()
    if kind == "word":
        words = (run / name).read_text(encoding="utf-8").splitlines()
        i, j = words.index("the"), words.index(".")
        words[i], words[j] = words[j], words[i]
        (run / name).write_text("".join(w + "\n" for w in words), encoding="utf-8")
    else:
        (run / name).write_bytes((run / name).read_bytes() + b"\0")
    for cmd in (("evaluate",), ("generate", "--seed", "1")):
        code, out, err = cli(capsys, cmd[0], run, *cmd[1:], "--device", "cpu")
        assert code == 2 and not out and err.count("\n") == 1
        assert f"{name} is not the file this run was trained with" in err
    (run / name).write_bytes(b"\xff\xfe not utf-8\n")
    with pytest.raises(LmfixError, match="sha256 differs"):
        lmfix.load(run)
    if kind == "word":  # the right bytes read back the same vocabulary
        shutil.copy(runs[kind] / name, run / name)
        assert lmfix.load(run).vocab.words == lmfix.load(runs[kind]).vocab.words


def test_bad_inputs_are_one_line_errors(runs, capsys, tmp_path):
    word = runs["word"]
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "notes.txt").write_text("hi")
    unfinished, nobest, corrupt = (tmp_path / n for n in ("unfinished", "nobest", "corrupt"))
    for d in (unfinished, nobest, corrupt):
        shutil.copytree(word, d)
    (unfinished / "status.json").write_text(json.dumps({"status": "running"}))
    (nobest / "best.pt").unlink()
    (corrupt / "best.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "empty.txt").write_text("")
    cases = {
        ("evaluate", tmp_path / "notarun"): "no config.json",
        ("evaluate", runs["root"]): "holds runs in subdirectories",
        ("evaluate", tmp_path / "missing"): "does not exist",
        ("evaluate", unfinished): "no finished run",
        ("evaluate", nobest): "no best.pt",
        ("generate", corrupt): "corrupt",
        ("generate", word, "--prompt", "zebra giraffe"): "every word of the prompt",
        ("evaluate", word, "--file", tmp_path / "empty.txt"): "empty",
        ("evaluate", word, "--file", tmp_path / "none.txt"): "cannot read",
        ("evaluate", word, "--split", "test", "--file", tmp_path / "empty.txt"): "--split and",
        ("generate", word, "--words", "0"): "--words: 0 is not an integer in [1, 10000000]",
        ("generate", word, "--words", "1e9"): "--words: 1e9 is not an integer in [1, 10000000]",
        ("generate", word, "--samples", "1e9"): "--samples: 1e9 is not an integer in [1, 100000]",
        ("generate", word, "--temperature", "-1"): "--temperature: -1 is not",
        ("generate", word, "--temperature", "0"): "--temperature: 0 is not",
        ("generate", word, "--samples", "2.5"): "--samples",
        ("evaluate", word, "--batch-size", "0"): "--batch-size",
        ("evaluate", word, "--max-eval-tokens", "-3"): "--max-eval-tokens",
    }
    for args, expected in cases.items():
        code, out, err = cli(capsys, *args, "--device", "cpu")
        assert code == 2, (args, out, err)
        assert err.startswith("lmfix: error:") and expected in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    m = lmfix.load(word)
    for kw in ({"words": 0}, {"temperature": -1.0}, {"temperature": float("nan")},
               {"samples": 0}, {"top_k": 0}):
        with pytest.raises(LmfixError):
            m.generate("the cat", **kw)
    with pytest.raises(LmfixError, match="too few"):
        m.perplexity("the cat")


def test_lazy_import_and_a_real_process(runs, tmp_path):
    """``import lmfix`` imports no torch; a bad input ends in one line, exit 2, no traceback."""
    (tmp_path / "empty.txt").write_text("\n \n")
    script = ("import sys, lmfix; print('torch' in sys.modules); from lmfix.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", script, "evaluate", str(runs["word"]), "--file",
                        str(tmp_path / "empty.txt")], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "False"
    assert p.returncode == 2 and p.stderr.startswith("lmfix: error:") and "empty" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", ["evaluate", "generate"])
def test_help_renders(cmd, capsys):
    code, out, _ = cli(capsys, cmd, "--help")
    assert code == 0 and "usage: lmfix" in out and "RUN_DIR" in out


def test_json_is_strict_even_for_infinite_values():
    from lmfix.fsutil import json_safe
    assert json_safe({"a": [math.inf, 1.0], "b": math.nan}) == {"a": [None, 1.0], "b": None}


@pytest.mark.parametrize("fix", ["none", "output"])
def test_embedding_of_partly_fixed_runs_is_the_input_table(runs, fix):
    """--fix none has no fixed buffer, and --fix output's fixed matrix is the classifier, not
    the input: embedding() read fixed_weight for every fixed mode (crash / wrong matrix)."""
    import numpy as np
    out = runs["root"] / f"fix-{fix}"
    train(TrainConfig(data=str(runs["data"]), out=str(out), embedding="random-orthogonal",
                      fix=fix, **TINY_RUN), progress=False)
    m = lmfix.load(out)
    np.testing.assert_array_equal(m.embedding().vectors,
                                  m.model.input_table.weight().detach().numpy())
