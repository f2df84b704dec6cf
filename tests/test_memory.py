"""Memory estimate (issue 12): exact parameter bytes, a clear refusal of absurd sizes."""

import pytest
import torch

from lmfix import memory
from lmfix.cli import main
from lmfix.errors import LmfixError
from lmfix.loss import default_chunk_rows
from lmfix.memory import available_bytes, check_fits, estimate_train_bytes, format_bytes
from lmfix.model import LM, ModelConfig, count_params


def real_model(V, d, h, nlayers, mode):
    fixed = torch.randn(V, d) if mode == "vectors" else None
    return LM(ModelConfig(vocab_size=V, emsize=d, nhid=h, nlayers=nlayers, embedding=mode,
                              fix="both" if mode == "vectors" else None), fixed)


@pytest.mark.parametrize("mode", ["learned", "learned-untied", "vectors"])
@pytest.mark.parametrize("V,d,h,nlayers", [(100, 10, 10, 1), (100, 10, 7, 2), (37, 6, 11, 3)])
def test_parameter_and_buffer_bytes_match_real_models(mode, V, d, h, nlayers):
    counts = count_params(real_model(V, d, h, nlayers, mode))
    est = estimate_train_bytes(V, d, h, nlayers, batch_size=2, bptt=3, embedding_mode=mode,
                               optimizer="sgd", fix="both" if mode == "vectors" else None)
    assert est["parameters"] == counts["trainable"] * 4
    assert est["fixed_buffer"] == counts["fixed"] * 4
    assert est["parameters"] + est["fixed_buffer"] == counts["total"] * 4
    assert est["gradients"] == est["parameters"] and est["optimizer"] == 0
    assert est["total"] == sum(est[k] for k in memory.PARTS)


def test_absurd_sizes_cost_no_time_or_memory():
    est = estimate_train_bytes(10**9, 10**9, 10**9, 10**12, 10**9, 10**9, "learned", "adam")
    assert est["total"] > 10**40
    with pytest.raises(LmfixError, match="needs about"):
        check_fits(est, "cpu", available=10**12)


def test_nhid_none_means_emsize():
    a = estimate_train_bytes(100, 10, None, 2, 4, 5, "learned", "sgd")
    assert a == estimate_train_bytes(100, 10, 10, 2, 4, 5, "learned", "sgd")


def test_optimizer_state_and_dtype():
    sgd = estimate_train_bytes(100, 10, 10, 1, 4, 5, "learned", "sgd")
    for name in ("adam", "adamw"):
        adam = estimate_train_bytes(100, 10, 10, 1, 4, 5, "learned", name)
        # exp_avg, exp_avg_sq and the foreach step's denominator
        assert adam["optimizer"] == 3 * adam["parameters"]
        assert adam["total"] - sgd["total"] == adam["optimizer"]
    double = estimate_train_bytes(100, 10, 10, 1, 4, 5, "learned", "sgd", dtype_bytes=8)
    assert double["parameters"] == 2 * sgd["parameters"]
    with pytest.raises(LmfixError, match="optimizer"):
        estimate_train_bytes(100, 10, 10, 1, 4, 5, "learned", "rmsprop")
    with pytest.raises(LmfixError, match="embedding mode"):
        estimate_train_bytes(100, 10, 10, 1, 4, 5, "frozen", "sgd")


def test_activations_and_loss_arithmetic():
    V, d, h, L, B, T = 33278, 200, 200, 2, 20, 35
    est = estimate_train_bytes(V, d, h, L, B, T, "learned", "sgd")
    rows = T * B
    assert est["activations"] == rows * (10 * L * h + 2 * d + 2 * h) * 4
    chunk = default_chunk_rows(rows, V, torch.float32, torch.device("cpu"))
    assert chunk == 350  # 48 MiB of logits per chunk on CPU: 700 rows in 2 chunks
    # one chunk of logits (gradient in place) + the V×d weight gradient saved in forward (the
    # scaled copy backward returns is the parameter's gradient) + the rows×d input gradient
    # and the rows losses
    assert est["loss"] == (chunk * V + V * d + rows * (d + 1)) * 4
    assert est["runtime"] == memory.RUNTIME_BYTES_CPU
    untied = estimate_train_bytes(V, d, h, L, B, T, "learned-untied", "sgd")
    assert untied["loss"] == (chunk * V + rows * (d + 1)) * 4  # freed before the input's
    fixed = estimate_train_bytes(V, d, h, L, B, T, "vectors", "sgd", fix="both")
    assert fixed["loss"] == (chunk * V + rows * (d + 1)) * 4  # a frozen weight has no gradient
    cuda = estimate_train_bytes(V, d, h, L, B, T, "learned", "sgd", device_type="cuda")
    gpu_chunk = default_chunk_rows(rows, V, torch.float32, torch.device("cuda"))  # 64 MiB budget
    assert cuda["loss"] == (gpu_chunk * V + V * d + rows * (d + 1)) * 4
    assert cuda["runtime"] == 0  # not measured on a GPU
    amp = estimate_train_bytes(V, d, h, L, B, T, "learned", "sgd", amp=True)
    assert amp["loss"] > rows * V * 4  # the plain form holds all logits
    wide_eval = estimate_train_bytes(V, d, h, L, 1, T, "learned", "sgd", eval_batch_size=100)
    eval_chunk = default_chunk_rows(T * 100, V, torch.float32, torch.device("cpu"))
    assert eval_chunk > T  # evaluation's chunk (≤ 48 MiB) is larger than training's 35 rows
    assert wide_eval["loss"] == (eval_chunk * V + V * d + T * (d + 1)) * 4


