"""Compare finished ``lmfix train`` runs: a paper-style table, machine-readable results, plots
and a standalone HTML page.

``write_report(run_dirs, out_dir)`` writes into ``out_dir``::

    report.md     table + exact commands + versions/devices + runs that did not finish
    results.csv   one row per finished run, unformatted numbers (same columns as results.json)
    results.json  {"baseline", "runs", "not_complete", "plots", "notes"}
    val_ppl.png   validation perplexity per epoch, all variants
    scale.png     learned logit scale vs tokens seen, fixed variants (skipped if none logged)
    params.png    trainable vs fixed parameters per variant
    frontier.png  validation perplexity vs trainable parameters, Pareto front drawn (≥ 3 runs)
    index.html    all of the above in one file (images embedded), viewable offline

report.md also gets the Pareto front as a table (the runs no other run beats with as few
trainable parameters) and, for runs whose embedding file has word similarity / analogy scores
(FILE.intrinsic.json, written by ``lmfix run``), those scores beside their perplexity.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from . import plots, pooling
from .embedding_spec import BASIS_SPECS, LEARNED_SPECS
from .embeddings.intrinsic import headline, read_scores
from .errors import LmfixError
from .report_render import PARTIAL_MARK, _is_num, fmt_int, render_html, render_markdown
from .fsutil import atomic_open, json_safe, write_json, write_text
from .rundir import CONFIG, METRICS, SUMMARY, RunDir
from .tokenizer import label_of


def _s(key: str, numeric: bool = True):
    """A summary field, as it is (numbers only, when ``numeric``: anything else is None)."""
    return lambda run, s: (_num(s.get(key)) if numeric else s.get(key))


def _p(key: str):
    return lambda run, s: _num(s["params"].get(key))


def _version(key: str):
    return lambda run, s: (s.get("versions") or {}).get(key)


def _eval_tokens(split: str):
    return lambda run, s: _num((s.get("eval_tokens") or {}).get(split))


# The flat fields of results.csv and of each results.json "runs" entry, in this order: one
# (name, how a run's value is read) pair each. trainable_pct_of_baseline is filled in later,
# once the baseline is known.
ROW_FIELDS = (
    ("name", lambda run, s: run["label"]), ("run_dir", lambda run, s: str(run["dir"])),
    ("embedding", _s("embedding", False)),
    ("embedding_source", lambda run, s: s.get("embedding_source") or s["embedding"]),
    ("tied", _s("tied", False)), ("fixed", _s("fixed", False)), ("fix", _s("fix", False)),
    ("learn_top", _s("learn_top")), ("delta_rank", _s("delta_rank")), ("emsize", _s("emsize")),
    ("nhid", _s("nhid")), ("nlayers", _s("nlayers")), ("vocab_size", _s("vocab_size")),
    ("seed", _s("seed")),
    ("params_trainable", _p("trainable")), ("params_fixed", _p("fixed")),
    ("params_total", _p("total")), ("params_embedding_trainable", _p("embedding_trainable")),
    ("params_embedding_fixed", _p("embedding_fixed")),
    ("trainable_pct_of_baseline", lambda run, s: None),
    ("tokenizer", lambda run, s: label_of(s["tokenizer"])),
    ("val_loss", _s("val_loss")), ("val_ppl", _s("val_ppl")), ("test_loss", _s("test_loss")),
    ("test_ppl", _s("test_ppl")), ("val_word_ppl", _s("val_word_ppl")),
    ("test_word_ppl", _s("test_word_ppl")), ("test_bpc", _s("test_bpc")),
    ("world_size", _s("world_size")), ("grad_bytes_per_step", _s("grad_bytes_per_step_formula")),
    ("comm_bytes_per_step", _s("comm_bytes_per_step")), ("epochs", _s("epochs")),
    ("best_epoch", _s("best_epoch")), ("train_tokens", _s("train_tokens")),
    ("wall_s", _s("wall_s")), ("tokens_per_s", _s("tokens_per_s")),
    ("device", _s("device", False)), ("device_name", _s("device_name", False)),
    ("cpu_threads", _s("cpu_threads")), ("cpu_capability", _s("cpu_capability", False)),
    ("final_scale", _s("final_scale")), ("max_train_tokens", _s("max_train_tokens")),
    ("max_eval_tokens", _s("max_eval_tokens")), ("eval_tokens_valid", _eval_tokens("valid")),
    ("eval_tokens_test", _eval_tokens("test")), ("command", _s("command", False)),
    ("lmfix_version", _version("lmfix")), ("torch_version", _version("torch")),
    ("python_version", _version("python")), ("git_commit", _s("git_commit", False)),
)
FIELDS = [name for name, _ in ROW_FIELDS]


# ---------------------------------------------------------------------------------------------
# Reading run directories


def _is_run_dir(p: Path) -> bool:
    return RunDir(p).holds_run()


def _expand(paths: list[Path]) -> list[Path]:
    """Turn the user's paths into run directories (see :func:`collect_runs` for the rule)."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise LmfixError(f"{p}: no such directory")
        if not p.is_dir():
            raise LmfixError(f"{p}: not a directory (expected a run directory of `lmfix train`)")
        if _is_run_dir(p):
            found.append(p)
            continue
        # One level only, never a recursive walk: a stray directory further down (a copy,
        # a backup) would otherwise slip into the comparison unnoticed.
        children = [c for parent in (p, p / "runs") if parent.is_dir()
                    for c in sorted(parent.iterdir()) if c.is_dir() and _is_run_dir(c)]
        if not children:
            raise LmfixError(
                f"{p}: not a run directory (no status.json or config.json) and contains no "
                f"run directories (looked in {p}/*/ and {p}/runs/*/)")
        found += children
    unique, seen = [], set()
    for p in found:  # a run named twice (directly and through its parent) counts once
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _num(x: Any) -> float | int | None:
    return x if _is_num(x) else None


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """Records of a metrics.jsonl and the number of lines skipped.

    A crash mid-write leaves a truncated last line; skipping unparseable lines keeps every
    complete record instead of losing the whole run's curves.
    """
    records, skipped = [], 0
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    except OSError as e:
        raise LmfixError(f"cannot read {path}: {e.strerror or e}") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            skipped += 1
    return records, skipped


