"""Flag ranges (issue 12) and the settings' one definition (lmfix.config, issue 21): argparse
types, check_config, --variants keys and the resume rule all come from TrainConfig's fields."""

import argparse
import dataclasses

import numpy as np
import pytest

from lmfix import config, flags
from lmfix.config import SETTINGS, TrainConfig, check_config
from lmfix.embeddings.methods import method_settings
from lmfix.errors import LmfixError
from lmfix.flags import EMBEDDING_FLAG_TYPES, float_in, int_in

RANGES = {name: s.range for name, s in SETTINGS.items() if s.range is not None}


def parse_error(type_, text, capsys, flag="--x"):
    """argparse's error line for ``flag text``."""
    p = argparse.ArgumentParser(prog="lmfix")
    p.add_argument(flag, type=type_)
    with pytest.raises(SystemExit) as info:
        p.parse_args([f"{flag}={text}"])  # "--x -1e-9" would read -1e-9 as an option
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("text,value", [("10", 10), ("1", 1), ("+3", 3), (" 7 ", 7),
                                        ("1_000", 1000), ("1e6", 10**6), ("2.0", 2)])
def test_positive_int_accepts(text, value):
    assert flags.positive_int(text) == value and type(flags.positive_int(text)) is int


@pytest.mark.parametrize("text", ["0", "-5", "2.5", "nan", "inf", "abc", "", "True", "1e-3",
                                  "1e999999", "0x10"])
def test_positive_int_rejects_with_the_value_and_range(text, capsys):
    line = parse_error(flags.positive_int, text, capsys, flag="--bptt")
    assert line == f"lmfix: error: argument --bptt: {text} is not an integer ≥ 1"


def test_the_issue_spelling_with_a_space(capsys):
    p = argparse.ArgumentParser(prog="lmfix")
    p.add_argument("--bptt", type=flags.positive_int)
    with pytest.raises(SystemExit):
        p.parse_args(["--bptt", "-5"])
    assert capsys.readouterr().err.strip().endswith("argument --bptt: -5 is not an integer ≥ 1")


@pytest.mark.parametrize("type_,text,allowed", [
    (flags.dropout, "2", "a finite number in [0, 1)"),
    (flags.dropout, "1", "a finite number in [0, 1)"),
    (flags.dropout, "-0.1", "a finite number in [0, 1)"),
    (flags.positive_finite_float, "0", "a finite number > 0"),
    (flags.positive_finite_float, "-1", "a finite number > 0"),
    (flags.positive_finite_float, "nan", "a finite number > 0"),
    (flags.positive_finite_float, "inf", "a finite number > 0"),
    (flags.nonneg_finite_float, "-1e-9", "a finite number ≥ 0"),
    (flags.nonneg_finite_float, "abc", "a finite number ≥ 0"),
    (flags.seed, "-1", "an integer in [0, 4294967295]"),
    (flags.seed, "4294967296", "an integer in [0, 4294967295]"),
    (flags.nonneg_int, "-1", "an integer ≥ 0"),
    (flags.finite_float, "-inf", "a finite number"),
])
def test_float_and_bounded_types_reject(type_, text, allowed, capsys):
    assert parse_error(type_, text, capsys).endswith(f"argument --x: {text} is not {allowed}")


def test_accepted_edges():
    assert flags.dropout("0") == 0.0 and flags.dropout("0.999") == 0.999
    assert flags.nonneg_finite_float("0") == 0.0
    assert flags.seed("0") == 0 and flags.seed("4294967295") == 2**32 - 1
    assert flags.finite_float("-3.5") == -3.5
    assert flags.nonneg_int("0") == 0


def test_seed_range_is_what_numpy_and_torch_accept():
    import torch
    np.random.RandomState(2**32 - 1)  # gensim seeds numpy's RandomState with --seed
    torch.manual_seed(2**32 - 1 + 7)  # train seeds torch with seed + rank
    with pytest.raises(ValueError):
        np.random.RandomState(2**32)


