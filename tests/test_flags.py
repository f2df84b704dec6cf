"""Flag ranges (issue 12): argparse types and check_train_config share one definition."""

import argparse
import dataclasses

import numpy as np
import pytest

from lmfix import flags
from lmfix.errors import LmfixError
from lmfix.flags import (
    EMBEDDING_FLAG_TYPES,
    TRAIN_FLAG_TYPES,
    check_train_config,
    float_in,
    int_in,
)


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
    for rng in list(TRAIN_FLAG_TYPES.values()) + list(EMBEDDING_FLAG_TYPES.values()):
        assert rng.__name__.isidentifier()


@dataclasses.dataclass
class Cfg:  # the numeric fields of TrainConfig, with its defaults
    emsize: object = None
    nhid: object = None
    nlayers: object = 2
    dropout: object = 0.2
    lr: object = 20.0
    clip: object = 0.25
    epochs: object = 40
    batch_size: object = 20
    eval_batch_size: object = 10
    bptt: object = 35
    seed: object = 1111
    weight_decay: object = 0.0
    max_train_tokens: object = None
    max_eval_tokens: object = None
    max_minutes: object = None
    scale_init: object = None
    sp_vocab_size: object = 8000
    log_interval: object = 200
    checkpoint_every: object = 10.0
    learn_top: object = 0
    delta_rank: object = 0


def test_train_flag_types_cover_trainconfig_numbers():
    from lmfix.train import TrainConfig
    numeric = {f.name for f in dataclasses.fields(TrainConfig)
               if f.type in ("int", "float", "int | None", "float | None")}
    assert numeric == set(TRAIN_FLAG_TYPES) == {f.name for f in dataclasses.fields(Cfg)}
    check_train_config(TrainConfig())  # the defaults are valid
    check_train_config(Cfg())


def test_embedding_flag_types_cover_the_cli_dests():
    from lmfix.embeddings.cli import _METHOD_FLAGS
    typed = {k for k in _METHOD_FLAGS if k not in ("dyn", "w_plus_c", "sg")}  # flags, choices
    assert typed | {"dim", "seed", "k", "sp_vocab_size"} == set(EMBEDDING_FLAG_TYPES)
    assert EMBEDDING_FLAG_TYPES["negative"]("1") == 1
    with pytest.raises(argparse.ArgumentTypeError):
        EMBEDDING_FLAG_TYPES["negative"]("0")  # hs=0 and negative=0: gensim trains nothing
    assert EMBEDDING_FLAG_TYPES["eig"]("-0.5") == -0.5
    # gensim keeps window in a C int (--window 1e20 hung it); 10^5 workers hung it, and so did
    # --negative 1e9 (10^9 samples per word)
    for dest, top in (("window", 2**31 - 1), ("negative", 1000), ("workers", 1024)):
        assert EMBEDDING_FLAG_TYPES[dest](str(top)) == top
        with pytest.raises(argparse.ArgumentTypeError, match=f"in \\[1, {top}\\]"):
            EMBEDDING_FLAG_TYPES[dest](str(top + 1))
    with pytest.raises(argparse.ArgumentTypeError):
        EMBEDDING_FLAG_TYPES["sub"]("1")


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
def test_check_train_config_names_flag_value_and_range(field, value, message):
    with pytest.raises(LmfixError) as info:
        check_train_config(Cfg(**{field: value}))
    assert str(info.value).startswith(message)


def test_check_train_config_lists_every_problem_and_accepts_numpy_and_none():
    with pytest.raises(LmfixError) as info:
        check_train_config(Cfg(bptt=0, lr=0, dropout=1.0))
    assert str(info.value) == ("--dropout: 1.0 is not a finite number in [0, 1); "
                               "--lr: 0 is not a finite number in (0, 3.40282e+38]; "
                               "--bptt: 0 is not an integer ≥ 1")
    check_train_config(Cfg(bptt=np.int64(5), lr=np.float32(0.5), clip=0, emsize=None))

    class Partial:  # attributes it lacks are not checked
        bptt = 3
    check_train_config(Partial())


def test_clip_zero_means_no_clipping_and_is_documented():
    assert flags.TRAIN_FLAG_TYPES["clip"]("0") == 0.0
    assert "0 means NO clipping" in flags.__doc__


def test_lr_beyond_float32_is_refused_at_parse_time():
    """Found by tests/test_flags_fuzz.py: --lr 3.4e38 passed as finite, then torch's SGD step
    failed with "value cannot be converted to type float without overflow"."""
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="3.40282e"):
        flags.TRAIN_FLAG_TYPES["lr"]("3.5e38")
    assert flags.TRAIN_FLAG_TYPES["lr"]("3.4e38") == 3.4e38


def test_zero_tokens_means_no_limit():
    """`lmfix run --preset quick --max-train-tokens 0` lifts the preset's 300k cap."""
    from lmfix.train import TrainConfig
    assert flags.TRAIN_FLAG_TYPES["max_train_tokens"]("0") == 0
    cfg = TrainConfig(max_train_tokens=0, max_eval_tokens=0)
    assert cfg.max_train_tokens is None and cfg.max_eval_tokens is None
