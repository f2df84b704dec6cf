#!/usr/bin/env python
"""DDP step time and bytes per step for a fixed embedding: DDP's defaults vs lmfix.wrap_ddp.

Issue 16: DDP's default ``broadcast_buffers=True`` broadcasts every buffer, here the whole V×d
fixed embedding, from rank 0 at the start of every training forward. This times the two
constructions on the same model and batches, interleaved window by window so machine noise
hits both alike:

- ``old``: ``DistributedDataParallel(model)``, as lmfix.train built it before (buffers
  broadcast every forward);
- ``new``: ``lmfix.distributed.wrap_ddp(model, device, d)`` (no per-step buffer broadcast).

Both get the same counting communication hook (wrap_ddp's: count the gradient bucket, then
PyTorch's default all-reduce), so they differ only in the buffer broadcast. Bytes are
*measured* payloads (what each rank hands to a collective, see lmfix.distributed): gradient
buckets by the hook, lmfix's per-step stop check by lmfix.distributed.all_reduce_sum, and for
``old`` the buffer broadcast by wrapping the DDP instance's ``_distributed_broadcast_coalesced``
(the method DDP's buffer sync calls; if a PyTorch version lacks it, the broadcast is not
counted and the script says so).

    torchrun --standalone --nproc-per-node 2 scripts/bench_ddp_comm.py \\
        --data ../shared/data/wikitext-2 --emsize 200

The global batch (``--batch-size``, default 20) is split across the ranks; bptt 35, SGD lr 20,
clip 0.25, dropout 0.2, the fused loss (model.loss), as lmfix train's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
import torch.distributed as dist

from lmfix import distributed
from lmfix.data import batchify, get_batch
from lmfix.distributed import CommMeter
from lmfix.embeddings.bases import random_orthogonal
from lmfix.model import LM, ModelConfig

V_WT2 = 33278  # WikiText-2's vocabulary
MODES = ("old", "new")


def count_buffer_broadcasts(net, meter: CommMeter) -> bool:
    """Count what DDP's buffer sync hands to broadcast in ``meter``; False if not possible."""
    inner = getattr(net, "_distributed_broadcast_coalesced", None)
    if inner is None:
        return False

    def counting(tensors, buffer_size, authoritative_rank=0):
        meter.add(sum(t.numel() * t.element_size() for t in tensors), "ddp_buffer_broadcast")
        return inner(tensors, buffer_size, authoritative_rank)

    net._distributed_broadcast_coalesced = counting  # this instance only
    return True


def build(mode: str, V: int, dim: int, fixed: torch.Tensor, device, d):
    torch.manual_seed(0)  # the same parameters in both modes
    model = LM(ModelConfig(vocab_size=V, emsize=dim, nhid=dim, embedding="vectors",
                               fix="both"), fixed).to(device)
    md = dataclasses.replace(d, meter=CommMeter())
    if mode == "new":
        net = distributed.wrap_ddp(model, device, md)
        counted = True
    else:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if device.type == "cuda" else None)
        # the same counting hook as wrap_ddp (PyTorch's default all-reduce after counting)
        net.register_comm_hook(distributed._HookState(md.meter),
                               distributed._counting_allreduce_hook)
        counted = count_buffer_broadcasts(net, md.meter)
    params = [p for p in model.parameters() if p.requires_grad]
    return {"model": model, "net": net, "d": md, "params": params, "counted": counted,
            "opt": torch.optim.SGD(params, lr=20.0), "hidden": None, "pos": 0, "times": []}


