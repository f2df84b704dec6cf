"""Runs that differ only in their seed, pooled into one variant (issue 23).

``lmfix run --seeds K`` trains each variant into ``runs/NAME`` and ``runs/NAME-seed-S``;
``lmfix report DIR...`` may also be given runs of one variant made in several directories. A
run's *signature* is everything that defines it except the seed: its training settings (less
seed, out, data path and the embedding file's path), the embedding it was built from (method,
dimension and build settings, not their seed), the training text's sha256 and the tokenizer.
Runs with one signature pool into a variant; runs that differ in anything else never do (two
groups of one name are told apart by their directory). A seed seen twice in a group is a copy
of one run, not a second sample: it is left out of the statistics, with a note.

Each variant carries mean ± sd of its perplexities (:mod:`lmfix.stats`) and its per-seed rows;
:func:`compare` sets every variant against a reference one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import stats
from .embedding_spec import BASIS_SPECS, LEARNED_SPECS

POOLED = ("val_ppl", "test_ppl", "val_word_ppl", "test_word_ppl", "val_loss", "test_loss",
          "wall_s", "tokens_per_s", "final_scale")
_SEED_SUFFIX = re.compile(r"-seed-\d+$")
_NOT_DEFINING = ("seed", "out", "data", "embedding")


def signature(run: dict) -> str:
    """What defines a run but its seed, as a comparable string."""
    s = run["summary"]
    train = {k: v for k, v in (s.get("config") or {}).get("train", {}).items()
             if k not in _NOT_DEFINING}
    tok = {k: v for k, v in (s.get("tokenizer") or {}).items() if k != "model_path"}
    return json.dumps({"name": variant_name(s["name"]), "train": train,
                       "embedding": _embedding_identity(s["embedding"]),
                       "source": s.get("embedding_source"), "tokenizer": tok,
                       "train_sha256": (s.get("corpus") or {}).get("train_sha256")},
                      sort_keys=True, default=str)


def _embedding_identity(spec: str):
    """A built-in by name; a file lmfix built by how it was built, less its seed (its
    sidecar); any other file by its path."""
    if spec in LEARNED_SPECS + BASIS_SPECS:
        return spec
    try:
        meta = json.loads(Path(f"{spec}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"file": spec}
    if not isinstance(meta, dict):
        return {"file": spec}
    return {k: meta.get(k) for k in ("method", "dim", "params")}


def variant_name(run_name: str) -> str:
    return _SEED_SUFFIX.sub("", run_name)


def pool(rows: list[dict], runs: list[dict], notes: list[str]) -> list[dict]:
    """Variants from per-run ``rows`` (report rows, in order) and their ``runs`` (collected
    run dicts, same order): each a dict of the first run's fields, the pooled means (and
    ``KEY_sd``, ``KEY_min``, ``KEY_max``), ``n``, ``seeds`` and ``runs`` (its rows)."""
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for row, run in zip(rows, runs):
        groups.setdefault(signature(run), []).append((row, run))
    variants = []
    for members in groups.values():
        kept, seen = [], set()
        for row, run in members:
            if row["seed"] in seen:
                notes.append(f"{row['run_dir']}: seed {row['seed']} of "
                             f"{variant_name(row['name'])} once more (a copy of one run?); "
                             "counted once")
                continue
            seen.add(row["seed"])
            kept.append((row, run))
        variants.append(_aggregate([row for row, _ in kept], [run for _, run in kept]))
    _label(variants)
    for row in rows:
        row["variant"] = None  # a left-out copy stays None
    for v in variants:
        for row in v["runs"]:
            row["variant"] = v["name"]
    return variants


def _aggregate(rows: list[dict], runs: list[dict]) -> dict:
    v = dict(rows[0])
    v["name"] = variant_name(rows[0]["name"])
    v["n"], v["seeds"] = len(rows), [r["seed"] for r in rows]
    v["runs"], v["_runs"] = rows, runs
    for key in POOLED:
        vals = [r[key] for r in rows if r.get(key) is not None]
        if len(vals) < len(rows):  # a value missing from a seed: no pooled figure
            v[key] = v[f"{key}_sd"] = v[f"{key}_min"] = v[f"{key}_max"] = None
            continue
        d = stats.describe(vals)
        v[key], v[f"{key}_sd"], v[f"{key}_min"], v[f"{key}_max"] = \
            d["mean"], d["sd"], d["min"], d["max"]
    return v


def _label(variants: list[dict]) -> None:
    """Unique names: two groups of one name get their directory (OUT of OUT/runs/NAME)."""
    counts: dict[str, int] = {}
    for v in variants:
        counts[v["name"]] = counts.get(v["name"], 0) + 1
    for v in variants:
        if counts[v["name"]] > 1:
            d = Path(v["run_dir"])
            where = d.parent.parent if d.parent.name == "runs" else d.parent
            v["name"] = f"{v['name']} ({where.name})"


def compare(variants: list[dict], baseline: str) -> list[dict]:
    """Every variant but ``baseline`` (a variant name) against it, in val and test ppl."""
    base = next(v for v in variants if v["name"] == baseline)
    out = []
    for v in variants:
        if v is base:
            continue
        row = {"name": v["name"], "baseline": base["name"], "n": v["n"], "n_baseline": base["n"]}
        for split in ("val", "test"):
            key = f"{split}_ppl"
            row[split] = stats.welch([r[key] for r in v["runs"]],
                                     [r[key] for r in base["runs"]])
        out.append(row)
    return out