def test_factories_and_names():
    t = int_in(2, 5)
    assert t("2") == 2 and t("5") == 5
    with pytest.raises(argparse.ArgumentTypeError, match=r"^6 is not an integer in \[2, 5\]$"):
        t("6")
    f = float_in(0, 1, lo_open=True, hi_open=True)
    assert f.allowed == "a finite number in (0, 1)"
    with pytest.raises(argparse.ArgumentTypeError):
        f("0")
    assert float_in(None, 3).allowed == "a finite number ≤ 3"
    assert float_in(None, 3, hi_open=True).allowed == "a finite number < 3"
    method_ranges = [f.metadata["setting"].range for f, _ in method_settings().values()]
    for rng in list(RANGES.values()) + list(EMBEDDING_FLAG_TYPES.values()) + method_ranges:
        assert rng is None or rng.__name__.isidentifier()


def test_every_setting_has_a_flag_help_and_a_range_or_choices():
    """One definition per setting (issue 21): a field without its flag, its help, or what it
    allows (a range, choices, a bool, or the function that checks its free text) fails."""
    from lmfix.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices
    train_flags = {a.dest: a for a in sub["train"]._actions}
    run_flags = {a.dest for a in sub["run"]._actions}
    for f in dataclasses.fields(TrainConfig):
        s = SETTINGS.get(f.name)
        assert s is not None, f"{f.name}: no Setting"
        assert len(s.help) > 10, f"{f.name}: no help"
        assert f.name in train_flags, f"{f.name}: no lmfix train flag"
        assert s.help in train_flags[f.name].help
        if s.in_run:  # (lmfix run's own --data and --out say where, not how to train)
            assert f.name in run_flags, f"{f.name}: no lmfix run flag"
        kind = config._value_type(f.name)
        if kind in (int, float):
            assert s.range is not None, f"{f.name}: a number without a range"
        elif kind is str:
            assert s.choices or s.checked_by, f"{f.name}: text with neither choices nor a check"
        assert s.on_resume in ("change", "keep")
        assert config.setting_error(f.name, f.default) is None, f"{f.name}: default refused"
        if s.none_means is None:
            assert f.default is not None


def test_a_setting_without_a_range_fails_the_check(monkeypatch):
    """The test above catches a numeric setting added without its range."""
    monkeypatch.setitem(SETTINGS, "bptt", dataclasses.replace(SETTINGS["bptt"], range=None))
    with pytest.raises(AssertionError, match="a number without a range"):
        test_every_setting_has_a_flag_help_and_a_range_or_choices()


def test_variant_keys_and_the_resume_split_come_from_the_settings():
    assert config.VARIANT_KEYS == {"emsize": "emsize", "nhid": "nhid", "embedding-norm":
                                   "embedding_norm", "fix": "fix", "learn-top": "learn_top",
                                   "delta-rank": "delta_rank"}
    may_change = {n for n, s in SETTINGS.items() if s.on_resume == "change"}
    assert may_change == {"data", "epochs", "device", "max_minutes", "tf32", "log_interval",
                          "checkpoint_every"}
    saved = TrainConfig(epochs=1)
    assert config.resume_changes(saved, TrainConfig(epochs=3), "R") == {"epochs": (1, 3)}
    with pytest.raises(LmfixError, match=r"--emsize 32 \(the run has \(default\)\); --lr 1.0 "
                                         r"\(the run has 20.0\)"):
        config.resume_changes(saved, TrainConfig(epochs=3, emsize=32, lr=1.0), "R")


