"""How a report looks: column names, number formats, report.md and index.html.

:mod:`lmfix.report` gathers the figures; this module only renders them, so the table's
look can change without touching how results are read.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, NamedTuple

DASH = "—"
PARTIAL_MARK = "†"


class Column(NamedTuple):
    name: str
    numeric: bool  # right-aligned, so digits line up down the column


# The report table, in the order of _cells' values.
TABLE = (
    Column("variant", False), Column("embedding", False), Column("tied", False),
    Column("fixed", False), Column("d", True), Column("tokenizer", False),
    Column("trainable params", True), Column("fixed params", True),
    Column("total params", True), Column("trainable % of baseline", True),
    Column("val ppl", True), Column("test ppl", True), Column("test word ppl", True),
    Column("epochs", True), Column("wall time", True), Column("tokens/s", True),
    Column("device", False),
)
COLUMNS = [c.name for c in TABLE]

HOW_TO_READ = (
    "How to read this table: each row is one finished training run. *Trainable* parameters "
    "are updated by the optimizer; *fixed* parameters are part of the model but frozen (the "
    "fixed embedding matrix, used both as the input embedding and, tied, as the output "
    "classifier). *Trainable % of baseline* divides a run's trainable parameters by those of "
    "the baseline run (embedding `{baseline}`; by default the learned, untied embedding): the "
    "paper reports that a fixed tied embedding with a learned logit scale trains about 89% "
    "fewer parameters (about 11% of the baseline) at a similar perplexity. Perplexity is "
    "exp(mean cross-entropy per token), lower is better; val ppl is the best epoch's. *Test "
    "word ppl* spreads the same total cross-entropy over the words of the word-level corpus "
    "(whitespace words plus one end-of-line each), so runs with different tokenizers (word, "
    "SentencePiece) can be compared; for word-level runs it equals test ppl. Rows are "
    "only comparable on the same data, vocabulary and evaluation split. Wall time and tokens/s "
    "depend on the device: compare them only between rows run on the same device."
)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt_int(x: Any) -> str:
    if not _is_num(x) or not math.isfinite(x):
        return DASH if x is None else str(x)
    return f"{int(round(x)):,}"


def fmt_ppl(x: Any) -> str:
    if not _is_num(x) or not math.isfinite(x):
        return DASH if x is None else str(x)  # inf/nan from a diverged run stay visible
    return f"{x:,.2f}"


def fmt_pct(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.1f}%" if x >= 0.1 or x == 0 else f"{x:.2g}%"


def fmt_duration(seconds: Any) -> str:
    if not _is_num(seconds) or not math.isfinite(seconds) or seconds < 0:
        return DASH
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _cells(r: dict) -> list[str]:
    """One table row as display strings (shared by report.md and index.html)."""
    mark = f" {PARTIAL_MARK}" if r["max_eval_tokens"] is not None else ""
    epochs = fmt_int(r["epochs"])
    if r["best_epoch"] is not None and r["best_epoch"] != r["epochs"]:
        epochs += f" (best {fmt_int(r['best_epoch'])})"
    # --fix input/output: only that side is fixed
    fixed = r.get("fix") if r.get("fix") in ("input", "output") else \
        "yes" if r["fixed"] else "no"
    return [
        r["name"], r["embedding_source"], "yes" if r["tied"] else "no",
        fixed, fmt_int(r["emsize"]), r["tokenizer"],
        fmt_int(r["params_trainable"]), fmt_int(r["params_fixed"]), fmt_int(r["params_total"]),
        fmt_pct(r["trainable_pct_of_baseline"]), fmt_ppl(r["val_ppl"]) + mark,
        fmt_ppl(r["test_ppl"]) + mark, fmt_ppl(r["test_word_ppl"]) + mark, epochs,
        fmt_duration(r["wall_s"]), fmt_int(r["tokens_per_s"]),
        r["device_name"] or r["device"] or DASH,
    ]


def _not_complete_line(p: dict) -> str:
    detail = p["status"] + (f", {p['error']}" if p["error"] else "")
    if p["updated"]:
        detail += f", last update {p['updated']}"
    return f"not complete: {p['name']} ({detail})"


# The Pareto table (report.py's pareto_front) and the intrinsic-scores table: (title, numeric)
# and how each row's cells are made, shared by report.md and index.html.
PARETO_TABLE = (Column("variant", False), Column("trainable params", True),
                Column("embedding trainable", True), Column("val ppl", True),
                Column("test ppl", True))
INTRINSIC_TABLE = (Column("variant", False), Column("embedding file", False),
                   Column("fix", False), Column("val ppl", True),
                   Column("WordSim-353 ρ", True), Column("SimLex-999 ρ", True),
                   Column("analogy acc", True), Column("analogy OOV", True))
PARETO_TEXT = (
    "The Pareto front: the runs that no other run beats on validation perplexity with as few "
    "or fewer trainable parameters, fewest first (frontier.png draws every run and the front). "
    "Moving down the table, each run buys its lower perplexity with more trainable parameters.")
INTRINSIC_TEXT = (
    "Embedding quality beside perplexity: word similarity (Spearman ρ with human judgements) "
    "and analogy accuracy (3CosAdd) of each run's embedding file, scored by gensim on its "
    "own copies of WordSim-353, SimLex-999 and the Google analogies, case-insensitively "
    "(FILE.intrinsic.json; `lmfix evaluate-embeddings` prints them, with the share of "
    "pairs skipped as out of vocabulary). The analogy OOV column is the share of the "
    "19,544 questions skipped for a word the vectors lack.")


def _fmt_score(x: Any) -> str:
    return DASH if not _is_num(x) or not math.isfinite(x) else f"{x:.3f}"


def _pareto_cells(p: dict) -> list[str]:
    return [p["name"], fmt_int(p["params_trainable"]), fmt_int(p["params_embedding_trainable"]),
            fmt_ppl(p["val_ppl"]), fmt_ppl(p["test_ppl"])]


def _intrinsic_cells(r: dict) -> list[str]:
    oov = r["analogies_oov_pct"]
    return [r["name"], r["embedding_file"], r["fix"] or DASH, fmt_ppl(r["val_ppl"]),
            _fmt_score(r["wordsim353"]), _fmt_score(r["simlex999"]),
            _fmt_score(r["analogies"]), DASH if oov is None else f"{oov:.1f}%"]


def render_markdown(results: dict, rows: list[dict], baseline: str) -> str:
    def md(s: str) -> str:  # a "|" or a line break inside a cell would break the table
        return str(s).replace("|", "\\|").replace("\n", " ")

    def table(cols, cell_rows) -> list[str]:
        return (["| " + " | ".join(c.name for c in cols) + " |",
                 "|" + "|".join("---:" if c.numeric else ":---" for c in cols) + "|"]
                + ["| " + " | ".join(md(c) for c in cells) + " |" for cells in cell_rows])

    out = ["# lmfix report", "",
           "| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join("---:" if c.numeric else ":---" for c in TABLE) + "|"]
    out += ["| " + " | ".join(md(c) for c in _cells(r)) + " |" for r in rows]
    out.append("")
    out += [f"- {n}" for n in results["notes"]] + ([""] if results["notes"] else [])
    out += [f"- {_not_complete_line(p)}" for p in results["not_complete"]]
    out += [""] if results["not_complete"] else []
    out += [HOW_TO_READ.format(baseline=baseline), ""]
    if results.get("pareto_front"):
        out += ["## Pareto front", "", PARETO_TEXT, ""]
        out += table(PARETO_TABLE, [_pareto_cells(p) for p in results["pareto_front"]]) + [""]
    if results.get("intrinsic"):
        out += ["## Embedding quality beside perplexity", "", INTRINSIC_TEXT, ""]
        out += table(INTRINSIC_TABLE, [_intrinsic_cells(r) for r in results["intrinsic"]])
        out.append("")
    out += ["## Commands", "", "```sh"]
    for r in rows:
        out += [f"# {r['name']}", r["command"] or "# (command not recorded)"]
    out += ["```", "", "## Environment", ""]
    out += [f"- {k}: {v}" for k, v in results["environment"].items()]
    out += ["", "## Plots", ""]
    for key, title in (("val_ppl", "Validation perplexity"), ("scale", "Learned logit scale"),
                       ("params", "Parameters"),
                       ("frontier", "Validation perplexity vs trainable parameters")):
        if results["plots"].get(key):
            out.append(f"![{title}]({results['plots'][key]})")
    return "\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}.tablewrap{overflow-x:auto}table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f6f6f6;padding:.8em;
overflow-x:auto}img{max-width:100%;display:block;margin:1em 0}.warn{color:#9a4b00}"""


