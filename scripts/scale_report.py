"""scripts/bench_scale.py's report: its results.json as Markdown tables and a log-log plot
against V, and the names of what the grid measures (kept apart so that each reads in one
sitting). ``python scripts/bench_scale.py --report`` renders without measuring.
"""

from __future__ import annotations

import json
from pathlib import Path

EMBEDDINGS = ("learned", "learned-untied", "random-orthogonal")
FIXED = "random-orthogonal"
OPTIMIZERS = ("sgd", "adamw")
EVAL_TOKENS = 2000  # validation and test tokens of each training run
KINDS = {"load-cold": "load (cold)", "load-cached": "load (cached)", "pmi": "PMI d=200",
         "word2vec": "lmfix word2vec", "gensim": "gensim word2vec"}
BASELINE_CODE = "import torch, lmfix.train"  # the memory every training process starts from


def machine_line(m: dict) -> str:
    threads = ", ".join(f"{k}={v}" for k, v in (m.get("threads") or {}).items())
    mem = f", {fmt_bytes(m['memory_bytes'])} RAM" if m.get("memory_bytes") else ""
    return (f"{m.get('cpu', 'unknown CPU')} ({'avx512f' if m.get('avx512f') else 'no avx512f'}), "
            f"{m.get('cores')} cores{mem}, torch {m.get('torch')}, gensim {m.get('gensim')}"
            + (f", {threads}" if threads else ""))



def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s" if x < 100 else f"{x:,.0f} s"


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "—"
    sign, x = ("−" if x < 0 else ""), abs(x)
    if x >= 1e9:
        return f"{sign}{x / 1e9:.2f} GB"
    return f"{sign}{x / 1e6:.1f} MB" if x < 1e7 else f"{sign}{x / 1e6:.0f} MB"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}".replace("-", "−")


def fmt_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def _latest(entries) -> dict:
    """(kind, V, N, shown settings) → the newest entry; a failure only where nothing
    succeeded."""
    best: dict = {}
    for e in entries:
        s = e.get("settings") or {}
        shown = (s.get("d"), s.get("embedding"), s.get("optimizer")) if e["kind"] == "train" \
            else ()
        k = (e["kind"], e.get("vocab"), e.get("tokens"), shown)
        old = best.get(k)
        if old is None or (e["ok"], e.get("date", "")) > (old["ok"], old.get("date", "")):
            best[k] = e
    return best


def _train_rows(best: dict) -> dict:
    """(V, d, embedding, optimizer) → the train entry of V's smallest corpus."""
    rows: dict = {}
    for (kind, V, N, shown), e in best.items():
        if kind == "train":
            k = (V, *shown)
            if k not in rows or N < rows[k]["tokens"]:
                rows[k] = e
    return rows


def render(results: dict) -> str:
    entries = list(results.get("entries", {}).values())
    if not entries:
        return "No measurements yet.\n"
    best = _latest(entries)
    machines = {machine_line(e["machine"]) for e in entries if e.get("machine")}
    dates = sorted(e["date"][:10] for e in entries if e.get("date"))
    out = [f"Machine: {'; '.join(sorted(machines))}. Measured {dates[0]}"
           + (f" to {dates[-1]}" if dates[-1] != dates[0] else "") + ".", ""]

    def get(kind, V=None, N=None, shown=()):
        return best.get((kind, V, N, shown))

    def cell(e, what="wall"):
        if e is None:
            return "—"
        if not e["ok"]:
            return "failed"
        return fmt_s(e["wall_s"]) if what == "wall" else fmt_bytes(e["peak_bytes"])

    data = sorted({(V, N) for (kind, V, N, _) in best if kind in KINDS})
    if data:
        out += ["| V | tokens | cold s | cold peak | cached s | cached peak | PMI s | PMI peak "
                "| word2vec s | gensim s | ratio |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for V, N in data:
            cold, cached, pmi, w2v, gen = (get(k, V, N) for k in KINDS)
            ratio = f"{w2v['wall_s'] / gen['wall_s']:.2f}" if w2v and gen and w2v["ok"] \
                and gen["ok"] else "—"
            out.append(f"| {V:,} | {fmt_count(N)} | {cell(cold)} | {cell(cold, 'peak')} | "
                       f"{cell(cached)} | {cell(cached, 'peak')} | {cell(pmi)} | "
                       f"{cell(pmi, 'peak')} | {cell(w2v)} | {cell(gen)} | {ratio} |")
        out += ["", "Whole processes: wall time and peak memory (PSS) of the process tree, "
                "median of repeats. Cold: an empty LMFIX_CACHE; cached: the id cache filled. "
                "PMI and word2vec at d = 200 (word2vec: 1 epoch, CBOW), the cache filled; "
                "ratio: lmfix word2vec time / gensim's on the same sentences.", ""]
    rows = _train_rows(best)
    base = get("baseline")
    base_b = base["peak_bytes"] if base and base["ok"] else None
    if rows:
        out += ["| V | d | embedding | optimizer | tokens/s | peak | estimate | "
                "(peak − baseline) / estimate | fixed saving | formula saving | "
                "saving / formula |",
                "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for (V, d, emb, opt), e in sorted(rows.items(), key=lambda kv: (
                kv[0][0], kv[0][1], _order(EMBEDDINGS, kv[0][2]), _order(OPTIMIZERS, kv[0][3]))):
            saved = formula = ratio_s = "—"
            if not e["ok"]:
                out.append(f"| {V:,} | {d} | {emb} | {opt} | failed | failed |"
                           + " — |" * 5)
                continue
            est = e.get("estimate_bytes")
            ratio = fmt_ratio((e["peak_bytes"] - base_b) / est) if est and base_b is not None \
                else "—"
            learned = rows.get((V, d, "learned", opt))
            if emb == FIXED and learned and learned["ok"]:
                s = learned["peak_bytes"] - e["peak_bytes"]
                pct = f"{100 * s / learned['peak_bytes']:.0f}".replace("-", "−")
                saved = f"{fmt_bytes(s)} ({pct}%)"
                if learned.get("estimate_bytes") and est:
                    f = learned["estimate_bytes"] - est
                    formula = fmt_bytes(f)
                    ratio_s = fmt_ratio(s / f) if f else "—"
            tok = f"{e['tokens_per_s']:,.0f}" if e.get("tokens_per_s") else "—"
            out.append(f"| {V:,} | {d} | {emb} | {opt} | {tok} | {fmt_bytes(e['peak_bytes'])} | "
                       f"{fmt_bytes(est)} | {ratio} | {saved} | {formula} | {ratio_s} |")
        s = next(iter(rows.values())).get("settings", {})
        out += ["", f"`lmfix train`, 1 epoch of {s.get('train_tokens', 0):,} training tokens "
                f"(batch 20 × bptt 35, log every {s.get('log_interval')} steps), "
                f"{EVAL_TOKENS:,} validation and test tokens; emsize = nhid = d; SGD lr 20, "
                "AdamW lr 1e-3; each V on its smallest corpus. tokens/s: from the run's log, "
                "the first interval left out. Estimate: `lmfix.memory.estimate_train_bytes`. "
                f"Baseline (`python -c \"{BASELINE_CODE}\"`): {fmt_bytes(base_b)}. Fixed "
                f"saving: peak(learned) − peak({FIXED}), % of the learned peak, beside the "
                "estimates' difference.", ""]
    # every key whose last attempt failed, also where other settings filled the table's cell
    failed = [e for e in entries if not e["ok"]]
    if failed:
        out.append("Failed:")
        for e in failed:
            what = " ".join(str(x) for x in (e["kind"], e.get("vocab") or "", e.get("tokens") or "",
                                               json.dumps(e.get("settings") or {})) if x != "")
            out.append(f"- {what}: {e.get('error')}")
        out.append("")
    return "\n".join(out)