def collect_runs(run_dirs: list[Path]) -> list[dict]:
    """Read run directories into dicts: ``dir, name, status, error, updated, config, summary,
    metrics, skipped_lines, finished``.

    Which paths count: a directory holding ``status.json`` or ``config.json`` is a run
    directory. Any other directory is a parent: the run directories directly inside it
    (``P/*/``) and inside ``P/runs/`` (``P/runs/*/``) are taken, in name order, one level deep.
    A run is *finished* only when its status says so and summary.json exists; every other
    run is returned too (``finished`` False) so the report can list it as not complete.
    """
    if not run_dirs:
        raise LmfixError("no run directories given")
    runs = []
    for d in _expand(list(run_dirs)):
        out = RunDir(d)
        status = out.status()
        try:
            config = out.read_config() if (d / CONFIG).is_file() else {}
        except LmfixError:
            config = {}
        summary, error = None, status.error
        if (d / SUMMARY).is_file():
            try:
                summary = out.read_summary()
            except LmfixError as e:  # half-written or edited: this run only is not reported
                error = str(e)
        state = status.state or "unknown (no readable status.json)"
        if state == "finished" and summary is None:
            error = error or "status is finished but summary.json is missing"
        metrics, skipped = read_metrics(d / METRICS)
        name = (summary or {}).get("name") or d.name
        runs.append({
            "dir": d, "name": str(name), "status": str(state), "error": error,
            "updated": status.updated, "config": config, "summary": summary,
            "metrics": metrics, "skipped_lines": skipped,
            "finished": state == "finished" and summary is not None,
        })
    return runs


# ---------------------------------------------------------------------------------------------
# Rows and formatting


def _row(run: dict, baseline_trainable: float | None) -> dict:
    s = run["summary"]
    row = {name: get(run, s) for name, get in ROW_FIELDS}
    if baseline_trainable:  # a zero-trainable baseline would make the ratio meaningless
        row["trainable_pct_of_baseline"] = 100.0 * row["params_trainable"] / baseline_trainable
    return row


