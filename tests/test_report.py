"""lmfix.report on synthetic run directories (no training: the JSON files are written here)."""

from __future__ import annotations

import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lmfix.errors import LmfixError
from lmfix.report import collect_runs, read_metrics, write_report
from lmfix.report_render import TABLE, fmt_duration

COLUMNS = [c.name for c in TABLE]

V, D, H = 33278, 200, 200
LSTM = 2 * 4 * (H * (D + H) + 2 * H)  # two LSTM layers, two bias vectors each
EMB = V * D

# name -> (embedding, source, tied, fixed, trainable, fixed params, val ppl, test ppl, epochs)
RUNS = {
    "learned-untied": ("learned-untied", "learned", False, False, 2 * EMB + V + LSTM, 0,
                       121.456, 115.004, 3),
    "learned": ("learned", "learned", True, False, EMB + V + LSTM, 0, 118.3, 112.995, 3),
    "word2vec": ("/data/w2v.txt", "word2vec", True, True, V + LSTM + 1, EMB, 131.0, 125.5, 3),
}
PNG = b"\x89PNG\r\n\x1a\n"


def summary(name, embedding, source, tied, fixed, trainable, fixed_n, val, test, epochs, **kw):
    s = {
        "name": name, "embedding": embedding, "embedding_source": source, "tied": tied,
        "fixed": "both" if fixed else "none", "emsize": D, "nhid": H, "nlayers": 2,
        "vocab_size": V, "tokenizer": {"kind": "word"}, "seed": 1111,
        "params": {"trainable": trainable, "fixed": fixed_n, "total": trainable + fixed_n,
                   "embedding_trainable": 0 if fixed else EMB, "embedding_fixed": fixed_n},
        "val_loss": math.log(val), "val_ppl": val, "test_loss": math.log(test), "test_ppl": test,
        "epochs": epochs, "best_epoch": epochs, "train_tokens": 2_000_000,
        "tokens_per_s": 12345.6, "wall_s": 3725.0, "device": "cuda",
        "device_name": "NVIDIA H100 80GB HBM3", "final_scale": 4.2 if fixed else None,
        "eval_tokens": {"valid": 217646, "test": 245569}, "max_eval_tokens": None,
        "command": f"lmfix train --data data/wikitext-2 --embedding {embedding} --out runs/{name}",
        "versions": {"lmfix": "0.1.0", "torch": "2.13.0", "python": "3.11.7"},
        "git_commit": "abc123", "config": {},
    }
    s.update(kw)
    return s


def epoch_lines(val, epochs, fixed):
    """Epoch records (val ppl falling) and, for fixed variants, step records with the scale,
    growing like log(tokens) as the paper observed."""
    def scale(tokens):
        return 1.0 + 0.5 * math.log(tokens / 1e4) if fixed else None

    out = []
    for e in range(1, epochs + 1):
        start, tok = (e - 1) * 700_000, e * 700_000
        if fixed:
            out += [{"kind": "step", "epoch": e, "step": s, "tokens_seen": start + s * 700,
                     "train_loss": 5.0, "lr": 20.0, "scale": scale(start + s * 700)}
                    for s in (200, 400, 800)]
        out.append({"kind": "epoch", "epoch": e, "train_loss": 5.0, "train_ppl": 150.0,
                    "val_loss": math.log(val * (1 + (epochs - e) * 0.3)),
                    "val_ppl": val * (1 + (epochs - e) * 0.3), "lr": 20.0, "scale": scale(tok),
                    "tokens_per_s": 12000.0, "seconds": 60.0, "tokens_seen": tok})
    return [json.dumps(r) for r in out]


def make_run(root: Path, name: str, status="finished", error=None, summ=None, metrics=None,
             extra_metrics_text="") -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"name": name}))
    (d / "status.json").write_text(json.dumps(
        {"status": status, "error": error, "updated": "2025-01-01T00:00:00"}))
    if summ is not None:
        (d / "summary.json").write_text(json.dumps(summ))
    if metrics is not None:
        (d / "metrics.jsonl").write_text("\n".join(metrics) + "\n" + extra_metrics_text)
    return d


