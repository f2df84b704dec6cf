"""What DistributedDataParallel sends per step, measured: two gloo processes on the CPU.

Two processes are spawned once for the module (DDP's first construction alone imports
torch._dynamo, seconds): each builds tiny LMs, runs every scenario below and writes what it
saw to JSON; the tests assert on that. Issue 16: DDP's default broadcast of every buffer sent
the whole fixed V×d embedding from rank 0 at every training forward.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmfix import distributed
from lmfix.distributed import CommMeter, Dist
from lmfix.errors import LmfixError
from lmfix.model import LM, ModelConfig

V, D, B, T = 50, 16, 4, 8  # vocabulary, emsize = nhid, global batch columns, bptt
CPU = torch.device("cpu")
WORLD = 2


def tiny(embedding: str, cosine: bool = False) -> LM:
    """The same model on every rank: parameters from seed 0, the fixed matrix from seed 1."""
    torch.manual_seed(0)
    fixed = torch.randn(V, D, generator=torch.Generator().manual_seed(1)) \
        if embedding == "fixed" else None
    mode, fix = ("vectors", "both") if embedding == "fixed" else (embedding, None)
    return LM(ModelConfig(vocab_size=V, emsize=D, nhid=D, dropout=0.0, embedding=mode,
                              fix=fix, cosine=cosine), fixed)


def trainable_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def train_steps(net, model, d: Dist, steps: int) -> tuple:
    """``steps`` SGD steps on this rank's columns, shaped like lmfix.train's loop: the per-step
    stop check (a 2-value all-reduce), forward through ``net``, fused loss, clip, step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1.0)
    gen = torch.Generator().manual_seed(100 + d.rank)  # different data per rank
    data = torch.randint(V, (T + 1, B // d.world_size), generator=gen)
    hidden = model.init_hidden(data.size(1))
    for _ in range(steps):
        distributed.all_reduce_sum([0.0, 0.0], d, CPU)
        opt.zero_grad(set_to_none=True)
        out, hidden = net(data[:-1], hidden)
        model.loss(out, data[1:].reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
        hidden = tuple(h.detach() for h in hidden)
        d.meter.step()
    return hidden


def _entry(rank, fn, store, out, args):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    d = Dist(rank, WORLD, rank)
    ok = False
    try:
        result = fn(d, *args)
        ok = True
    finally:
        distributed.shutdown(d, ok)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def spawn(tmp_path: Path, fn, *args) -> list:
    """Run ``fn(d, *args)`` on two gloo ranks; their JSON results, by rank."""
    mp.spawn(_entry, args=(fn, str(tmp_path / "store"), str(tmp_path), args), nprocs=WORLD)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _scenarios(d: Dist) -> dict:
    return {"measure": _measure(d), "grads": _grads(d), "broadcast": _zero_rank1_buffer(d),
            "check": _check(d)}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list:
    """Every scenario's results, by rank."""
    return spawn(tmp_path_factory.mktemp("ddp"), _scenarios)


# --- (a) measured bytes per step ----------------------------------------------------------

STEPS = 3


def _measure(d: Dist) -> dict:
    res = {}
    for emb in ("fixed", "learned"):
        dd = dataclasses.replace(d, meter=CommMeter())  # one meter per model
        model = tiny(emb)
        net = distributed.wrap_ddp(model, CPU, dd)
        hidden = train_steps(net, model, dd, STEPS)
        with dd.meter.outside_steps():  # evaluation / checkpoint traffic: not per step
            distributed.all_reduce_sum([1.0, 2.0, 3.0], dd, CPU)
            distributed.gather_columns(hidden[0], dd, 1)
            distributed.gather_objects({"rng": [1, 2, 3]}, dd)
        res[emb] = {**dd.meter.summary(), "trainable_bytes": trainable_bytes(model),
                    "formula": distributed.grad_bytes_per_step(model),
                    "hidden_bytes": hidden[0].numel() * hidden[0].element_size(),
                    "embedding_numel": model.encoder.weight.numel() if emb == "learned" else 0,
                    "scale_numel": model.scale.numel() if emb == "fixed" else 0,
                    "float_bytes": model.bias.element_size()}
    return res


def test_measured_bytes_per_step_are_the_trainable_parameters(ranks):
    assert ranks[0]["measure"] == ranks[1]["measure"]  # every rank hands in the same payload
    r = ranks[0]["measure"]
    for emb in ("fixed", "learned"):
        m = r[emb]
        assert m["comm_steps"] == STEPS
        # DDP's gradient buckets: each trainable parameter once, and nothing else
        assert m["comm_grad_bytes_per_step"] == m["trainable_bytes"] == m["formula"]
        # plus lmfix's per-step stop check, two float64s
        assert m["comm_bytes_in_steps"] == {"ddp_grad": STEPS * m["trainable_bytes"],
                                            "all_reduce_sum": STEPS * 16}
        assert m["comm_bytes_per_step"] == m["trainable_bytes"] + 16
        # evaluation/checkpoint collectives are kept apart (gather_objects: the buffer check
        # in wrap_ddp, then the one above)
        out = m["comm_bytes_outside_steps"]
        assert out["all_reduce_sum"] == 3 * 8 and out["gather_columns"] == m["hidden_bytes"]
        assert out["gather_objects"] > 0
    fixed, learned = r["fixed"], r["learned"]
    # the learned tied model also all-reduces its V×d embedding; the fixed one only its scale
    expected = (learned["embedding_numel"] - fixed["scale_numel"]) * fixed["float_bytes"]
    assert expected == (V * D - 1) * 4
    assert learned["comm_bytes_per_step"] - fixed["comm_bytes_per_step"] == expected


# --- averaging is DDP's default -----------------------------------------------------------

def _grads(d: Dist) -> dict:
    """One backward through plain DDP (no hook) and through wrap_ddp, on the same inputs."""
    out = {}
    grads = {}
    for way in ("default", "wrap_ddp"):
        model = tiny("fixed")
        net = torch.nn.parallel.DistributedDataParallel(model) if way == "default" \
            else distributed.wrap_ddp(model, CPU, dataclasses.replace(d, meter=CommMeter()))
        train_steps_no_opt(net, model, d)
        grads[way] = {n: p.grad.clone() for n, p in model.named_parameters()}
    # the mean of the two ranks' local gradients, by hand
    model = tiny("fixed")
    train_steps_no_opt(model, model, d)
    local = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    parts = [torch.empty_like(local) for _ in range(d.world_size)]
    dist.all_gather(parts, local)
    mean = sum(parts) / d.world_size
    mine = torch.cat([g.reshape(-1) for g in grads["wrap_ddp"].values()])
    out["identical_to_default"] = all(torch.equal(grads["default"][n], grads["wrap_ddp"][n])
                                      for n in grads["default"])
    out["max_diff_from_mean"] = (mine - mean).abs().max().item()
    out["max_grad"] = mean.abs().max().item()
    return out


def train_steps_no_opt(net, model, d: Dist) -> None:
    gen = torch.Generator().manual_seed(100 + d.rank)
    data = torch.randint(V, (T + 1, B // d.world_size), generator=gen)
    out, _ = net(data[:-1], model.init_hidden(data.size(1)))
    model.loss(out, data[1:].reshape(-1)).backward()


def test_the_counting_hook_averages_as_ddp_does(ranks):
    for r in (rank["grads"] for rank in ranks):
        assert r["identical_to_default"]
        assert r["max_grad"] > 0 and r["max_diff_from_mean"] <= 1e-6 * r["max_grad"]


# --- (b) regression: no buffer broadcast per step -----------------------------------------

def _zero_rank1_buffer(d: Dist) -> dict:
    res = {}
    for way in ("wrap_ddp", "old"):
        model = tiny("fixed")
        if way == "old":  # how lmfix.train built it before issue 16: DDP's defaults
            net = torch.nn.parallel.DistributedDataParallel(model)
        else:
            net = distributed.wrap_ddp(model, CPU, dataclasses.replace(d, meter=CommMeter()))
        if d.rank == 1:  # after the buffer check: a different but legal matrix on rank 1
            model.fixed_weight.zero_()
        train_steps(net, model, dataclasses.replace(d, meter=CommMeter()), 2)
        res[way] = {"zeros": bool((model.fixed_weight == 0).all()),
                    "digest": distributed._digest(model.fixed_weight)}
    return res


def test_ddp_no_longer_broadcasts_the_fixed_embedding(ranks):
    r0, r1 = (rank["broadcast"] for rank in ranks)
    # wrap_ddp: nothing overwrote rank 1's buffer, so nothing was broadcast
    assert r1["wrap_ddp"]["zeros"] and not r0["wrap_ddp"]["zeros"]
    # the old construction overwrote it with rank 0's every forward: this test catches the bug
    assert not r1["old"]["zeros"] and r1["old"]["digest"] == r0["old"]["digest"]


# --- (c) the buffer check -----------------------------------------------------------------

def _check(d: Dist) -> dict:
    def attempt(fn) -> str | None:
        try:
            fn()
        except LmfixError as e:
            return str(e)
        return None

    res = {"learned": attempt(lambda: distributed.check_same_buffers(tiny("learned"), d))}
    same = tiny("fixed", cosine=True)
    res["same"] = attempt(lambda: distributed.check_same_buffers(same, d))
    differ = tiny("fixed")
    if d.rank == 1:  # e.g. rank 1 read a different embedding file
        differ.fixed_weight[3, 5] += 1e-3
    res["differ"] = attempt(lambda: distributed.check_same_buffers(differ, d))
    res["wrap_ddp"] = attempt(lambda: distributed.wrap_ddp(differ, CPU, d))
    return res


def test_check_same_buffers(ranks):
    for r in (rank["check"] for rank in ranks):  # every rank decides alike: none is left waiting
        assert r["learned"] is None and r["same"] is None
        msg = r["differ"]
        assert msg is not None and r["wrap_ddp"] == msg
        assert "'fixed_weight'" in msg and "rank 0:" in msg and "rank 1:" in msg
        assert "embedding file that differs between machines" in msg


# --- one process --------------------------------------------------------------------------

@pytest.mark.parametrize("embedding,cosine,buffers", [
    ("learned", False, []), ("learned-untied", False, []),
    ("fixed", False, ["fixed_weight"]), ("fixed", True, ["fixed_weight"])])
def test_the_fixed_embedding_is_the_only_buffer(embedding, cosine, buffers):
    """What lmfix.distributed's docstring says about buffers, for every mode."""
    assert [n for n, _ in tiny(embedding, cosine).named_buffers()] == buffers


def test_meter_and_single_process():
    d = Dist()
    model = tiny("fixed")
    assert distributed.wrap_ddp(model, CPU, d) is model
    distributed.check_same_buffers(model, d)  # nothing to compare
    assert distributed.all_reduce_sum([1.0], d, CPU) == [1.0]
    assert d.meter.per_step() is None
    d.meter.step()
    assert d.meter.per_step() == 0.0  # one process moves nothing
    m = CommMeter()
    m.add(10, "x")
    with m.outside_steps():
        with m.outside_steps():
            m.add(5, "x")
        m.add(1, "y")
    m.add(2, "x")
    m.step(4)
    assert m.step_bytes == {"x": 12} and m.other_bytes == {"x": 5, "y": 1}
    assert m.per_step() == 3.0 and m.per_step("x") == 3.0 and m.per_step("y") == 0.0
    assert json.loads(json.dumps(m.summary()))["comm_bytes_per_step"] == 3.0
