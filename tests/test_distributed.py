"""Two-process DistributedDataParallel training on CPU (gloo), launched as users would."""

import json
import subprocess
import sys

import pytest

ARGS = ["--emsize", "16", "--batch-size", "4", "--bptt", "8", "--lr", "5", "--epochs", "2",
        "--dropout", "0", "--quiet", "--device", "cpu"]


def torchrun(nproc, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "lmfix", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("embedding,model", [("learned", "lstm"), ("random-orthogonal", "lstm"),
                                             ("random-orthogonal", "transformer")])
def test_two_processes_match_one(tiny_corpus_dir, tmp_path, embedding, model):
    common = ["train", "--data", tiny_corpus_dir, "--embedding", embedding, *ARGS,
              "--model", model]
    if model == "transformer":  # its own optimizer (AdamW), not the LSTM's SGD at lr 5
        common += ["--optimizer", "adamw", "--lr", "1e-3"]
    torchrun(2, *common, "--out", tmp_path / "two")
    r = subprocess.run([sys.executable, "-m", "lmfix", *map(str, common), "--out",
                        tmp_path / "one"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert len(set(two["param_checksums"])) == 1  # replicas agree exactly
    # Without dropout the only difference is float summation order (per-rank means averaged
    # by all-reduce instead of one mean over the batch), so perplexities agree to ~1e-5.
    assert two["val_ppl"] == pytest.approx(one["val_ppl"], rel=1e-3)
    assert two["test_ppl"] == pytest.approx(one["test_ppl"], rel=1e-3)
    assert two["eval_tokens"] == one["eval_tokens"]


def test_fixed_embedding_sends_v_times_d_fewer_bytes_measured(tiny_corpus_dir, tmp_path):
    """Measured per-step traffic (issue 16): a fixed run sends its trainable parameters'
    bytes (plus the 16-byte stop check and a little logging), never its V×d buffer; a learned
    run sends V×d×4 more."""
    runs = {}
    for emb in ("learned", "random-orthogonal"):
        torchrun(2, "train", "--data", tiny_corpus_dir, "--embedding", emb, *ARGS, "--epochs", 1,
                 "--out", tmp_path / emb)
        runs[emb] = json.loads((tmp_path / emb / "summary.json").read_text())
    learned, fixed = runs["learned"], runs["random-orthogonal"]
    V, d = fixed["vocab_size"], fixed["emsize"]
    for s in (learned, fixed):
        trainable_bytes = s["params"]["trainable"] * 4
        assert s["comm_grad_bytes_per_step"] == trainable_bytes == s["grad_bytes_per_step_formula"]
        assert trainable_bytes < s["comm_bytes_per_step"] <= trainable_bytes * 1.01
    assert learned["comm_bytes_per_step"] - fixed["comm_bytes_per_step"] == \
        pytest.approx((V * d - 1) * 4, abs=1)
