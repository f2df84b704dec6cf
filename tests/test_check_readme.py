"""scripts/check_readme_quick.py on small made-up README and report texts (no training)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_readme_quick.py"
spec = importlib.util.spec_from_file_location("check_readme_quick", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

HEAD = ("| variant | tied | trainable params | fixed params | total params | val ppl | test ppl "
        "| test word ppl | device |\n|:---|:---|---:|---:|---:|---:|---:|---:|:---|\n")
README = f"""# lmfix

## What the quick preset shows

Some words.

{HEAD}| learned | yes | 2,229,630 | 0 | 2,229,630 | 793.66 | 740.77 | 740.77 | cpu |
| a\\|b | yes | 99,839 | 2,129,792 | 2,229,631 | 1,144.51 | 1,067.30 | — | cpu |

```sh
# learned
```

## Another section

{HEAD}| learned | yes | 1 | 1 | 2 | 1.00 | 1.00 | 1.00 | cpu |
"""


def report(val_ppl="1,144.51 †", total="2,229,631", extra=""):
    return (f"# lmfix report\n\n{HEAD}"
            "| learned | yes | 2,229,630 | 0 | 2,229,630 | 795.00 | 741.00 | 740.77 | gpu |\n"
            f"| a\\|b | yes | 99,839 | 2,129,792 | {total} | {val_ppl} | 1,067.30 | — | gpu |\n"
            f"{extra}\n- a note\n")


def rows(text):
    return check.first_table(text.splitlines())


def test_parsing():
    readme = check.first_table(check.section_lines(README))
    assert [r["variant"] for r in readme] == ["learned", "a|b"]
    assert check.number(readme[1]["val ppl"]) == 1144.51
    assert check.number("1,144.51 †") == 1144.51 and check.number("—") is None
    assert check.number(readme[1]["total params"]) == 2229631


def test_compare():
    readme = check.first_table(check.section_lines(README))
    assert check.compare(readme, rows(report()), 0.01) == []
    assert check.compare(readme, rows(report()), 0.001) == [
        "learned: val ppl: README 793.66 vs report 795.00"]
    assert check.compare(readme, rows(report(val_ppl="1,200.00", total="2,229,632")), 0.01) == [
        "a|b: val ppl: README 1,144.51 vs report 1,200.00",
        "a|b: total params: README 2,229,631 vs report 2,229,632"]
    extra = "| new | yes | 1 | 0 | 1 | 1.00 | 1.00 | 1.00 | gpu |\n"
    assert check.compare(readme, rows(report(extra=extra)), 0.01) == ["new: in report.md only"]
    assert check.compare(readme + [{"variant": "old"}], rows(report()), 0.01) == [
        "old: in the README only"]


def test_main(tmp_path, capsys):
    (tmp_path / "README.md").write_text(README)
    out = tmp_path / "quick"
    out.mkdir()
    (out / "report.md").write_text(report())
    assert check.main([str(out), "--readme", str(tmp_path / "README.md")]) == 0
    assert capsys.readouterr().out == (f"README table under {check.HEADING!r} matches "
                                       f"{out}/report.md (2 rows)\n")
    (out / "report.md").write_text(report(total="2,229,632"))
    assert check.main([str(out), "--readme", str(tmp_path / "README.md")]) == 1
    assert "a|b: total params" in capsys.readouterr().out
    assert check.main([str(tmp_path), "--readme", str(tmp_path / "README.md")]) == 2
    # --heading picks another section's first table: it has other numbers, so it disagrees
    assert check.main([str(out), "--readme", str(tmp_path / "README.md"),
                       "--heading", "## Another section"]) == 1
    assert "learned: val ppl: README 1.00" in capsys.readouterr().out
    assert check.main([str(out), "--readme", str(tmp_path / "README.md"),
                       "--heading", "## Missing"]) == 2


@pytest.mark.parametrize("heading", [check.HEADING, "## The parameter frontier"])
def test_readme_table_parses(heading):
    """The tables check_readme_quick.py compares against a run: quick and frontier."""
    text = (SCRIPT.parents[1] / "README.md").read_text()
    readme = check.first_table(check.section_lines(text, heading))
    assert readme and all(r["variant"] for r in readme)
    for r in readme:
        cols = [c for c in check.PPL_COLUMNS + check.PARAM_COLUMNS if c in r]
        assert any(c in check.PPL_COLUMNS for c in cols)
        for col in cols:
            assert check.number(r[col]) is not None, (r["variant"], col)


def test_a_stated_spread_accepts_a_fresh_run_within_it():
    """A README mean ± sd over seeds accepts another machine's or seed's run within 2 sd
    (issue 23), and still refuses one outside it."""
    readme = rows(f"{HEAD}| learned | yes | 2,229,630 | 0 | 2,229,630 | 800.00 ± 10.00 | "
                  "740.00 ± 5.00 | 740.00 ± 5.00 | cpu |\n")
    assert check.spread("800.00 ± 10.00") == (800.0, 10.0) and check.number("8 ± 1") == 8.0

    def fresh(val, test):
        return rows(f"{HEAD}| learned | yes | 2,229,630 | 0 | 2,229,630 | {val} | {test} | "
                    f"{test} | gpu |\n")
    assert check.compare(readme, fresh("819.00", "731.00"), 0.01) == []
    assert check.compare(readme, fresh("815.00 ± 3.00", "749.90"), 0.01) == []
    assert check.compare(readme, fresh("821.00", "740.00"), 0.01) == [
        "learned: val ppl: README 800.00 ± 10.00 vs report 821.00"]
    assert check.compare(readme, fresh("821.00", "740.00"), 0.01, spreads=3.0) == []


def test_the_readme_may_show_a_subset_of_the_columns():
    short = rows("| variant | trainable params | val ppl |\n|:---|---:|---:|\n"
                 "| learned | 2,229,630 | 795.00 |\n")
    assert check.compare(short, rows(report()), 0.01) == ["a|b: in report.md only"]
    assert check.compare(rows("| variant | trainable params |\n|:---|---:|\n"
                              "| learned | 2,229,630 |\n"), rows(report()), 0.01) == [
        "a|b: in report.md only", "learned: the README row has no perplexity column"]