def make_fixture(root: Path) -> list[Path]:
    dirs = []
    for name, (emb, src, tied, fixed, tr, fx, val, test, ep) in RUNS.items():
        dirs.append(make_run(root, name, summ=summary(name, emb, src, tied, fixed, tr, fx, val,
                                                      test, ep),
                             metrics=epoch_lines(val, ep, fixed),
                             # a crash mid-write leaves half a line at the end
                             extra_metrics_text='{"kind": "step", "epo' if fixed else ""))
    dirs.append(make_run(root, "hadamard-crashed", status="failed",
                         error="RuntimeError: CUDA out of memory",
                         metrics=epoch_lines(300.0, 1, True)))
    return dirs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = tmp_path_factory.mktemp("report")
    results = write_report(make_fixture(root), out)
    return results, out, root


def md_rows(out: Path) -> dict[str, dict[str, str]]:
    """The rows of report.md's first table (the variants'), each {column: cell}."""
    rows, header = {}, None
    for line in (out / "report.md").read_text().split("\n\n")[1].splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if header is None:
            header = cells
        elif not line.startswith("|:") and not line.startswith("|-"):
            rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_table_values(report):
    _, out, _ = report
    rows = md_rows(out)
    assert list(rows) == ["learned-untied", "learned", "word2vec"]  # most trainable first
    base = RUNS["learned-untied"][4]
    for name, (_, src, tied, fixed, tr, fx, val, test, ep) in RUNS.items():
        r = rows[name]
        assert r["embedding"] == src
        assert r["tied"] == ("yes" if tied else "no") and r["fixed"] == ("both" if fixed else "none")
        assert r["d"] == "200" and r["tokenizer"] == "word" and r["seeds"] == "1"
        assert r["trainable params"] == f"{tr:,}" and r["fixed params"] == f"{fx:,}"
        assert r["total params"] == f"{tr + fx:,}"
        assert r["trainable % of baseline"] == f"{100 * tr / base:.1f}%"
        assert r["val ppl"] == f"{val:.2f}" and r["test ppl"] == f"{test:.2f}"  # one seed: no ±
        assert r["epochs"] == str(ep) and r["wall time"] == "1 h 02 min"
        assert r["tokens/s"] == "12,346" and r["device"] == "NVIDIA H100 80GB HBM3"
    assert rows["learned-untied"]["trainable % of baseline"] == "100.0%"
    assert rows["learned-untied"]["trainable params"] == "13,987,678"  # the arithmetic above
    assert rows["word2vec"]["val ppl"] == "131.00" and rows["learned-untied"]["test ppl"] == "115.00"
    assert rows["word2vec"]["trainable % of baseline"] == "4.8%"  # a few % of the baseline


def test_report_text(report):
    _, out, _ = report
    md = (out / "report.md").read_text()
    for name, (emb, *_rest) in RUNS.items():
        assert f"lmfix train --data data/wikitext-2 --embedding {emb} --out runs/{name}" in md
    assert "lmfix version: 0.1.0" in md and "git commit: abc123" in md
    assert "torch version: 2.13.0" in md and "NVIDIA H100" in md
    assert "How to read this table" in md
    assert "†" not in md  # no partial evaluation in this fixture


def test_failed_run_listed_not_dropped(report):
    results, out, _ = report
    line = ("not complete: hadamard-crashed (failed, RuntimeError: CUDA out of memory, "
            "last update 2025-01-01T00:00:00)")
    assert line in (out / "report.md").read_text()
    assert "not complete: hadamard-crashed" in (out / "index.html").read_text()
    assert [p["name"] for p in results["not_complete"]] == ["hadamard-crashed"]
    assert results["not_complete"][0]["status"] == "failed"
    assert "hadamard-crashed" not in md_rows(out)


def test_csv_and_json_agree_with_summaries(report, tmp_path):
    results, out, root = report
    with open(out / "results.csv", newline="") as f:
        csv_rows = {r["name"]: r for r in csv.DictReader(f)}
    js = json.loads((out / "results.json").read_text())
    assert js == json.loads(json.dumps(results))  # the returned dict is what was written
    js_rows = {r["name"]: r for r in js["runs"]}
    assert set(csv_rows) == set(js_rows) == set(RUNS)
    base = RUNS["learned-untied"][4]
    for name in RUNS:
        s = json.loads((root / name / "summary.json").read_text())
        c, j = csv_rows[name], js_rows[name]
        for key in ("trainable", "fixed", "total"):
            assert int(c[f"params_{key}"]) == j[f"params_{key}"] == s["params"][key]
        for key in ("val_ppl", "test_ppl", "val_loss", "wall_s", "tokens_per_s"):
            assert float(c[key]) == pytest.approx(j[key]) and j[key] == s[key]
        assert c["tied"] == ("true" if s["tied"] else "false") and j["tied"] is s["tied"]
        assert float(c["trainable_pct_of_baseline"]) == pytest.approx(
            100 * s["params"]["trainable"] / base)
        assert c["command"] == j["command"] == s["command"]
        assert c["max_eval_tokens"] == "" and j["max_eval_tokens"] is None
    assert js["baseline"]["params_run"] == "learned-untied"


