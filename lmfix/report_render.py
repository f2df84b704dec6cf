"""How a report looks: column names, number formats, report.md and index.html.

:mod:`lmfix.report` gathers the figures; this module only renders them, so the table's
look can change without touching how results are read.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Callable, NamedTuple

DASH = "—"
PARTIAL_MARK = "†"


class Column(NamedTuple):
    name: str
    numeric: bool  # right-aligned, so digits line up down the column
    cell: Callable[[dict], str]  # the row's value, formatted (report.md and index.html alike)


HOW_TO_READ = (
    "How to read this table: each row is one variant, trained at the seeds its *seeds* column "
    "counts; with several, each perplexity is the mean ± the standard deviation over them "
    "(results.csv has every seed's row). *Trainable* parameters are updated by the optimizer; "
    "*fixed* parameters are part of the model but frozen (the fixed embedding matrix), and the "
    "*fixed* column says which sides of the embedding are: both (tied input and classifier), "
    "input, output or none. *Trainable % of baseline* divides a variant's trainable parameters "
    "by those of the baseline run (embedding `{baseline}`; by default the learned, untied "
    "embedding): the paper reports that a fixed tied embedding with a learned logit scale "
    "trains about 89% fewer parameters (about 11% of the baseline) at a similar perplexity. "
    "Perplexity is exp(mean cross-entropy per token), lower is better; val ppl is the best "
    "epoch's. *Test word ppl* spreads the same total cross-entropy over the words of the "
    "word-level corpus (whitespace words plus one end-of-line each), so runs with different "
    "tokenizers (word, SentencePiece) can be compared; for word-level runs it equals test ppl. "
    "Rows are only comparable on the same data, vocabulary and evaluation split. Wall time and "
    "tokens/s (means over seeds) depend on the device: compare them only between rows run on "
    "the same device."
)
COMPARISON_TEXT = (
    "Each variant against the reference variant `{baseline}`: the difference of mean "
    "perplexities (variant minus reference; negative is better), its 95% confidence interval "
    "(Welch), and Welch's t-test p-value over the seeds (scipy). *better* / *worse* at p < 0.05; "
    "otherwise the seeds cannot tell the two apart. With one seed on either side no test is "
    "possible: train more with `lmfix run --seeds K`."
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


def fmt_pm(r: dict, key: str) -> str:
    """mean ± sd over seeds (the value alone for one seed), then the partial mark."""
    sd = r.get(f"{key}_sd")
    text = fmt_ppl(r[key]) + (f" ± {sd:,.2f}" if _is_num(sd) and math.isfinite(sd) else "")
    return text + _partial(r)


def _partial(r: dict) -> str:
    return f" {PARTIAL_MARK}" if r["max_eval_tokens"] is not None else ""


def _epochs(r: dict) -> str:
    epochs = fmt_int(r["epochs"])
    if r["best_epoch"] is not None and r["best_epoch"] != r["epochs"]:
        epochs += f" (best {fmt_int(r['best_epoch'])})"
    return epochs


# The report table: one column each, its title, alignment and cell.
TABLE = (
    Column("variant", False, lambda r: r["name"]),
    Column("embedding", False, lambda r: r["embedding_source"]),
    Column("tied", False, lambda r: "yes" if r["tied"] else "no"),
    Column("fixed", False, lambda r: r["fixed"]),  # which sides: both, input, output, none
    Column("d", True, lambda r: fmt_int(r["emsize"])),
    Column("tokenizer", False, lambda r: r["tokenizer"]),
    Column("trainable params", True, lambda r: fmt_int(r["params_trainable"])),
    Column("fixed params", True, lambda r: fmt_int(r["params_fixed"])),
    Column("total params", True, lambda r: fmt_int(r["params_total"])),
    Column("trainable % of baseline", True, lambda r: fmt_pct(r["trainable_pct_of_baseline"])),
    Column("seeds", True, lambda r: fmt_int(r["n"])),
    Column("val ppl", True, lambda r: fmt_pm(r, "val_ppl")),
    Column("test ppl", True, lambda r: fmt_pm(r, "test_ppl")),
    Column("test word ppl", True, lambda r: fmt_pm(r, "test_word_ppl")),
    Column("epochs", True, _epochs),
    Column("wall time", True, lambda r: fmt_duration(r["wall_s"])),
    Column("tokens/s", True, lambda r: fmt_int(r["tokens_per_s"])),
    Column("device", False, lambda r: r["device_name"] or r["device"] or DASH),
)


def _not_complete_line(p: dict) -> str:
    detail = p["status"] + (f", {p['error']}" if p["error"] else "")
    if p["updated"]:
        detail += f", last update {p['updated']}"
    return f"not complete: {p['name']} ({detail})"


# The Pareto table (report.py's pareto_front) and the intrinsic-scores table.
PARETO_TABLE = (
    Column("variant", False, lambda p: p["name"]),
    Column("trainable params", True, lambda p: fmt_int(p["params_trainable"])),
    Column("embedding trainable", True, lambda p: fmt_int(p["params_embedding_trainable"])),
    Column("seeds", True, lambda p: fmt_int(p["n"])),
    Column("val ppl", True, lambda p: fmt_pm(p | {"max_eval_tokens": None}, "val_ppl")),
    Column("test ppl", True, lambda p: fmt_pm(p | {"max_eval_tokens": None}, "test_ppl")),
)


def _diff(c: dict) -> str:
    pct = "" if c["diff_pct"] is None else f" ({c['diff_pct']:+.1f}%)"
    return f"{c['diff']:+,.2f}{pct}"


def _ci(c: dict) -> str:
    return DASH if c["ci95"] is None else f"[{c['ci95'][0]:+,.2f}, {c['ci95'][1]:+,.2f}]"


def _p(c: dict) -> str:
    return DASH if c["p"] is None else (f"{c['p']:.2g}" if c["p"] >= 1e-4 else f"{c['p']:.1e}")


COMPARISON_TABLE = (
    Column("variant", False, lambda c: c["name"]),
    Column("seeds", True, lambda c: f"{c['n']} vs {c['n_baseline']}"),
    Column("val ppl diff", True, lambda c: _diff(c["val"])),
    Column("val 95% CI", True, lambda c: _ci(c["val"])),
    Column("val p", True, lambda c: _p(c["val"])),
    Column("val verdict", False, lambda c: c["val"]["verdict"]),
    Column("test ppl diff", True, lambda c: _diff(c["test"])),
    Column("test 95% CI", True, lambda c: _ci(c["test"])),
    Column("test p", True, lambda c: _p(c["test"])),
    Column("test verdict", False, lambda c: c["test"]["verdict"]),
)
INTRINSIC_TABLE = (
    Column("variant", False, lambda r: r["name"]),
    Column("embedding file", False, lambda r: r["embedding_file"]),
    Column("fix", False, lambda r: r["fix"] or DASH),
    Column("val ppl", True, lambda r: fmt_ppl(r["val_ppl"])),
    Column("WordSim-353 ρ", True, lambda r: _fmt_score(r["wordsim353"])),
    Column("SimLex-999 ρ", True, lambda r: _fmt_score(r["simlex999"])),
    Column("analogy acc", True, lambda r: _fmt_score(r["analogies"])),
    Column("analogy OOV", True, lambda r: DASH if r["analogies_oov_pct"] is None
           else f"{r['analogies_oov_pct']:.1f}%"),
)
PARETO_TEXT = (
    "The Pareto front: the variants that no other beats on mean validation perplexity with as "
    "few or fewer trainable parameters, fewest first (frontier.png draws every variant, ± sd "
    "over seeds as error bars, and the front). "
    "Moving down the table, each run buys its lower perplexity with more trainable parameters.")
INTRINSIC_TEXT = (
    "Embedding quality beside perplexity: word similarity (Spearman ρ with human judgements) "
    "and analogy accuracy (3CosAdd) of each run's embedding file, scored by gensim on its "
    "own copies of WordSim-353, SimLex-999 and the Google analogies, case-insensitively "
    "(FILE.intrinsic.json; `lmfix evaluate-embeddings` prints them, with the share of "
    "pairs skipped as out of vocabulary). The analogy OOV column is the share of the "
    "19,544 questions skipped for a word the vectors lack. With several seeds, each seed's "
    "run has its own file, and the scores are their means.")


def _fmt_score(x: Any) -> str:
    return DASH if not _is_num(x) or not math.isfinite(x) else f"{x:.3f}"


def _md(s: str) -> str:  # a "|" or a line break inside a cell would break the table
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(cols, rows: list[dict]) -> list[str]:
    """A Markdown table of ``rows``, one column per :class:`Column`."""
    return (["| " + " | ".join(c.name for c in cols) + " |",
             "|" + "|".join("---:" if c.numeric else ":---" for c in cols) + "|"]
            + ["| " + " | ".join(_md(c.cell(r)) for c in cols) + " |" for r in rows])


def html_table(cols, rows: list[dict]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c.name)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if c.numeric else ""}>{e(c.cell(r))}</td>'
                                    for c in cols) + "</tr>\n" for r in rows)
    return f'<div class="tablewrap"><table><tr>{head}</tr>\n{body}</table></div>'


_PLOTS = (("val_ppl", "Validation perplexity"), ("scale", "Learned logit scale"),
          ("params", "Parameters"),
          ("frontier", "Validation perplexity vs trainable parameters, Pareto front"))


def _commands(results: dict) -> list[tuple[str, str]]:
    return [(r["name"], r["command"] or "# (command not recorded)") for r in results["runs"]]


def render_markdown(results: dict, baseline: str) -> str:
    out = ["# lmfix report", ""] + md_table(TABLE, results["variants"]) + [""]
    out += [f"- {n}" for n in results["notes"]] + ([""] if results["notes"] else [])
    out += [f"- {_not_complete_line(p)}" for p in results["not_complete"]]
    out += [""] if results["not_complete"] else []
    out += [HOW_TO_READ.format(baseline=baseline), ""]
    if results.get("comparison"):
        ref = results["baseline"]["comparison"]
        out += [f"## Compared with {ref}", "", COMPARISON_TEXT.format(baseline=ref), ""]
        out += md_table(COMPARISON_TABLE, results["comparison"]) + [""]
    if results.get("pareto_front"):
        out += ["## Pareto front", "", PARETO_TEXT, ""]
        out += md_table(PARETO_TABLE, results["pareto_front"]) + [""]
    if results.get("intrinsic"):
        out += ["## Embedding quality beside perplexity", "", INTRINSIC_TEXT, ""]
        out += md_table(INTRINSIC_TABLE, results["intrinsic"]) + [""]
    out += ["## Commands", "", "```sh"]
    for name, command in _commands(results):
        out += [f"# {name}", command]
    out += ["```", "", "## Environment", ""]
    out += [f"- {k}: {v}" for k, v in results["environment"].items()]
    out += ["", "## Plots", ""]
    out += [f"![{title}]({results['plots'][key]})" for key, title in _PLOTS
            if results["plots"].get(key)]
    return "\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}.tablewrap{overflow-x:auto}table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f6f6f6;padding:.8em;
overflow-x:auto}img{max-width:100%;display:block;margin:1em 0}.warn{color:#9a4b00}"""