def test_wikitext2_default_model_fits_and_estimate_is_modest():
    est = estimate_train_bytes(33278, 200, None, 2, 20, 35, "learned", "sgd")
    assert 100e6 < est["total"] < 300e6
    check_fits(est, "cpu", available=10**9)


def test_absurd_emsize_is_refused_naming_estimate_and_available():
    # Issue 12: --emsize 10000000 on WikiText-2 died in the allocator asking for 1.3 TB.
    est = estimate_train_bytes(33278, 10_000_000, None, 2, 20, 35, "learned", "sgd")
    assert est["parameters"] > 33278 * 10_000_000 * 4  # > 1.3 TB in the embedding alone
    avail = available_bytes("cpu")
    with pytest.raises(LmfixError) as info:
        check_fits(est, "cpu")
    msg = str(info.value)
    assert f"needs about {format_bytes(est['total'])}" in msg
    assert f"parameters {format_bytes(est['parameters'])}" in msg
    if avail is not None:
        assert f"only {format_bytes(avail)} is available on cpu" in msg
    assert "--emsize" in msg
    tb = estimate_train_bytes(33278, 10_000_000, 1, 1, 20, 1, "vectors", "sgd", fix="both")
    with pytest.raises(LmfixError, match=r"fixed embedding 1\.3 TB.* 22\.1 GB is available on cpu"):
        check_fits(tb, "cpu", available=22_100_000_000)