def _order(seq, x) -> int:
    return seq.index(x) if x in seq else len(seq)


def plot(results: dict, path: Path) -> bool:
    """Cost against V, log-log: times of the data steps, training peaks per embedding."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    # log axes label 3×10⁻¹ otherwise; plain numbers read better in a doc
    plain = FuncFormatter(lambda v, _: f"{v:,.6g}")
    some = FuncFormatter(lambda v, _: f"{v:,.6g}" if f"{v:e}"[0] in "25" else "")

    def style(ax) -> None:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(some)
        ax.tick_params(which="minor", labelsize=7)
        ax.grid(True, which="both", alpha=0.3)

    entries = [e for e in results.get("entries", {}).values() if e["ok"]]
    best = _latest(entries)
    rows = _train_rows(best)
    dims = sorted({d for (_, d, _, _) in rows})
    # alone (no training runs), the panel keeps its legend beside it and the title its width
    fig, axes = plt.subplots(1, 1 + len(dims), figsize=(6 * (1 + len(dims)) + (0 if dims else 3.5),
                                                        4.8), squeeze=False)
    ax = axes[0][0]
    drawn = False
    for i, (kind, label) in enumerate(KINDS.items()):
        here = [(V, N, e) for (k, V, N, _), e in best.items() if k == kind]
        # one line per corpus size: a cost against V is read at a fixed N
        for j, n in enumerate(sorted({N for _, N, _ in here})):
            pts = sorted((V, e["wall_s"]) for V, N, e in here if N == n)
            ax.loglog(*zip(*pts), marker="os^D"[j % 4], color=f"C{i}",
                      linestyle=("-", "--", ":", "-.")[j % 4],
                      label=f"{label}, {fmt_count(n)} tokens")
            drawn = True
    ax.set(xlabel="vocabulary size V", ylabel="wall time (s)",
           title="corpus load, PMI and word2vec (one line per corpus size)")
    style(ax)
    if drawn:
        ax.legend(fontsize=8, **({} if dims else {"loc": "center left",
                                                   "bbox_to_anchor": (1.02, 0.5)}))
    colors = dict(zip(EMBEDDINGS, ("C0", "C1", "C2")))
    for ax, d in zip(axes[0][1:], dims):
        for emb in EMBEDDINGS:
            for opt, dash in zip(OPTIMIZERS, ("-", "--")):
                pts = sorted((V, e["peak_bytes"] / 1e9) for (V, dd, em, op), e in rows.items()
                             if dd == d and em == emb and op == opt)
                if pts:
                    ax.loglog(*zip(*pts), dash, marker="o", color=colors[emb],
                              label=f"{emb}, {opt}")
        ax.set(xlabel="vocabulary size V", ylabel="peak memory of the process (GB)",
               title=f"lmfix train, d = {d}")
        style(ax)
        ax.legend(fontsize=8)
    machines = sorted({machine_line(e["machine"]).split(", torch")[0] for e in entries
                       if e.get("machine")})
    fig.suptitle(f"lmfix costs against V — {'; '.join(machines) or 'no measurements'}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report(a, results: dict) -> None:
    text = render(results)
    print(text)
    if a.table:
        a.table.parent.mkdir(parents=True, exist_ok=True)
        a.table.write_text(text, encoding="utf-8")
    plot(results, a.plot or a.out / "scale.png")
