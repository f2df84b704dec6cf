"""Property test (issue 22): any value for any flag of ``lmfix evaluate`` and ``lmfix generate``,
and any input file for ``evaluate --file``, through the real CLI on tiny runs trained once, ends
either in exit 0 with sensible output (evaluate --json: finite perplexities >= 1, tokens > 0;
generate: text on stdout, one block per sample) or in exit 2 with exactly one `lmfix: error:`
line on stderr. Never a traceback, never another exit code."""

import contextlib
import io
import json
import math
import time

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from conftest import TINY_TRAIN
from lmfix.cli import main
from lmfix.config import TrainConfig
from lmfix.flags import positive_int
from lmfix.inference import SAMPLES, WORDS
from lmfix.train import train

KINDS = ["word", "fixed", "transformer"]
TINY_RUN = dict(emsize=8, epochs=1, batch_size=4, bptt=8, lr=5.0)
NASTY = ["-5", "-1", "0", "1", "2", "3", "0.5", "1.5", "2.5", "1e3", "1e9", "1e15", "-1e-3",
         "1e-300", "5e-324", "1e308", "nan", "inf", "-inf", "abc", "", " ", "0x10", "1_000",
         "4294967295", "4294967296", "10000000", "10000001", "100000", "100001",
         "99999999999999999999", "1e999999999"]
values = st.one_of(st.sampled_from(NASTY), st.integers(-10**12, 10**12).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(max_size=12))
PROMPTS = ["", " ", "\n", "\n\n", "the cat", "zebra giraffe", "the zebra", "<unk>", "<eos>",
           "the\ncat\r\nsat", "\ufeffthe cat", "ünïcødé 猫 🐈", "-the", "--words=3",
           "the " * 300, "\x00", "\t the \t"]
prompts = st.one_of(st.sampled_from(PROMPTS), st.text(max_size=60))