def test_build_method_settings_carry_their_ranges():
    from lmfix.embeddings.cli import _METHOD_SETTINGS
    ranges = {n: f.metadata["setting"].range for n, (f, _) in _METHOD_SETTINGS.items()}
    assert set(ranges) == {"window", "dyn", "sub", "cds", "neg", "eig", "w_plus_c", "sg",
                           "negative", "sample", "epochs", "workers"}
    assert {n for n, r in ranges.items() if r is None} == {"dyn", "w_plus_c"}  # booleans
    assert ranges["negative"]("1") == 1
    with pytest.raises(argparse.ArgumentTypeError):
        ranges["negative"]("0")  # hs=0 and negative=0: gensim trains nothing
    assert ranges["eig"]("-0.5") == -0.5
    # gensim keeps window in a C int (--window 1e20 hung it); 10^5 workers hung it, and so did
    # --negative 1e9 (10^9 samples per word)
    for dest, top in (("window", 2**31 - 1), ("negative", 1000), ("workers", 1024)):
        assert ranges[dest](str(top)) == top
        with pytest.raises(argparse.ArgumentTypeError, match=f"in \\[1, {top}\\]"):
            ranges[dest](str(top + 1))
    with pytest.raises(argparse.ArgumentTypeError):
        ranges["sub"]("1")
    assert set(EMBEDDING_FLAG_TYPES) == {"dim", "seed", "k"}


@pytest.mark.parametrize("field,value,message", [
    ("bptt", -5, "--bptt: -5 is not an integer ≥ 1"),
    ("batch_size", 0, "--batch-size: 0 is not an integer ≥ 1"),
    ("max_train_tokens", -5, "--max-train-tokens: -5 is not an integer ≥ 0"),
    ("lr", -1, "--lr: -1 is not a finite number in (0, 3.40282e+38]"),
    ("nlayers", 0, "--nlayers: 0 is not an integer ≥ 1"),
    ("dropout", 2, "--dropout: 2 is not a finite number in [0, 1)"),
    ("clip", -0.1, "--clip: -0.1 is not a finite number in [0, 3.40282e+38]"),
    ("lr", float("nan"), "--lr: nan is not a finite number in (0, 3.40282e+38]"),
    ("max_minutes", 10**400, "--max-minutes: 1000"),
    ("nlayers", True, "--nlayers: True is not an integer ≥ 1"),
    ("bptt", 2.5, "--bptt: 2.5 is not an integer ≥ 1"),
    ("epochs", "3", "--epochs: '3' is not an integer ≥ 1"),
    ("lr", None, "--lr: None is not a finite number in (0, 3.40282e+38]"),
    ("seed", 2**32, "--seed: 4294967296 is not an integer in [0, 4294967295]"),
])
def test_check_config_names_flag_value_and_range(field, value, message):
    with pytest.raises(LmfixError) as info:
        check_config(TrainConfig(**{field: value}))
    assert str(info.value).startswith(message)


def test_check_config_lists_every_problem_and_accepts_numpy_and_none():
    with pytest.raises(LmfixError) as info:
        check_config(TrainConfig(bptt=0, lr=0, dropout=1.0))
    assert str(info.value) == ("--dropout: 1.0 is not a finite number in [0, 1); "
                               "--lr: 0 is not a finite number in (0, 3.40282e+38]; "
                               "--bptt: 0 is not an integer ≥ 1")
    check_config(TrainConfig(bptt=np.int64(5), lr=np.float32(0.5), clip=0, emsize=None))
    with pytest.raises(LmfixError, match="--fix: 'sideways' is not one of both, input"):
        check_config(TrainConfig(fix="sideways"))


def test_clip_zero_means_no_clipping_and_is_documented():
    assert RANGES["clip"]("0") == 0.0
    assert "--clip 0`` means no clipping" in flags.__doc__
    assert "0: no clipping" in SETTINGS["clip"].help


def test_lr_beyond_float32_is_refused_at_parse_time():
    """Found by tests/test_flags_fuzz.py: --lr 3.4e38 passed as finite, then torch's SGD step
    failed with "value cannot be converted to type float without overflow"."""
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="3.40282e"):
        RANGES["lr"]("3.5e38")
    assert RANGES["lr"]("3.4e38") == 3.4e38


def test_zero_tokens_means_no_limit():
    """`lmfix run --preset quick --max-train-tokens 0` lifts the preset's 300k cap."""
    assert RANGES["max_train_tokens"]("0") == 0
    cfg = TrainConfig(max_train_tokens=0, max_eval_tokens=0)
    assert cfg.max_train_tokens is None and cfg.max_eval_tokens is None