def test_plots_written(report):
    results, out, _ = report
    assert results["plots"] == {"val_ppl": "val_ppl.png", "scale": "scale.png",
                                "params": "params.png", "frontier": "frontier.png"}
    for name in ("val_ppl.png", "scale.png", "params.png", "frontier.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries behind


def test_index_html(report):
    _, out, _ = report
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4  # + frontier.png (3 finished runs)
    assert "http://" not in page and "https://" not in page  # works offline
    for name in RUNS:
        assert f"<tr><td>{name}</td>" in page
    assert "13,987,678" in page and "<pre>" in page and "lmfix train --data" in page


NUMERIC = {"d", "seeds", "trainable params", "fixed params", "total params", "trainable % of baseline",
           "val ppl", "test ppl", "test word ppl", "epochs", "wall time", "tokens/s"}


class _Cells(HTMLParser):
    """Each <td>'s class and the <div> classes around the table cells."""

    def __init__(self):
        super().__init__()
        self.tds, self.divs, self.td_divs = [], [], set()

    def handle_starttag(self, tag, attrs):
        if tag == "div":
            self.divs.append(dict(attrs).get("class"))
        elif tag == "td":
            self.tds.append(dict(attrs).get("class"))
            self.td_divs.add(tuple(self.divs))

    def handle_endtag(self, tag):
        if tag == "div":
            self.divs.pop()


def test_column_alignment_follows_definition(report):
    _, out, _ = report
    assert {c.name for c in TABLE if c.numeric} == NUMERIC
    md = (out / "report.md").read_text().splitlines()
    align = md[md.index("| " + " | ".join(COLUMNS) + " |") + 1].strip("|").split("|")
    assert align == ["---:" if c in NUMERIC else ":---" for c in COLUMNS]
    cells = _Cells()
    page = (out / "index.html").read_text()
    cells.feed(page[: page.index("</table>")])  # the runs' table (the Pareto front's follows)
    assert len(cells.tds) == len(RUNS) * len(COLUMNS)
    for i, cls in enumerate(cells.tds):
        name = COLUMNS[i % len(COLUMNS)]
        assert cls == ("n" if name in NUMERIC else None), name
    by_name = dict(zip(COLUMNS, cells.tds))
    assert by_name["tokens/s"] == "n" and by_name["tokenizer"] is None


def test_html_table_scrolls_in_its_own_box(report):
    _, out, _ = report
    page = (out / "index.html").read_text()
    cells = _Cells()
    cells.feed(page)
    assert cells.td_divs == {("tablewrap",)}  # every cell, and so the table, inside the wrapper
    assert re.search(r"\.tablewrap\{[^}]*overflow-x:auto", page)


def test_truncated_metrics_line_tolerated(report):
    results, out, root = report
    recs, skipped = read_metrics(root / "word2vec" / "metrics.jsonl")
    assert skipped == 1 and len(recs) == 12 and recs[-1]["kind"] == "epoch"
    assert any("word2vec: skipped 1 unreadable line" in n for n in results["notes"])


def test_parent_directory_expansion(tmp_path):
    root = tmp_path / "OUT"
    make_fixture(root / "runs")
    runs = collect_runs([root])
    assert sorted(r["name"] for r in runs) == sorted([*RUNS, "hadamard-crashed"])
    runs = collect_runs([root / "runs", root / "runs" / "learned"])  # named twice: counted once
    assert len(runs) == 4


def test_partial_eval_no_baseline_no_scale(tmp_path):
    # Two tied learned runs only: no baseline, no fixed variant, one partially evaluated.
    d1 = make_run(tmp_path / "r", "a|b", summ=summary("a|b", "learned", "learned", True, False,
                                                      1000, 0, 50.0, 60.0, 1, wall_s=42.4),
                  metrics=epoch_lines(50.0, 1, False))
    d2 = make_run(tmp_path / "r", "c", summ=summary("<c&>", "learned", "learned", True, False,
                                                    900, 0, 55.0, 66.0, 1,
                                                    max_eval_tokens=20000))
    out = tmp_path / "rep"
    (out).mkdir()
    (out / "scale.png").write_bytes(PNG)  # stale, from an earlier report
    results = write_report([d1, d2], out)
    md = (out / "report.md").read_text()
    rows = md_rows(out)
    assert rows["<c&>"]["val ppl"] == "55.00 †" and rows["<c&>"]["test ppl"] == "66.00 †"
    assert rows["a\\|b"]["trainable % of baseline"] == "—"  # no baseline; "|" escaped, intact
    assert rows["a\\|b"]["wall time"] == "42 s"
    assert "partial evaluation" in md and "at most 20,000 tokens" in md
    assert "scale.png not written" in md and not (out / "scale.png").exists()
    assert results["plots"]["scale"] is None and results["baseline"]["params_run"] is None
    page = (out / "index.html").read_text()
    assert "&lt;c&amp;&gt;" in page and "<c&>" not in page
    assert page.count("data:image/png;base64,") == 2


def test_bad_inputs(tmp_path):
    with pytest.raises(LmfixError, match="no such directory"):
        write_report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmfixError, match="not a run directory"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(LmfixError, match="no run directories"):
        write_report([], tmp_path / "out")

    bad = make_run(tmp_path, "bad", summ=None)
    (bad / "summary.json").write_text('{"name": "bad", ')
    with pytest.raises(LmfixError, match=r"no finished runs.*bad.*summary.json"):
        write_report([bad], tmp_path / "out")
    s = summary("bad", "learned", "learned", True, False, 1, 0, 1.0, 1.0, 1)
    del s["params"]["trainable"]
    (bad / "summary.json").write_text(json.dumps(s))
    with pytest.raises(LmfixError, match=r"malformed summary.json: 'params.trainable'"):
        write_report([bad], tmp_path / "out")

    running = make_run(tmp_path, "running", status="running")
    failed = make_run(tmp_path, "failed", status="failed", error="boom")
    with pytest.raises(LmfixError, match=r"no finished runs.*running.*failed: boom"):
        write_report([running, failed], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fmt_duration():
    assert fmt_duration(0.25) == "0.2 s"
    assert fmt_duration(59) == "59 s"
    assert fmt_duration(61) == "1 min 01 s"
    assert fmt_duration(7260) == "2 h 01 min"
    assert fmt_duration(None) == "—"


def test_cli_style_error_is_one_line(tmp_path):
    # The CLI prints str(error) alone: make sure it names the path and is a single line.
    with pytest.raises(LmfixError) as e:
        write_report([tmp_path / "nope"], tmp_path / "out")
    assert str(tmp_path / "nope") in str(e.value) and "\n" not in str(e.value)
    assert re.search(r"no such directory$", str(e.value))


@pytest.mark.parametrize("field,value,why", [
    ("val_ppl", -5, "'val_ppl' should be a perplexity"),
    ("test_ppl", float("nan"), "'test_ppl' should be a perplexity"),
    ("val_ppl", 0.5, "'val_ppl' should be a perplexity"),
    ("fixed", True, "'fixed' should be both, input, output or none"),
])
def test_impossible_values_and_half_written_summaries_do_not_stop_the_report(
        tmp_path, field, value, why):
    """A summary with "val_ppl": -5 was shown as a normal row; one half-written summary made
    the whole report refuse (issue 22). Now that run alone is listed as not complete."""
    good = make_fixture(tmp_path / "r")
    odd = summary("odd", "learned", "learned", True, False, 1000, 0, 50.0, 60.0, 1)
    odd[field] = value
    d = make_run(tmp_path / "r", "odd", summ=odd)
    half = make_run(tmp_path / "r", "half", summ=None)
    (half / "summary.json").write_text('{"name": "half", "val_')
    results = write_report(good + [d, half], tmp_path / "out")
    assert {r["name"] for r in results["runs"]} == set(RUNS)
    pending = {p["name"]: p for p in results["not_complete"]}
    assert why in pending["odd"]["error"] and "half" in pending
    assert "not a readable JSON file" in pending["half"]["error"]