# Generation streams token by token: a valid --words in the millions (or --samples in the
# thousands) would be correct but take minutes, and what matters here is that no value gives a
# traceback and that out-of-range ones are refused. Examples above these caps are skipped only
# when the flag would accept them.
WORDS_CAP, SAMPLES_CAP = 2000, 64
BASE_GENERATE = {"--words": "5", "--seed": "1", "--samples": "1", "--device": "cpu"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A word-level learned LSTM run, a fixed (random-orthogonal) one and a Transformer one,
    trained once; the Transformer generates through its bounded key/value cache, rebuilt each
    time a text outgrows bptt (8) tokens."""
    root = tmp_path_factory.mktemp("inference_fuzz")
    data = root / "tiny"
    data.mkdir()
    (data / "train.txt").write_text(TINY_TRAIN * 40)
    (data / "valid.txt").write_text(" the cat sat on the log . \n the bird ran . \n" * 20)
    (data / "test.txt").write_text(" a dog sat on the mat . \n \n" * 20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMFIX_CACHE", str(root / "cache"))  # no embedding cache outside tmp
        out = {}
        for name, kw in {"word": {}, "fixed": {"embedding": "random-orthogonal"},
                         "transformer": {"model": "transformer"}}.items():
            train(TrainConfig(data=str(data), out=str(root / name), **TINY_RUN, **kw),
                  progress=False)
            out[name] = root / name
    out["root"] = root
    return out


def _call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _assert_clean_failure(code, out: str, err: str) -> None:
    assert code == 2, (code, err)
    # "\n" only: str.splitlines also breaks at \x1c-\x1e, \x85 and \u2028, which a terminal
    # or a log reader shows inside one line
    lines = [line for line in err.split("\n") if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lmfix: error:"), err
    assert "Traceback" not in err and "Traceback" not in out


def _skip_if_valid_and_slow(flag_type, value: str, cap: int) -> None:
    try:
        n = flag_type.parse(value)
    except ValueError:
        return  # refused: exactly the case worth running
    assume(n <= cap)


def _positive(value: str) -> bool:
    try:
        return positive_int.parse(value) > 0
    except ValueError:
        return False  # argparse refuses it before --split and --file are compared


def _argv(command: str, run, args: dict) -> list[str]:
    # "=": a value like "-5" or "--words=3" is not taken for a flag
    return [command, str(run), *(f"{k}={v}" for k, v in args.items())]


def _assert_sensible_report(out: str) -> None:
    report = json.loads(out)
    assert report["splits"]
    for name, r in report["splits"].items():
        assert r["tokens"] > 0, (name, r)
        assert r["ppl"] is not None and math.isfinite(r["ppl"]) and r["ppl"] >= 1, (name, r)
        for key in ("loss", "word_ppl", "bpc"):
            if r.get(key) is not None:
                assert math.isfinite(r[key]), (name, key, r)
        if r.get("word_ppl") is not None:
            assert r["word_ppl"] >= 1, (name, r)


GENERATE_FLAGS = ["--words", "--temperature", "--top-k", "--seed", "--samples", "--prompt"]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(KINDS), flag=st.sampled_from(GENERATE_FLAGS),
       value=values, prompt=prompts, data=st.data())
@example(kind="word", flag="--samples", value="0", prompt="the cat", data=None)
@example(kind="word", flag="--samples", value="nan", prompt="the cat", data=None)
@example(kind="word", flag="--words", value="10000001", prompt="", data=None)
@example(kind="word", flag="--temperature", value="5e-324", prompt="the cat", data=None)
@example(kind="fixed", flag="--top-k", value="99999999999999999999", prompt="", data=None)
@example(kind="word", flag="--seed", value="1\n2", prompt="the cat", data=None)
@example(kind="word", flag="--prompt", value="zebra\ngiraffe", prompt="", data=None)
def test_any_generate_flag_value_generates_or_fails_in_one_line(runs, kind, flag, value, prompt,
                                                                data):
    args = dict(BASE_GENERATE)
    if flag == "--prompt":
        args["--prompt"] = value if data is None else data.draw(prompts)
    else:
        args["--prompt"] = prompt
        args[flag] = value
    if flag == "--words":
        _skip_if_valid_and_slow(WORDS, value, WORDS_CAP)
    if flag == "--samples":
        _skip_if_valid_and_slow(SAMPLES, value, SAMPLES_CAP)
    if flag == "--seed" and data is not None and data.draw(st.booleans()):
        del args["--seed"]  # the random-seed path, which prints its seed to stderr
    code, out, err = _call(_argv("generate", runs[kind], args))
    event(f"exit {code}")  # --hypothesis-show-statistics: both outcomes are reached
    if code != 0:
        _assert_clean_failure(code, out, err)
        return
    assert "Traceback" not in err
    assert out.strip() or out.count("\n") > 1, (out, err)  # all-<eos> text is line breaks
    samples = SAMPLES.parse(args["--samples"])
    if samples > 1:
        assert [out.count(f"--- sample {i} ---") for i in range(1, samples + 1)] == \
            [1] * samples, out


EVALUATE_FLAGS = ["--split", "--max-eval-tokens", "--batch-size"]
SPLITS = ["valid", "test", "train", "all", "Test", "file", ""]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(KINDS), flag=st.sampled_from(EVALUATE_FLAGS),
       value=st.one_of(values, st.sampled_from(SPLITS)), as_json=st.booleans())
@example(kind="word", flag="--max-eval-tokens", value="1", as_json=True)
@example(kind="word", flag="--max-eval-tokens", value="2", as_json=True)
@example(kind="word", flag="--batch-size", value="99999999999999999999", as_json=True)
@example(kind="fixed", flag="--split", value="all", as_json=False)
@example(kind="word", flag="--max-eval-tokens", value="1\n2", as_json=True)
def test_any_evaluate_flag_value_evaluates_or_fails_in_one_line(runs, kind, flag, value,
                                                                as_json):
    args = {"--device": "cpu", flag: value}
    argv = _argv("evaluate", runs[kind], args) + (["--json"] if as_json else [])
    code, out, err = _call(argv)
    event(f"exit {code}")
    if code != 0:
        _assert_clean_failure(code, out, err)
        return
    assert "Traceback" not in err
    if as_json:
        _assert_sensible_report(out)
    else:
        assert "ppl" in out and "Traceback" not in out


# Text variants that broke line-based readers elsewhere, besides arbitrary bytes.
_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
file_bytes = st.one_of(
    st.binary(max_size=300),
    st.just(b""), st.just(b"\n \n\t\n   \n"), st.just(b"\xef\xbb\xbf"),
    st.just(b"\xef\xbb\xbfthe cat sat on the mat .\n" * 4),
    st.just(b"the cat sat on the mat .\r\n" * 4), st.just(b"the\rcat\rsat\ron\rthe\rmat\r" * 3),
    st.just(b"\xff\xfe not utf-8\n"), st.just("zebra giraffe okapi\n".encode() * 5),
    st.just("the cat".encode("utf-16")), st.just(b"the cat sat on the mat ." * 500),
    st.just(b"\x00" * 100), st.just(b"the\n"), st.just(b"the cat\n"),
    _texts.map(lambda s: s.encode("utf-8")),
    _texts.map(lambda s: ("\ufeff" + s).encode("utf-8")),
)
SPECIAL_PATHS = ["directory", "missing", "/dev/zero", "/dev/null"]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=st.one_of(file_bytes, st.sampled_from(SPECIAL_PATHS)),
       extra=st.one_of(st.just({}), st.dictionaries(
           st.sampled_from(["--max-eval-tokens", "--batch-size", "--split"]),
           st.sampled_from(["1", "2", "3", "7", "1000", "0", "-1", "nan", "test", "all"]),
           max_size=2)),
       kind=st.sampled_from(KINDS), as_json=st.booleans())
@example(content=b"", extra={}, kind="word", as_json=True)
@example(content="directory", extra={}, kind="word", as_json=True)
@example(content="missing", extra={}, kind="word", as_json=True)
@example(content=b"the cat sat on the mat .\n" * 4, extra={"--split": "test"}, kind="word",
         as_json=True)
def test_any_evaluate_file_evaluates_or_fails_in_one_line(runs, tmp_path_factory, content,
                                                          extra, kind, as_json):
    d = tmp_path_factory.mktemp("file")
    if content == "directory":
        path = str(d)
    elif content == "missing":
        path = str(d / "missing.txt")
    elif isinstance(content, str):
        path = content
    else:
        (d / "text.txt").write_bytes(content)
        path = str(d / "text.txt")
    args = {"--device": "cpu", "--file": path, **extra}
    argv = _argv("evaluate", runs[kind], args) + (["--json"] if as_json else [])
    start = time.monotonic()
    code, out, err = _call(argv)
    assert time.monotonic() - start < 30, argv  # /dev/zero: the line bound, not all memory
    event(f"exit {code}")
    if "--split" in extra:
        _assert_clean_failure(code, out, err)
        others = [v for k, v in extra.items() if k != "--split"]
        if extra["--split"] in ("test", "all") and all(_positive(v) for v in others):
            assert "--split and --file" in err, err
        return
    if code != 0:
        _assert_clean_failure(code, out, err)
        return
    assert content not in ("directory", "missing", "/dev/zero", "/dev/null", b"")
    assert "Traceback" not in err
    if as_json:
        _assert_sensible_report(out)
        assert list(json.loads(out)["splits"]) == ["file"]
    else:
        assert "ppl" in out and f"text: {path}" in out


def test_dev_zero_is_one_line_and_quick(runs):
    start = time.monotonic()
    code, out, err = _call(["evaluate", str(runs["word"]), "--file=/dev/zero", "--device=cpu",
                            "--json"])
    _assert_clean_failure(code, out, err)
    assert "longer than 10,000,000 characters" in err and not out
    assert time.monotonic() - start < 20