def render_html(results: dict, rows: list[dict], baseline: str, out_dir: Path) -> str:
    e = html.escape

    def img(name: str | None, alt: str) -> str:
        if not name:
            return ""
        data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'

    def row(r: dict) -> str:
        return "".join(f'<td{" class=n" if col.numeric else ""}>{e(c)}</td>'
                       for col, c in zip(TABLE, _cells(r), strict=True))

    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join(f"<tr>{row(r)}</tr>\n" for r in rows)
    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             f"<title>lmfix report</title><style>{_CSS}</style></head><body>",
             "<h1>lmfix report</h1>",
             f'<div class="tablewrap"><table><tr>{head}</tr>\n{body}</table></div>']
    parts += [f'<p class="warn">{e(n)}</p>' for n in results["notes"]]
    if results["not_complete"]:
        parts.append("<ul>" + "".join(f"<li>{e(_not_complete_line(p))}</li>"
                                      for p in results["not_complete"]) + "</ul>")
    # The paragraph is written in Markdown; drop its emphasis marks rather than show them raw.
    how = HOW_TO_READ.format(baseline=baseline).replace("*", "").replace("`", "")
    parts.append(f"<p>{e(how)}</p>")
    def small_table(cols, cell_rows) -> str:
        head = "".join(f"<th>{e(c.name)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f'<td{" class=n" if col.numeric else ""}>{e(c)}</td>'
                                        for col, c in zip(cols, cells, strict=True)) + "</tr>\n"
                       for cells in cell_rows)
        return f'<div class="tablewrap"><table><tr>{head}</tr>\n{body}</table></div>'

    if results.get("pareto_front"):  # a list: the report's one table of runs stays the first
        items = "".join(f"<li>{e(c[0])}: {e(c[1])} trainable parameters ({e(c[2])} in the "
                        f"embedding), val ppl {e(c[3])}, test ppl {e(c[4])}</li>"
                        for c in map(_pareto_cells, results["pareto_front"]))
        parts.append(f"<h2>Pareto front</h2><p>{e(PARETO_TEXT)}</p><ol>{items}</ol>")
    if results.get("intrinsic"):
        text = INTRINSIC_TEXT.replace("`", "")
        parts.append(f"<h2>Embedding quality beside perplexity</h2><p>{e(text)}</p>"
                     + small_table(INTRINSIC_TABLE,
                                   [_intrinsic_cells(r) for r in results["intrinsic"]]))
    parts.append("<h2>Plots</h2>" + img(results["plots"]["val_ppl"], "validation perplexity")
                 + img(results["plots"]["scale"], "learned logit scale")
                 + img(results["plots"]["params"], "trainable vs fixed parameters")
                 + img(results["plots"].get("frontier"),
                       "validation perplexity vs trainable parameters, Pareto front"))
    cmds = "\n".join(f"# {r['name']}\n{r['command'] or '# (command not recorded)'}" for r in rows)
    parts.append(f"<h2>Commands</h2><pre>{e(cmds)}</pre><h2>Environment</h2><ul>")
    parts += [f"<li>{e(k)}: {e(v)}</li>" for k, v in results["environment"].items()]
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)