def _grouped(pairs: list[tuple[str, Any]], unknown: str = "unknown") -> str:
    """``value`` when all runs agree, else ``value (run, run); value (run)``."""
    groups: dict[str, list[str]] = {}
    for name, value in pairs:
        groups.setdefault(unknown if value in (None, "") else str(value), []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{v} ({', '.join(names)})" for v, names in groups.items())


def _environment(rows: list[dict]) -> dict[str, str]:
    def by(key: str, unknown: str = "unknown") -> str:
        return _grouped([(r["name"], r[key]) for r in rows], unknown)

    devices = [(r["name"], " — ".join(x for x in (r["device"], r["device_name"]) if x))
               for r in rows]
    return {"lmfix version": by("lmfix_version"),
            "git commit": by("git_commit", "unknown (not a git checkout)"),
            "torch version": by("torch_version"), "Python version": by("python_version"),
            "device(s)": _grouped(devices)}


# ---------------------------------------------------------------------------------------------
# Report assembly


def _label_runs(runs: list[dict]) -> None:
    """Give every run a unique label: two runs with the same name would merge in legends."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["name"]] = counts.get(r["name"], 0) + 1
    for r in runs:
        # OUT/runs/NAME (from `lmfix run`): OUT tells two runs of the same name apart
        where = r["dir"].parent.parent if r["dir"].parent.name == "runs" else r["dir"].parent
        r["label"] = r["name"] if counts[r["name"]] == 1 else f"{r['name']} ({where.name})"


def _scale_points(run: dict) -> tuple[list, list]:
    def pts(kind: str) -> list:
        return [(m["tokens_seen"], m["scale"]) for m in run["metrics"] if m.get("kind") == kind
                and _is_num(m.get("tokens_seen")) and _is_num(m.get("scale"))]
    return pts("step"), pts("epoch")


def _epoch_curve(run: dict, notes: list[str]) -> dict[int, float]:
    """Validation perplexity per epoch from metrics.jsonl (the summary's figure if none)."""
    ep = {m["epoch"]: m["val_ppl"] for m in run["metrics"] if m.get("kind") == "epoch"
          and _is_num(m.get("epoch")) and _is_num(m.get("val_ppl"))}
    if not ep:  # no per-epoch log: show the summary's figure as a lone point rather than nothing
        s = run["summary"]
        ep = {s.get("best_epoch") or s.get("epochs") or 1: s["val_ppl"]}
        notes.append(f"{run['label']}: no epoch records in metrics.jsonl; val_ppl.png "
                     "shows only its summary value")
    return ep


def _draw_plots(variants: list[dict], out_dir: Path, notes: list[str]) -> dict:
    val_series = []
    for i, v in enumerate(variants):
        curves = [_epoch_curve(run, notes) for run in v["_runs"]]
        epochs = sorted(set.intersection(*(set(c) for c in curves)))  # epochs every seed has
        per = [[c[e] for c in curves] for e in epochs]
        val_series.append({"label": v["name"], "index": i, "epochs": epochs,
                           "val_ppl": [sum(p) / len(p) for p in per],
                           "lo": [min(p) for p in per], "hi": [max(p) for p in per]})
    plots.plot_val_ppl(val_series, out_dir / "val_ppl.png")

    scale_series = []
    for i, v in enumerate(variants):
        if v.get("final_scale") is not None:  # a fixed classifier: a learned scale
            steps, epochs = _scale_points(v["_runs"][0])
            scale_series.append({"label": v["name"], "index": i,
                                 "steps": steps, "epochs": epochs})
    have_scale = plots.plot_scale(scale_series, out_dir / "scale.png")
    if not have_scale:
        _remove_stale(out_dir / "scale.png")
        notes.append("scale.png not written: no fixed-embedding run logged a learned scale "
                     "in metrics.jsonl" if scale_series else
                     "scale.png not written: there is no fixed-embedding run")

    plots.plot_params([{"label": v["name"], "trainable": v["params_trainable"],
                        "fixed": v["params_fixed"], "pct": v["trainable_pct_of_baseline"]}
                       for v in variants], out_dir / "params.png")
    return {"val_ppl": "val_ppl.png", "scale": "scale.png" if have_scale else None,
            "params": "params.png"}


MIN_FRONTIER_RUNS = 3  # fewer points make no frontier worth drawing


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names on the Pareto front of (name, trainable params, val ppl) points, fewest
    trainable parameters first: a point is on it when no other point has at most as many
    trainable parameters and a lower perplexity (of equal points, the first listed counts).
    Non-finite perplexities (a diverged run) are never on it."""
    finite = [p for p in points if _is_num(p[2]) and math.isfinite(p[2])]
    front, best = [], math.inf
    for name, _, val in sorted(finite, key=lambda p: (p[1], p[2])):
        if val < best:
            front.append(name)
            best = val
    return front


def _frontier(variants: list[dict], out_dir: Path, notes: list[str]) -> tuple[str | None, list]:
    """frontier.png and the Pareto table (on mean val ppl), with enough variants."""
    path = out_dir / "frontier.png"
    if len(variants) < MIN_FRONTIER_RUNS:
        _remove_stale(path)
        notes.append(f"frontier.png and the Pareto table not written: they need at least "
                     f"{MIN_FRONTIER_RUNS} variants, this report has {len(variants)}")
        return None, []
    front = pareto_front([(v["name"], v["params_trainable"], v["val_ppl"]) for v in variants])
    on = set(front)
    plots.plot_frontier([{"label": v["name"], "index": i, "trainable": v["params_trainable"],
                          "val_ppl": v["val_ppl"], "err": v["val_ppl_sd"],
                          "front": v["name"] in on} for i, v in enumerate(variants)], path)
    by_name = {v["name"]: v for v in variants}
    keys = ("name", "n", "params_trainable", "params_embedding_trainable", "val_ppl",
            "val_ppl_sd", "test_ppl", "test_ppl_sd")
    return "frontier.png", [{k: by_name[n][k] for k in keys} for n in front]


def _remove_stale(path: Path) -> None:
    # A figure left by an earlier report would show runs that are not in this one.
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise LmfixError(f"cannot remove stale {path}: {e.strerror or e}")


def _intrinsic(variants: list[dict]) -> list[dict]:
    """Variants whose embedding files have scores beside them (FILE.intrinsic.json): their
    word similarity and analogy figures (means over the seeds' files) next to their mean
    perplexity."""
    out = []
    for v in variants:
        files = [r["summary"]["embedding"] for r in v["_runs"]]
        if any(f in LEARNED_SPECS + BASIS_SPECS for f in files):
            continue
        scores = [read_scores(f) for f in files]
        if any(s is None for s in scores):
            continue
        heads = [headline(s) for s in scores]
        mean = {k: (sum(h[k] for h in heads) / len(heads)
                    if all(_is_num(h[k]) for h in heads) else None) for k in heads[0]}
        oov = (scores[0].get("analogies") or {}).get("oov_pct")
        out.append({"name": v["name"], "embedding_file": ", ".join(Path(f).name for f in files),
                    "fix": v.get("fix"), "val_ppl": v["val_ppl"],
                    "wordsim353": mean["wordsim353"], "simlex999": mean["simlex999"],
                    "analogies": mean["analogies"], "analogies_oov_pct": oov})
    return out


def _machine_notes(rows: list[dict]) -> list[str]:
    """Rows that ran on different machines settings: thread count, instruction set and device
    alone move early-training perplexities by up to 15% (docs/results.md)."""
    notes = []
    for key, what in (("device_name", "devices"), ("cpu_threads", "CPU thread counts"),
                      ("cpu_capability", "CPU instruction sets")):
        if len({r[key] for r in rows}) > 1:
            notes.append(f"these runs ran with different {what} ("
                         + _grouped([(r["name"], r[key]) for r in rows])
                         + "): that alone moves perplexities, compare rows of one setting")
    return notes


def write_report(run_dirs: list[Path], out_dir: Path, baseline: str | None = None,
                 params_baseline: str = "learned-untied") -> dict:
    """Write the report files into ``out_dir`` and return the results dict (= results.json).

    Runs that differ only in seed are pooled into one variant (lmfix.pooling): the table shows
    mean ± sd over seeds, and every variant is compared with ``baseline`` (a variant name;
    default: ``learned``, the learned tied embedding, when there is one). ``params_baseline``
    names the run whose trainable parameters "trainable % of baseline" divides by (embedding
    or run name; the paper's learned untied model).
    """
    runs = collect_runs(run_dirs)
    _label_runs(runs)
    done = [r for r in runs if r["finished"]]
    pending = [r for r in runs if not r["finished"]]
    if not done:
        listing = "; ".join(f"{r['dir']} ({r['status']}"
                            + (f": {r['error']})" if r["error"] else ")") for r in runs)
        raise LmfixError(f"no finished runs to report: {listing}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LmfixError(f"{out_dir}: exists and is not a directory")

    pbase = next((r for r in done if r["summary"]["embedding"] == params_baseline), None) \
        or next((r for r in done if r["summary"]["name"] == params_baseline), None)
    base_trainable = pbase["summary"]["params"]["trainable"] if pbase else None
    # Most trainable parameters first: the baseline on top, the fixed variants below it.
    done.sort(key=lambda r: -r["summary"]["params"]["trainable"])
    rows = [_row(r, base_trainable) for r in done]

    notes = [f"{r['label']}: skipped {r['skipped_lines']} unreadable line(s) in metrics.jsonl "
             "(e.g. truncated by a crash mid-write)" for r in runs if r["skipped_lines"]]
    notes += [f"{r['label']}: {w}" for r in done for w in r["summary"].get("warnings") or []]
    variants = pooling.pool(rows, done, notes)
    names = [v["name"] for v in variants]
    if baseline is not None and baseline not in names:
        raise LmfixError(f"--baseline {baseline!r} is not a variant of these runs: "
                         f"{', '.join(names)}")
    comparison = []
    compare_to = baseline or ("learned" if "learned" in names else None)
    if compare_to is None:
        notes.append("no comparison with a reference variant: there is no `learned` (tied) "
                     "variant; name one with --baseline")
    else:
        comparison = pooling.compare(variants, compare_to)
    if pbase is None:
        notes.append(f"no finished baseline run (embedding `{params_baseline}`): "
                     "% of baseline is not available")
    if len({r["vocab_size"] for r in rows}) > 1:
        notes.append("runs have different vocabulary sizes: their perplexities are not comparable")
    notes += _machine_notes(rows)
    partial = [v for v in variants if v["max_eval_tokens"] is not None]
    if partial:
        notes.insert(0, f"{PARTIAL_MARK} partial evaluation: "
                     + ", ".join(f"{v['name']} (at most {fmt_int(v['max_eval_tokens'])} tokens "
                                 "per split)" for v in partial)
                     + " evaluated only the start of the validation/test splits; these "
                       "perplexities are not comparable with full-split figures.")
    capped = [v for v in variants if v["max_train_tokens"] is not None]
    if capped:
        notes.append("training was capped: " + ", ".join(
            f"{v['name']} (at most {fmt_int(v['max_train_tokens'])} tokens)" for v in capped))

    plot_files = _draw_plots(variants, out_dir, notes)
    plot_files["frontier"], front = _frontier(variants, out_dir, notes)
    results = json_safe({
        "baseline": {"comparison": compare_to, "params": params_baseline,
                     "params_run": pbase["label"] if pbase else None,
                     "params_run_dir": str(pbase["dir"]) if pbase else None,
                     "params_trainable": base_trainable},
        "variants": [{k: v for k, v in var.items() if not k.startswith("_") and k != "runs"}
                     | {"runs": [r["name"] for r in var["runs"]]} for var in variants],
        "comparison": comparison,
        "runs": rows,
        "not_complete": [{"name": r["label"], "run_dir": str(r["dir"]), "status": r["status"],
                          "error": r["error"], "updated": r["updated"]} for r in pending],
        "plots": plot_files,
        "pareto_front": front,
        "intrinsic": _intrinsic(variants),
        "notes": notes,
        "environment": _environment(rows),
    })
    write_json(out_dir / "results.json", results)
    _write_csv(out_dir / "results.csv", results["runs"])
    write_text(out_dir / "report.md", render_markdown(results, params_baseline))
    write_text(out_dir / "index.html", render_html(results, params_baseline, out_dir))
    return results


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS + ["variant"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            # JSON spelling for booleans and missing values, so both files read the same.
            w.writerow({k: ("true" if v is True else "false" if v is False else
                            "" if v is None else v) for k, v in r.items()})