def render_html(results: dict, baseline: str, out_dir: Path) -> str:
    e = html.escape

    def img(name: str | None, alt: str) -> str:
        if not name:
            return ""
        data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'

    def plain(text: str) -> str:  # written in Markdown: drop its emphasis marks
        return e(text.replace("*", "").replace("`", ""))

    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             f"<title>lmfix report</title><style>{_CSS}</style></head><body>",
             "<h1>lmfix report</h1>", html_table(TABLE, results["variants"])]
    parts += [f'<p class="warn">{e(n)}</p>' for n in results["notes"]]
    if results["not_complete"]:
        parts.append("<ul>" + "".join(f"<li>{e(_not_complete_line(p))}</li>"
                                      for p in results["not_complete"]) + "</ul>")
    parts.append(f"<p>{plain(HOW_TO_READ.format(baseline=baseline))}</p>")
    if results.get("comparison"):
        ref = results["baseline"]["comparison"]
        parts.append(f"<h2>Compared with {e(ref)}</h2>"
                     f"<p>{plain(COMPARISON_TEXT.format(baseline=ref))}</p>"
                     + html_table(COMPARISON_TABLE, results["comparison"]))
    if results.get("pareto_front"):
        parts.append(f"<h2>Pareto front</h2><p>{e(PARETO_TEXT)}</p>"
                     + html_table(PARETO_TABLE, results["pareto_front"]))
    if results.get("intrinsic"):
        parts.append(f"<h2>Embedding quality beside perplexity</h2><p>{plain(INTRINSIC_TEXT)}"
                     "</p>" + html_table(INTRINSIC_TABLE, results["intrinsic"]))
    parts.append("<h2>Plots</h2>" + "".join(img(results["plots"].get(key), title)
                                            for key, title in _PLOTS))
    cmds = "\n".join(f"# {name}\n{command}" for name, command in _commands(results))
    parts.append(f"<h2>Commands</h2><pre>{e(cmds)}</pre><h2>Environment</h2><ul>")
    parts += [f"<li>{e(k)}: {e(v)}</li>" for k, v in results["environment"].items()]
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)
