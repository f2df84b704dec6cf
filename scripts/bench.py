#!/usr/bin/env python
"""Training and evaluation speed of lmfix's variants against the PyTorch example's algorithm.

The reference is written here, as pytorch/examples word_language_model does it: tied
nn.Embedding + nn.LSTM + nn.Linear decoder sharing the weight, dropout, log-softmax + NLL,
clip 0.25, manual SGD update; with ``--model transformer`` its ``TransformerModel`` (read at
77f55b9): nn.TransformerEncoder layers (post-LayerNorm, ReLU, dropout 0.1 inside them),
embedding × √d + sinusoidal positions, the log(tril) causal mask, an untied nn.Linear decoder,
the same loss and update (the 6-layer decoder it builds and never calls is left out: it costs
memory, not time). lmfix's variants run its own Transformer at the same sizes (emsize = nhid
= d, 2 layers, 2 heads). All variants run on the same WikiText-2 batches (random ids with
the same vocabulary size if the corpus is absent), interleaved window by window so machine
noise hits them alike; each figure is the median of the timed windows after a warm-up.

    python scripts/bench.py --dims 200 512 --windows 5
    python scripts/bench.py --json > bench.json
    python scripts/bench.py --memory      # also peak RSS of `lmfix train` at d = 512
    python scripts/bench.py --model transformer --dims 200 512
"""

from __future__ import annotations

import argparse
import math
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
from lmfix.model import LM, ModelConfig

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


