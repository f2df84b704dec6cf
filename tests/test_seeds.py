"""Numbers you can trust (issue 23): every variant at several seeds, mean ± sd, a comparison
with a reference variant by Welch's t-test, and runs pooled only when they differ in seed."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats as sps

from lmfix import stats
from lmfix.cli import main
from lmfix.report import write_report

TINY = ["--emsize", "8", "--batch-size", "4", "--bptt", "8", "--lr", "5", "--epochs", "1",
        "--quiet"]


# --- the statistics, against scipy on fixed numbers ------------------------------------------


def test_describe_and_welch_against_scipy():
    a, b = [281.2, 279.5, 284.0, 280.1], [300.3, 296.0, 305.2]
    d = stats.describe(a)
    assert d["n"] == 4 and d["mean"] == pytest.approx(sum(a) / 4)
    assert d["sd"] == pytest.approx(float(sps.tstd(a)))  # sample sd, ddof = 1
    w = stats.welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert w["p"] == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert w["diff"] == pytest.approx(sum(a) / 4 - sum(b) / 3)
    assert w["diff_pct"] == pytest.approx(100 * w["diff"] / (sum(b) / 3))
    ci = ref.confidence_interval(0.95)  # scipy's own Welch interval for the difference
    assert w["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-9)
    assert w["verdict"] == "better" and w["ci95"][1] < 0
    assert stats.welch(b, a)["verdict"] == "worse"


def test_close_variants_are_not_distinguishable_and_one_seed_gets_no_p_value():
    w = stats.welch([281.0, 279.0, 283.0], [282.0, 280.0, 284.5])
    assert w["p"] > 0.05 and w["verdict"] == "not distinguishable at these seeds"
    assert w["ci95"][0] < 0 < w["ci95"][1]
    one = stats.welch([281.0], [282.0, 280.0])
    assert one["p"] is None and one["ci95"] is None and one["verdict"] == stats.NO_TEST
    assert one["diff"] == pytest.approx(0.0)
    same = stats.welch([5.0, 5.0], [6.0, 6.0])  # no spread: the difference is exact
    assert same["ci95"] == [-1.0, -1.0] and same["verdict"] == "better"
    assert stats.describe([3.0])["sd"] is None


# --- lmfix run --seeds, and the report over seeds --------------------------------------------


def run_cmd(data, out, *extra) -> list[str]:
    return ["run", "--data", str(data), "--out", str(out), "--variants",
            "learned,word2vec,random-orthogonal", *TINY, *extra]


def test_seeds_train_each_variant_once_per_seed_and_the_report_pools_them(
        tiny_corpus_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(run_cmd(tiny_corpus_dir, out)) == 0  # one seed first, as today
    learned = out / "runs" / "learned" / "summary.json"
    first = learned.stat().st_mtime_ns
    capsys.readouterr()
    assert main(run_cmd(tiny_corpus_dir, out, "--seeds", "3")) == 0  # extended to three
    printed = capsys.readouterr().out
    assert printed.count("finished already, kept") == 3  # the first seed is never retrained
    assert learned.stat().st_mtime_ns == first
    dirs = sorted(p.name for p in (out / "runs").iterdir())
    assert dirs == sorted(f"{v}{s}" for v in ("learned", "word2vec", "random-orthogonal")
                          for s in ("", "-seed-1112", "-seed-1113"))
    assert (out / "embeddings" / "word2vec-d8-seed-1113.bin").is_file()  # per-seed embedding
    seeds = {json.loads((out / "runs" / d / "summary.json").read_text())["seed"] for d in dirs}
    assert seeds == {1111, 1112, 1113}

    results = json.loads((out / "results.json").read_text())
    variants = {v["name"]: v for v in results["variants"]}
    assert set(variants) == {"learned", "word2vec", "random-orthogonal"}
    for name, v in variants.items():
        runs = [r for r in results["runs"] if r["variant"] == name]
        vals = [r["val_ppl"] for r in runs]
        assert v["n"] == 3 and sorted(v["seeds"]) == [1111, 1112, 1113] and len(runs) == 3
        assert v["val_ppl"] == pytest.approx(sum(vals) / 3)
        assert v["val_ppl_sd"] == pytest.approx(float(sps.tstd(vals)))
    comp = {c["name"]: c for c in results["comparison"]}
    assert set(comp) == {"word2vec", "random-orthogonal"}
    for name, c in comp.items():
        mine = [r["test_ppl"] for r in results["runs"] if r["variant"] == name]
        ref = [r["test_ppl"] for r in results["runs"] if r["variant"] == "learned"]
        assert c["test"]["p"] == pytest.approx(
            float(sps.ttest_ind(mine, ref, equal_var=False).pvalue))
    md = (out / "report.md").read_text()
    assert "## Compared with learned" in md and " ± " in md
    v = variants["word2vec"]
    assert f"{v['val_ppl']:,.2f} ± {v['val_ppl_sd']:,.2f}" in md
    with open(out / "results.csv") as f:
        assert len(f.read().splitlines()) == 1 + 9  # every seed's row


def test_one_seed_says_no_test_is_possible(tiny_corpus_dir, tmp_path):
    out = tmp_path / "o"
    assert main(run_cmd(tiny_corpus_dir, out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert all(c["val"]["verdict"] == "no test possible with one seed" and c["val"]["p"] is None
               for c in results["comparison"])
    assert "no test possible with one seed" in (out / "report.md").read_text()


def test_runs_of_several_directories_pool_only_when_they_differ_in_seed(tiny_corpus_dir,
                                                                        tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(run_cmd(tiny_corpus_dir, a)) == 0
    assert main(run_cmd(tiny_corpus_dir, b, "--seed", "7")) == 0
    assert main(run_cmd(tiny_corpus_dir, c, "--seed", "8", "--dropout", "0.1")) == 0
    results = write_report([a, b, c], tmp_path / "rep")
    names = sorted(v["name"] for v in results["variants"])
    # a and b differ in seed only: pooled; c has another dropout: its own variants
    assert names == sorted(f"{v}{w}" for v in ("learned", "word2vec", "random-orthogonal")
                           for w in (" (a)", " (c)")) or names == sorted(
        f"{v}{w}" for v in ("learned", "word2vec", "random-orthogonal") for w in (" (b)", " (c)"))
    assert sorted(v["n"] for v in results["variants"]) == [1, 1, 1, 2, 2, 2]
    again = write_report([a, a / "runs"], tmp_path / "rep2")  # one run named twice: once
    assert all(v["n"] == 1 for v in again["variants"])


def test_rows_of_different_machine_settings_are_flagged(tiny_corpus_dir, tmp_path):
    out = tmp_path / "o"
    assert main(run_cmd(tiny_corpus_dir, out)) == 0
    s_path = out / "runs" / "word2vec" / "summary.json"
    s = json.loads(s_path.read_text())
    # another instruction set than this machine's (an AVX2 machine ran the others too)
    other = "AVX512" if s.get("cpu_capability") == "AVX2" else "AVX2"
    s["cpu_threads"], s["cpu_capability"] = 7, other
    s_path.write_text(json.dumps(s))
    notes = write_report([out], tmp_path / "rep")["notes"]
    assert any("different CPU thread counts" in n and "word2vec" in n for n in notes)
    assert any("different CPU instruction sets" in n and other in n for n in notes)


@pytest.mark.parametrize("extra,why", [
    (["--baseline", "nonesuch"], "--baseline 'nonesuch' is not a variant of this run"),
])
def test_a_baseline_that_is_not_a_variant_is_refused_before_training(tiny_corpus_dir, tmp_path,
                                                                     capsys, extra, why):
    assert main(run_cmd(tiny_corpus_dir, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_report_baseline_flag(tiny_corpus_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(run_cmd(tiny_corpus_dir, out, "--seeds", "2")) == 0
    assert main(["report", str(out), "--baseline", "word2vec"]) == 0
    comp = json.loads((out / "results.json").read_text())["comparison"]
    assert {c["name"] for c in comp} == {"learned", "random-orthogonal"}
    assert all(c["baseline"] == "word2vec" and c["n"] == 2 for c in comp)
    assert all(math.isfinite(c["val"]["p"]) for c in comp)
    capsys.readouterr()
    assert main(["report", str(out), "--baseline", "pmi"]) == 2
    assert "--baseline 'pmi' is not a variant of these runs" in capsys.readouterr().err
