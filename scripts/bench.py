#!/usr/bin/env python
"""Training and evaluation speed of lmfix's variants against the PyTorch example's algorithm.

The reference is written here, as pytorch/examples word_language_model does it: tied
nn.Embedding + nn.LSTM + nn.Linear decoder sharing the weight, dropout, log-softmax + NLL,
clip 0.25, manual SGD update. All variants run on the same WikiText-2 batches (random ids with
the same vocabulary size if the corpus is absent), interleaved window by window so machine
noise hits them alike; each figure is the median of the timed windows after a warm-up.

    python scripts/bench.py --dims 200 512 --windows 5
    python scripts/bench.py --json > bench.json
    python scripts/bench.py --memory      # also peak RSS of `lmfix train` at d = 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmfix.data import batchify, get_batch, load_corpus
from lmfix.model import LSTMLM, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT2 = ROOT.parent / "shared" / "data" / "wikitext-2"
V_WT2 = 33278


class ReferenceLM(nn.Module):
    """pytorch/examples word_language_model RNNModel (LSTM, tied)."""

    def __init__(self, ntoken: int, d: int, nlayers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, d)
        self.rnn = nn.LSTM(d, d, nlayers, dropout=dropout)
        self.decoder = nn.Linear(d, ntoken)
        self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        self.nlayers, self.d = nlayers, d

    def init_hidden(self, bsz):
        w = next(self.parameters())
        return (w.new_zeros(self.nlayers, bsz, self.d), w.new_zeros(self.nlayers, bsz, self.d))

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        decoded = self.decoder(self.drop(out)).view(-1, self.decoder.out_features)
        return F.log_softmax(decoded, dim=1), hidden


def reference_step(model, x, y, hidden, lr=20.0, clip=0.25):
    hidden = tuple(h.detach() for h in hidden)
    model.zero_grad()
    out, hidden = model(x, hidden)
    loss = F.nll_loss(out, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
    return hidden


def lmfix_step(model, opt, params, x, y, hidden, clip=0.25):
    """Exactly what lmfix.train's loop does per batch."""
    hidden = tuple(h.detach() for h in hidden)
    opt.zero_grad(set_to_none=True)
    out, hidden = model(x, hidden)
    model.loss(out, y).backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return hidden


@torch.no_grad()
def reference_eval(model, x, y, hidden):
    out, hidden = model(x, hidden)
    F.nll_loss(out, y, reduction="sum")
    return hidden


@torch.no_grad()
def lmfix_eval(model, x, y, hidden):
    out, hidden = model(x, hidden)
    model.loss(out, y, reduction="sum")
    return hidden


def make_variants(V: int, d: int, fixed_matrix: torch.Tensor) -> dict:
    torch.manual_seed(0)
    out = {"reference": ReferenceLM(V, d)}
    for mode in ("learned", "learned-untied", "fixed"):
        cfg = ModelConfig(vocab_size=V, emsize=d, nhid=d, embedding=mode)
        out[mode] = LSTMLM(cfg, fixed_matrix if mode == "fixed" else None)
    return out


def flops_per_token(mode: str, V: int, d: int, nlayers: int = 2, train: bool = True) -> float:
    """Matrix-product FLOPs per token: LSTM and output layer (see anchors.md)."""
    lstm = sum(2 * 4 * d * (d + d) for _ in range(nlayers))
    out = 2 * V * d
    if not train:
        return lstm + out
    w_grad = 0 if mode == "fixed" else out
    return 3 * lstm + out + out + w_grad  # forward, input gradient, weight gradient


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def time_windows(variants: dict, data, bptt: int, steps: int, windows: int, train: bool) -> dict:
    state = {}
    for name, m in variants.items():
        m.train(train)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=20.0) if name != "reference" else None
        state[name] = {"hidden": m.init_hidden(data.size(1)), "opt": opt, "params": params,
                       "pos": 0, "times": []}
    nb = (data.size(0) - 1) // bptt

    def window(name: str) -> float:
        s, m = state[name], variants[name]
        t = time.perf_counter()
        for _ in range(steps):
            x, y = get_batch(data, (s["pos"] % nb) * bptt, bptt)
            s["pos"] += 1
            if train and name == "reference":
                s["hidden"] = reference_step(m, x, y, s["hidden"])
            elif train:
                s["hidden"] = lmfix_step(m, s["opt"], s["params"], x, y, s["hidden"])
            elif name == "reference":
                s["hidden"] = reference_eval(m, x, y, s["hidden"])
            else:
                s["hidden"] = lmfix_eval(m, x, y, s["hidden"])
        return time.perf_counter() - t

    for name in variants:  # warm-up: allocator, thread pool, first-touch pages
        window(name)
    for _ in range(windows):
        for name in variants:
            state[name]["times"].append(window(name))
    tokens = steps * bptt * data.size(1)
    return {n: tokens / statistics.median(s["times"]) for n, s in state.items()}