class ReferenceTransformer(nn.Module):
    """pytorch/examples word_language_model TransformerModel, its forward as written there."""

    def __init__(self, ntoken: int, d: int, nhead: int = 2, nlayers: int = 2,
                 dropout: float = 0.2, max_len: int = 5000):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, nhead, dim_feedforward=d)  # dropout 0.1 inside
        self.encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.drop = nn.Dropout(dropout)
        pe = torch.zeros(max_len, d)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(1))
        self.input_emb = nn.Embedding(ntoken, d)
        self.decoder = nn.Linear(d, ntoken)
        nn.init.uniform_(self.input_emb.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        self.d, self.mask = d, None

    def init_hidden(self, bsz):
        return ()

    def forward(self, x, hidden=()):
        if self.mask is None or self.mask.size(0) != len(x):
            self.mask = torch.log(torch.tril(torch.ones(len(x), len(x)))).to(x.device)
        src = self.drop(self.input_emb(x) * math.sqrt(self.d) + self.pe[: x.size(0)])
        out = self.decoder(self.encoder(src, mask=self.mask))
        return F.log_softmax(out, dim=-1).view(-1, out.size(-1)), hidden


def _autocast(x, amp: bool):
    """bfloat16 autocast around forward + loss, as lmfix.train does with --amp."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp)


def _sync(device) -> None:
    """Wait for queued GPU work, so a clock read after it counts the work, not the launches."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reference_step(model, x, y, hidden, lr=20.0, clip=0.25, amp=False):
    hidden = tuple(h.detach() for h in hidden)
    model.zero_grad()
    with _autocast(x, amp):
        out, hidden = model(x, hidden)
        loss = F.nll_loss(out, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
    return hidden


def lmfix_step(model, opt, params, x, y, hidden, clip=0.25, amp=False):
    """Exactly what lmfix.train's loop does per batch."""
    hidden = tuple(h.detach() for h in hidden)
    opt.zero_grad(set_to_none=True)
    with _autocast(x, amp):
        out, hidden = model(x, hidden)
        loss = model.loss(out, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return hidden


@torch.no_grad()
def reference_eval(model, x, y, hidden, amp=False):
    with _autocast(x, amp):
        out, hidden = model(x, hidden)
        F.nll_loss(out, y, reduction="sum")
    return hidden


@torch.no_grad()
def lmfix_eval(model, x, y, hidden, amp=False):
    with _autocast(x, amp):
        out, hidden = model(x, hidden)
        model.loss(out, y, reduction="sum")
    return hidden


def make_variants(V: int, d: int, fixed_matrix: torch.Tensor, model: str = "lstm") -> dict:
    torch.manual_seed(0)
    ref = ReferenceTransformer(V, d) if model == "transformer" else ReferenceLM(V, d)
    out = {"reference": ref}
    for name, mode, fix in (("learned", "learned", None), ("learned-untied", "learned-untied", None),
                            ("fixed", "vectors", "both")):
        cfg = ModelConfig(vocab_size=V, emsize=d, nhid=d, embedding=mode, fix=fix, model=model,
                          context=35)
        out[name] = LM(cfg, fixed_matrix if mode == "vectors" else None)
    return out


def flops_per_token(mode: str, V: int, d: int, nlayers: int = 2, train: bool = True,
                    model: str = "lstm", bptt: int = 35) -> float:
    """Matrix-product FLOPs per token: the sequence model and output layer. Forward: 2·4·d·2d
    per LSTM layer (a Transformer layer: 2·(4d² + 2d²) for q, k, v, out and the d-wide
    feed-forward, plus 2·2·T·d for attention over T = bptt) and 2·V·d for the output; training
    adds the core's backward (2×) and the output's input gradient, plus its weight gradient
    unless the weight is fixed."""
    per_layer = 2 * 6 * d * d + 4 * bptt * d if model == "transformer" else 2 * 4 * d * (d + d)
    lstm = per_layer * nlayers
    out = 2 * V * d
    if not train:
        return lstm + out
    w_grad = 0 if mode == "fixed" else out
    return 3 * lstm + out + out + w_grad  # forward, input gradient, weight gradient


def matmul_rate(n: int = 2048, reps: int = 5, device="cpu", dtype=torch.float32) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def time_windows(variants: dict, data, bptt: int, steps: int, windows: int, train: bool,
                 amp: bool = False) -> dict:
    """Tokens/s of each variant; models and ``data`` on the same device (CUDA is synced before
    each clock read)."""
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
        _sync(data.device)
        t = time.perf_counter()
        for _ in range(steps):
            x, y = get_batch(data, (s["pos"] % nb) * bptt, bptt)
            s["pos"] += 1
            if train and name == "reference":
                s["hidden"] = reference_step(m, x, y, s["hidden"], amp=amp)
            elif train:
                s["hidden"] = lmfix_step(m, s["opt"], s["params"], x, y, s["hidden"], amp=amp)
            elif name == "reference":
                s["hidden"] = reference_eval(m, x, y, s["hidden"], amp=amp)
            else:
                s["hidden"] = lmfix_eval(m, x, y, s["hidden"], amp=amp)
        _sync(data.device)
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


def bench_dims(dims, stream: torch.Tensor, V: int, steps: int, windows: int,
               device: str = "cpu", amp: bool = False, matmul_n: int = 2048,
               model: str = "lstm") -> tuple[float, dict]:
    """(matmul rate, {d: {variant: row}}) on ``device``; ``amp``: bfloat16 autocast (and a
    bfloat16 matmul rate). TF32 is whatever torch.backends says when this is called."""
    rate = matmul_rate(matmul_n, device=device, dtype=torch.bfloat16 if amp else torch.float32)
    out = {}
    for d in dims:
        fixed = torch.linalg.qr(torch.randn(V, d, generator=torch.Generator().manual_seed(0)))[0]
        variants = {k: m.to(device) for k, m in make_variants(V, d, fixed * (V / d) ** 0.5,
                                                               model).items()}
        tr = time_windows(variants, batchify(stream, 20).to(device), 35, steps, windows,
                          train=True, amp=amp)
        ev = time_windows(variants, batchify(stream, 10).to(device), 35, steps * 2, windows,
                          train=False, amp=amp)
        rows = {}
        for name in variants:
            mode = "learned" if name == "reference" else name
            rows[name] = {
                "train_tok_s": tr[name], "train_ratio": tr[name] / tr["reference"],
                "train_flop_frac": tr[name] * flops_per_token(mode, V, d, model=model) / rate,
                "eval_tok_s": ev[name], "eval_ratio": ev[name] / ev["reference"],
                "eval_flop_frac": ev[name] * flops_per_token(mode, V, d, train=False,
                                                             model=model) / rate}
        out[d] = rows
    return rate, out


def load_stream(data: Path) -> tuple[torch.Tensor, int, str]:
    """The first 200k training ids of ``data`` and its vocabulary size, else random ids."""
    if (data / "train.txt").is_file():
        corpus = load_corpus(str(data))
        return corpus.train[:200_000], len(corpus.vocab), corpus.name
    ids = torch.randint(0, V_WT2, (200_000,), generator=torch.Generator().manual_seed(0))
    return ids, V_WT2, "random ids"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[200, 512])
    ap.add_argument("--windows", type=int, default=5, help="timed windows per variant (median)")
    ap.add_argument("--steps", type=int, default=4, help="batches per window")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS at d = 512")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--data", type=Path, default=WIKITEXT2, help="corpus directory")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 in cuBLAS and cuDNN "
                    "(without it both are off: exact float32)")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast, as lmfix --amp")
    ap.add_argument("--model", choices=("lstm", "transformer"), default="lstm",
                    help="the example's LSTM (default) or its TransformerModel, against lmfix's")
    a = ap.parse_args()
    from lmfix.device import check_amp, set_tf32
    device = torch.device(a.device)
    set_tf32(device, a.tf32)
    if a.amp:
        try:
            check_amp(device)
        except Exception as e:  # LmfixError: this CPU has no bfloat16 LSTM kernels
            raise SystemExit(f"bench.py: {e}") from None
    stream, V, data_name = load_stream(a.data)
    have_data = data_name != "random ids"
    rate, dims = bench_dims(a.dims, stream, V, a.steps, a.windows, a.device, a.amp,
                            model=a.model)
    precision = "bf16" if a.amp else "tf32" if a.tf32 and device.type == "cuda" else "fp32"
    results = {"machine": {"threads": torch.get_num_threads(), "matmul_gflops": rate / 1e9,
                           "torch": torch.__version__, "data": data_name,
                           "device": str(device), "precision": precision, "model": a.model},
               "dims": dims}
    if a.memory and have_data:
        untied, fixed_rss = peak_rss_mb("learned-untied", a.data), \
            peak_rss_mb("random-orthogonal", a.data)
        grad_opt = V * 512 * 4 * 2 * 1  # untied: two V×d gradients; plain SGD has no state
        results["memory_d512"] = {"learned_untied_mb": untied, "fixed_mb": fixed_rss,
                                  "saved_mb": untied - fixed_rss,
                                  "vxd_grad_and_opt_state_mb": grad_opt / 2**20}
    if a.json:
        print(json.dumps(results, indent=2))
        return
    m = results["machine"]
    print(f"{m['model']}: torch {m['torch']}, {m['device']} {m['precision']}, {m['threads']} "
          f"threads, matmul {m['matmul_gflops']:.0f} GFLOP/s (2048^3), data: {m['data']}, "
          "batch 20 x bptt 35 (eval batch 10)")
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