def run_steps(s: dict, data: torch.Tensor, bptt: int, steps: int, timed: bool, sync) -> None:
    model, net, d = s["model"], s["net"], s["d"]
    nb = (data.size(0) - 1) // bptt
    net.train()
    if s["hidden"] is None:
        s["hidden"] = model.init_hidden(data.size(1))
    for _ in range(steps):
        x, y = get_batch(data, (s["pos"] % nb) * bptt, bptt)
        s["pos"] += 1
        t0 = time.perf_counter()
        distributed.all_reduce_sum([0.0, 0.0], d, data.device)  # lmfix's per-step stop check
        hidden = tuple(h.detach() for h in s["hidden"])
        s["opt"].zero_grad(set_to_none=True)
        out, hidden = net(x, hidden)
        model.loss(out, y).backward()
        torch.nn.utils.clip_grad_norm_(s["params"], 0.25)
        s["opt"].step()
        sync()
        s["hidden"] = hidden
        if timed:
            s["times"].append(time.perf_counter() - t0)
            d.meter.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", help="a WikiText-style corpus directory (else random ids, V=33278)")
    ap.add_argument("--emsize", type=int, default=200)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per mode")
    ap.add_argument("--windows", type=int, default=8, help="interleaved windows (steps split)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    ap.add_argument("--batch-size", type=int, default=20, help="global, split across ranks")
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    a = ap.parse_args()

    device = torch.device(a.device)
    d = distributed.setup(device)
    if not d.enabled:
        raise SystemExit("run under torchrun with 2 or more processes, e.g. "
                         "torchrun --standalone --nproc-per-node 2 scripts/bench_ddp_comm.py")
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rows = (a.warmup + a.steps) * a.bptt + 1
    if a.data:
        from lmfix.data import load_corpus
        corpus = load_corpus(a.data)
        V, ids, source = len(corpus.vocab), corpus.train, a.data
    else:
        V, source = V_WT2, f"random ids, V={V_WT2}"
        ids = torch.randint(0, V, (rows * a.batch_size,),
                            generator=torch.Generator().manual_seed(0))
    data = distributed.shard_columns(batchify(ids, a.batch_size), d)[:rows].to(device)
    fixed = torch.from_numpy(random_orthogonal(V, a.emsize, seed=0))

    state = {m: build(m, V, a.emsize, fixed, device, d) for m in MODES}
    for m in MODES:  # warm-up: its traffic is kept apart from the timed steps'
        with state[m]["d"].meter.outside_steps():
            run_steps(state[m], data, a.bptt, a.warmup, False, sync)
    per_window = [a.steps // a.windows + (w < a.steps % a.windows) for w in range(a.windows)]
    for w, n in enumerate(per_window):
        for m in (MODES if w % 2 == 0 else MODES[::-1]):  # alternate who goes first
            run_steps(state[m], data, a.bptt, n, True, sync)

    # the slowest rank's time per step (a DDP step waits for all of them)
    times = {m: [max(ts) for ts in zip(*distributed.gather_objects(state[m]["times"], d))]
             for m in MODES}
    model = state["new"]["model"]
    res = {"source": source, "vocab_size": V, "emsize": a.emsize, "world_size": d.world_size,
           "device": device.type, "batch_per_rank": data.size(1), "bptt": a.bptt,
           "timed_steps": a.steps, "windows": a.windows,
           "fixed_embedding_bytes": model.fixed_weight.numel() * model.fixed_weight.element_size(),
           "grad_bytes_per_step_formula": distributed.grad_bytes_per_step(model)}
    for m in MODES:
        meter = state[m]["d"].meter
        res[m] = {"median_step_s": statistics.median(times[m]),
                  "comm_bytes_per_step": meter.per_step(),
                  "by_kind_per_step": {k: v / meter.steps for k, v in meter.step_bytes.items()},
                  "broadcast_counted": state[m]["counted"]}
    res["old_over_new_step_time"] = res["old"]["median_step_s"] / res["new"]["median_step_s"]
    if d.is_main:
        print(f"{source}; fixed V={V} × d={a.emsize}; {d.world_size} ranks on {device.type}, "
              f"batch {a.batch_size} ({data.size(1)}/rank), bptt {a.bptt}; "
              f"{a.steps} timed steps per mode in {a.windows} windows")
        for m in MODES:
            r = res[m]
            kinds = ", ".join(f"{k} {v:,.0f}" for k, v in r["by_kind_per_step"].items())
            print(f"  {m}: median step {r['median_step_s'] * 1e3:8.1f} ms | "
                  f"{r['comm_bytes_per_step']:>13,.0f} B/step ({kinds})"
                  + ("" if r["broadcast_counted"] else " [buffer broadcast NOT counted]"))
        print(f"  old/new step time: {res['old_over_new_step_time']:.3f}; "
              f"formula grad bytes {res['grad_bytes_per_step_formula']:,}; "
              f"V×d×4 = {res['fixed_embedding_bytes']:,}")
        if a.json:
            print(json.dumps(res))
    distributed.shutdown(d)


if __name__ == "__main__":
    main()