# Runs `python -m lmfix ...` and reports the process's own peak (VmHWM). Not ru_maxrss from
# wait4: a forked child is charged the parent's resident pages until it execs, so it would
# report the benchmark's own size.
_PEAK_WRAPPER = """
import re, runpy, sys
sys.argv = ["lmfix", *sys.argv[1:]]
try:
    runpy.run_module("lmfix", run_name="__main__")
finally:
    hwm = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
    print(f"VmHWM_kB={hwm}", file=sys.stderr)
"""


def peak_rss_mb(embedding: str, data: Path) -> float:
    """Peak resident memory of a short `lmfix train` at d = 512 (its own process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", _PEAK_WRAPPER, "train", "--data", str(data), "--embedding",
               embedding, "--emsize", "512", "--out", f"{tmp}/run", "--max-train-tokens", "20000",
               "--max-eval-tokens", "2000", "--epochs", "1", "--quiet"]
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[3:])} failed: {r.stderr[-2000:]}")
        return int(r.stderr.rsplit("VmHWM_kB=", 1)[1].split()[0]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[200, 512])
    ap.add_argument("--windows", type=int, default=5, help="timed windows per variant (median)")
    ap.add_argument("--steps", type=int, default=4, help="batches per window")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS at d = 512")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args()
    have_data = (WIKITEXT2 / "train.txt").is_file()
    stream = load_corpus(str(WIKITEXT2)).train[:200_000] if have_data else \
        torch.randint(0, V_WT2, (200_000,), generator=torch.Generator().manual_seed(0))
    rate = matmul_rate()
    results = {"machine": {"threads": torch.get_num_threads(), "matmul_gflops": rate / 1e9,
                           "torch": torch.__version__, "data": "wikitext-2" if have_data else
                           "random ids"}, "dims": {}}
    for d in a.dims:
        fixed = torch.linalg.qr(torch.randn(V_WT2, d, generator=torch.Generator().manual_seed(0)))[0]
        variants = make_variants(V_WT2, d, fixed * (V_WT2 / d) ** 0.5)
        tr = time_windows(variants, batchify(stream, 20), 35, a.steps, a.windows, train=True)
        ev = time_windows(variants, batchify(stream, 10), 35, a.steps * 2, a.windows, train=False)
        rows = {}
        for name in variants:
            mode = "learned" if name == "reference" else name
            rows[name] = {
                "train_tok_s": tr[name], "train_ratio": tr[name] / tr["reference"],
                "train_flop_frac": tr[name] * flops_per_token(mode, V_WT2, d) / rate,
                "eval_tok_s": ev[name], "eval_ratio": ev[name] / ev["reference"],
                "eval_flop_frac": ev[name] * flops_per_token(mode, V_WT2, d, train=False) / rate}
        results["dims"][d] = rows
    if a.memory and have_data:
        untied, fixed_rss = peak_rss_mb("learned-untied", WIKITEXT2), \
            peak_rss_mb("random-orthogonal", WIKITEXT2)
        grad_opt = V_WT2 * 512 * 4 * 2 * 1  # untied: two V×d gradients; plain SGD has no state
        results["memory_d512"] = {"learned_untied_mb": untied, "fixed_mb": fixed_rss,
                                  "saved_mb": untied - fixed_rss,
                                  "vxd_grad_and_opt_state_mb": grad_opt / 2**20}
    if a.json:
        print(json.dumps(results, indent=2))
        return
    m = results["machine"]
    print(f"torch {m['torch']}, {m['threads']} threads, matmul {m['matmul_gflops']:.0f} GFLOP/s "
          f"(2048^3), data: {m['data']}, batch 20 x bptt 35 (eval batch 10)")
    for d, rows in results["dims"].items():
        print(f"\nd = {d}\n{'variant':16} {'train tok/s':>11} {'ratio':>6} {'%peak':>6} "
              f"{'eval tok/s':>11} {'ratio':>6} {'%peak':>6}")
        for name, r in rows.items():
            print(f"{name:16} {r['train_tok_s']:11.0f} {r['train_ratio']:6.2f} "
                  f"{100 * r['train_flop_frac']:5.0f}% {r['eval_tok_s']:11.0f} "
                  f"{r['eval_ratio']:6.2f} {100 * r['eval_flop_frac']:5.0f}%")
    if "memory_d512" in results:
        r = results["memory_d512"]
        print(f"\npeak RSS of lmfix train, d = 512: learned-untied {r['learned_untied_mb']:.0f} MB,"
              f" fixed {r['fixed_mb']:.0f} MB, saved {r['saved_mb']:.0f} MB "
              f"(V x d gradients + optimizer state: {r['vxd_grad_and_opt_state_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
