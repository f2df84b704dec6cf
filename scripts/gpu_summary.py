#!/usr/bin/env python
"""The summary block of scripts/gpu_check.sh: read what its steps left in OUT_DIR, print one
block, and write it to OUT_DIR/summary.txt (and the figures to OUT_DIR/summary.json).

    python scripts/gpu_summary.py OUT_DIR [--mode cuda|cpu-smoke] [--minutes M] [--wall-s S]

Only the standard library: it must work wherever the steps ran, whatever they left.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(path: Path) -> list[dict]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def steps(out: Path) -> list[dict]:
    rows = []
    try:
        lines = (out / "steps.tsv").read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append({"step": parts[0], "result": parts[1], "seconds": int(parts[2])})
    return rows


def tests_line(out: Path) -> str | None:
    """pytest's closing line from the log (e.g. "2 passed, 40 deselected in 3.1s")."""
    try:
        text = (out / "log.txt").read_text(errors="replace")
    except OSError:
        return None
    block = text.split("== tests", 1)[-1].split("\n== tests:", 1)[0] if "== tests" in text else ""
    lines = [ln.strip() for ln in block.splitlines()
             if any(w in ln for w in ("passed", "skipped", "failed", "deselected", "error"))]
    return lines[-1] if lines else None


def bench(out: Path) -> dict | None:
    return _read_json(out / "bench.json")


def epochs(out: Path) -> dict:
    res = {}
    for d in sorted(out.glob("epoch-*")):
        recs = [r for r in _records(d / "metrics.jsonl") if r.get("kind") == "epoch"]
        s = _read_json(d / "summary.json") or {}
        if not recs:
            res[d.name[6:]] = {"error": (_read_json(d / "status.json") or {}).get("error")
                               or "no epoch finished"}
            continue
        r = recs[-1]
        res[d.name[6:]] = {"epoch_seconds": r.get("seconds"), "train_tokens_per_s":
                           r.get("tokens_per_s"), "tokens": r.get("tokens_seen"),
                           "val_ppl": r.get("val_ppl"), "test_ppl": s.get("test_ppl"),
                           "device_name": s.get("device_name")}
    return res


def paper(out: Path) -> dict:
    p = out / "paper"
    runs = []
    for d in sorted((p / "runs").glob("*")) if (p / "runs").is_dir() else []:
        s = _read_json(d / "summary.json")
        st = _read_json(d / "status.json") or {}
        if s and st.get("status") == "finished":
            runs.append({"name": s.get("name"), "val_ppl": s.get("val_ppl"),
                         "test_ppl": s.get("test_ppl"), "epochs": s.get("epochs"),
                         "trainable": (s.get("params") or {}).get("trainable"),
                         "tokens_per_s": s.get("tokens_per_s"), "wall_s": s.get("wall_s")})
        else:
            runs.append({"name": d.name, "status": st.get("status") or "unknown",
                         "error": st.get("error")})
    report = p / "report.md"
    return {"runs": runs, "report": str(report) if report.is_file() else None}


def _f(x, spec=",.0f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def render(info: dict) -> str:
    L = [f"==== gpu_check summary ({info['mode']}) " + "=" * 40]
    if info.get("wall_s") is not None:
        L.append(f"total wall time: {info['wall_s'] // 60} min {info['wall_s'] % 60} s")
    L.append("steps:")
    for s in info["steps"]:
        L.append(f"  {s['step']:12} {s['result']:28} {s['seconds']:5d} s")
    if info.get("tests"):
        L.append(f"(a) CUDA tests: {info['tests']}")
    b = info.get("bench")
    if b:
        m = b.get("machine", {})
        L.append(f"(b) tokens/s, {m.get('device_name')}, torch {m.get('torch')} (ratio: "
                 "against the PyTorch example's algorithm in the same precision)")
        for prec, r in b.get("precisions", {}).items():
            if "skipped" in r:
                L.append(f"  {prec}: skipped: {r['skipped']}")
                continue
            for model, dims in r.get("models", {}).items():
                for d, rows in dims.items():
                    head = f"{prec} {model} d = {d}: "
                    L.append(f"  {head}{'variant':15} {'train tok/s':>12} {'ratio':>6} "
                             f"{'eval tok/s':>12} {'ratio':>6}")
                    for name, row in rows.items():
                        L.append(f"  {'':{len(head)}}{name:15} "
                                 f"{_f(row['train_tok_s']):>12} {row['train_ratio']:6.2f} "
                                 f"{_f(row['eval_tok_s']):>12} {row['eval_ratio']:6.2f}")
    e = info.get("epochs") or {}
    if e:
        L.append("(c) one training epoch (lmfix train --epochs 1):")
        for prec, r in e.items():
            if "error" in r:
                L.append(f"  {prec:5} not finished: {r['error']}")
                continue
            L.append(f"  {prec:5} {_f(r['epoch_seconds'], '.1f')} s for {_f(r['tokens'])} "
                     f"tokens (with validation) | train {_f(r['train_tokens_per_s'])} tok/s | "
                     f"val ppl {_f(r['val_ppl'], '.2f')} | test ppl {_f(r['test_ppl'], '.2f')}")
    p = info.get("paper") or {}
    if p.get("runs"):
        L.append(f"(d) paper preset, all variants at once, --max-minutes {info.get('minutes')}:")
        for r in p["runs"]:
            if "status" in r:
                L.append(f"  {r['name']:18} NOT COMPLETE ({r['status']}): {r.get('error') or ''}")
            else:
                L.append(f"  {r['name']:18} val ppl {_f(r['val_ppl'], '9.2f')} | test ppl "
                         f"{_f(r['test_ppl'], '9.2f')} | epochs {r['epochs']} | "
                         f"{_f(r['tokens_per_s'])} tok/s | trainable {_f(r['trainable'])}")
        L.append(f"  report: {p.get('report') or 'not written'}")
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mode", default="cuda")
    ap.add_argument("--minutes", default=None)
    ap.add_argument("--wall-s", type=int, default=None)
    a = ap.parse_args()
    info = {"mode": a.mode, "wall_s": a.wall_s, "minutes": a.minutes, "steps": steps(a.out),
            "tests": tests_line(a.out), "bench": bench(a.out), "epochs": epochs(a.out),
            "paper": paper(a.out)}
    text = render(info)
    print(text)
    (a.out / "summary.txt").write_text(text + "\n")
    (a.out / "summary.json").write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