def test_absurd_build_dim_is_refused_in_one_line(tiny_corpus_dir, tmp_path, capsys):
    # build-embeddings --dim 1e20 died in gensim / numpy ("Maximum allowed dimension exceeded").
    with pytest.raises(LmfixError, match=r"word2vec vectors of 33,278 words × 1,000,000 "
                                         r"dimensions need about 399\.3 GB but only 22\.1 GB"):
        memory.check_vectors_fit("word2vec", 33278, 1_000_000, available=22_100_000_000)
    memory.check_vectors_fit("pmi", 33278, 512, available=22_100_000_000)  # fits: no error
    for method in ("word2vec", "hadamard", "random-orthogonal"):
        out = tmp_path / f"{method}.bin"
        assert main(["build-embeddings", "--method", method, "--dim", "99999999999999999999",
                     "--data", str(tiny_corpus_dir), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lmfix: error: "), err
        assert not out.exists()


def test_margin_and_unknown_memory(monkeypatch):
    est = {"parameters": 95, "total": 95}
    check_fits(est, "cpu", available=106)  # 95 ≤ 0.9 × 106
    with pytest.raises(LmfixError, match="95 B .*only 105 B"):
        check_fits(est, "cpu", available=105)
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    check_fits({"total": 10**30}, "cpu")  # unknown: no refusal


def test_available_bytes_cpu(tmp_path, monkeypatch):
    real = available_bytes("cpu")
    assert real is None or real > 0
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemFree: 10 kB\nMemAvailable:   50 kB\n")
    monkeypatch.setattr(memory, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(memory, "_CGROUP", str(tmp_path / "no-cgroup"))
    assert available_bytes("cpu") == 50 * 1024
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("40000\n")
    (cgroup / "memory.current").write_text("10000\n")
    monkeypatch.setattr(memory, "_CGROUP", str(cgroup))
    assert available_bytes("cpu") == 30000  # the container's limit is tighter
    (cgroup / "memory.max").write_text("max\n")
    assert available_bytes("cpu") == 50 * 1024
    monkeypatch.setattr(memory, "_MEMINFO", str(tmp_path / "missing"))
    fallback = available_bytes("cpu")
    assert fallback is None or fallback > 0  # sysconf's available pages
    assert available_bytes("meta") is None


def test_format_bytes():
    assert format_bytes(0) == "0 B" and format_bytes(999) == "999 B"
    assert format_bytes(1331120000000) == "1.3 TB"
    assert format_bytes(22_100_000_000) == "22.1 GB"
    assert format_bytes(10**20) == "100000.0 PB"


# issue 14: every split of given vectors (--fix) and the trainable parts of a fixed tied table
SPLITS = [("learned", None, 0, 0), ("learned-untied", None, 0, 0),
          ("vectors", "both", 0, 0), ("vectors", "input", 0, 0), ("vectors", "output", 0, 0),
          ("vectors", "none", 0, 0), ("vectors", "both", 5, 0), ("vectors", "both", 0, 3),
          ("vectors", "both", 4, 2)]


@pytest.mark.parametrize("mode,fix,top,rank", SPLITS)
@pytest.mark.parametrize("V,d,h,nlayers", [(100, 10, 10, 1), (37, 6, 11, 3)])
def test_every_split_counts_exactly_as_real_models(mode, fix, top, rank, V, d, h, nlayers):
    cfg = ModelConfig(vocab_size=V, emsize=d, nhid=h, nlayers=nlayers, embedding=mode, fix=fix,
                      learn_top=top, delta_rank=rank)
    model = LM(cfg, torch.randn(V, d) if mode == "vectors" else None,
                   torch.arange(top) if top else None)
    counts = count_params(model)
    assert memory.param_counts(V, d, h, nlayers, mode, fix, top, rank) == {
        "trainable": counts["trainable"], "fixed": counts["fixed"]}
    est = estimate_train_bytes(V, d, h, nlayers, 2, 3, mode, "adam", fix=fix, learn_top=top,
                               delta_rank=rank)
    assert est["parameters"] == counts["trainable"] * 4
    assert est["fixed_buffer"] == counts["fixed"] * 4
    assert est["optimizer"] == 3 * est["parameters"]


def test_loss_holds_a_weight_gradient_exactly_when_the_classifier_trains():
    V, d = 1000, 16
    base = estimate_train_bytes(V, d, d, 1, 4, 5, "vectors", "sgd", fix="both")
    for fix in ("output",):  # a bare fixed classifier: no V×d gradient
        assert estimate_train_bytes(V, d, d, 1, 4, 5, "vectors", "sgd", fix=fix)["loss"] == \
            base["loss"]
    for kw in ({"fix": "input"}, {"fix": "none"}):  # a learned classifier: its saved V×d
        assert estimate_train_bytes(V, d, d, 1, 4, 5, "vectors", "sgd", **kw)["loss"] == \
            base["loss"] + V * d * 4
    # trainable parts make the combined matrix trainable: two gradients and the matrix
    top = estimate_train_bytes(V, d, d, 1, 4, 5, "vectors", "sgd", fix="both", learn_top=10)
    assert top["loss"] == base["loss"] + 3 * V * d * 4
    with pytest.raises(LmfixError, match="fix"):
        memory.param_counts(V, d, d, 1, "learned", "input")


@pytest.mark.parametrize("embedding", ["hadamard", "random-orthogonal", "learned"])
def test_impossible_size_is_refused_before_a_basis_is_built(tiny_corpus_dir, tmp_path, capsys,
                                                            embedding):
    """`--embedding hadamard --emsize 10000000` built the V×d basis first and died in numpy's
    allocator with a traceback; the memory check now comes before it."""
    from lmfix.cli import main
    code = main(["train", "--data", str(tiny_corpus_dir), "--embedding", embedding,
                 "--emsize", "10000000", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lmfix: error: the model needs about") and \
        "Traceback" not in err


def test_the_token_ids_a_run_holds_are_counted(tiny_corpus_dir):
    """Issue 25: at WikiText-103 size the ids (mapped int32 + batchified copy) outweigh a
    d = 200 model's parameters; the estimate counts them, as the run caps them."""
    from lmfix.config import TrainConfig
    from lmfix.data import load_corpus
    from lmfix.train import tokens_used
    est = estimate_train_bytes(100, 10, 10, 1, 2, 3, "learned", "sgd", tokens=1000)
    assert est["data"] == 8000 and est["total"] == sum(est[k] for k in memory.PARTS)
    c = load_corpus(str(tiny_corpus_dir))
    whole = c.train.numel() + c.valid.numel() + c.test.numel()
    assert tokens_used(TrainConfig(data=str(tiny_corpus_dir)), c) == whole
    capped = TrainConfig(data=str(tiny_corpus_dir), max_train_tokens=100, max_eval_tokens=30)
    assert tokens_used(capped, c) == 100 + 30 + 30


def test_a_fixed_table_counts_its_second_copy_while_the_model_is_built():
    """At V = 268k the fixed run's peak was the build (the table and the model's copy of it),
    not the steps: the estimate was 1.44x low for AdamW, d = 200."""
    V, d = 267_735, 200
    fixed = estimate_train_bytes(V, d, d, 2, 20, 35, "vectors", "adamw", fix="both")
    working = (fixed["gradients"] + fixed["optimizer"] + fixed["activations"]
               + fixed["loss"])
    assert fixed["build"] == V * d * 4 - working > 0
    small = estimate_train_bytes(1000, d, d, 2, 20, 35, "vectors", "adamw", fix="both")
    assert small["build"] == 0  # the steps' working memory covers it
    assert estimate_train_bytes(V, d, d, 2, 20, 35, "learned", "adamw")["build"] == 0
