"""Check the README's quick-preset table against a fresh report (opt-in: needs a real run).

    lmfix run --preset quick --data ../shared/data/wikitext-2 --out runs/quick
    python scripts/check_readme_quick.py runs/quick [--readme README.md] [--tolerance 0.01]

The frontier table likewise: ``python scripts/check_readme_quick.py runs/frontier --heading
"## The parameter frontier"`` (the first table of the README section the heading starts).

Rows are matched by variant, and every perplexity and parameter column the README's table has
is compared (it needs at least one perplexity). Where the README states a spread over seeds ("mean ± sd"), a
fresh report agrees when its perplexity (its mean, if it too ran several seeds) lies within
--spread standard deviations of the README's mean (default 2: about 95% of seeds, so a run on
another machine or at another seed passes unless it really differs); a single number may
differ by --tolerance (relative: thread counts and BLAS builds change the last digits).
Parameter counts must be equal, since any change there means the model itself changed. Exits
1 on a mismatch or a variant on one side only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HEADING = "## What the quick preset shows"
PPL_COLUMNS = ("val ppl", "test ppl", "test word ppl")
PARAM_COLUMNS = ("trainable params", "fixed params", "total params")


def first_table(lines: list[str]) -> list[dict[str, str]]:
    """Rows of the first Markdown table in ``lines``, as {header: cell}."""
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("|")), None)
    if start is None:
        raise ValueError("no table found")
    table = []
    for line in lines[start:]:
        if not line.lstrip().startswith("|"):
            break
        # A "|" inside a cell is written "\|" (lmfix.report_render does so).
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        table.append([c.strip().replace("\\|", "|") for c in cells])
    header, rows = table[0], table[2:]  # table[1] is the alignment row
    return [dict(zip(header, row)) for row in rows]


def section_lines(text: str, heading: str = HEADING) -> list[str]:
    """The lines under the first "## ..." heading starting with ``heading``, up to the next
    heading of level 1 or 2 (lines starting with "#" inside code blocks are not headings)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise ValueError(f"no heading starting with {heading!r}")
    out, fenced = [], False
    for line in lines[start + 1:]:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,2} ", line):
            break
        out.append(line)
    return out


def number(cell: str) -> float | None:
    """ "1,144.51 †" -> 1144.51; "298.65 ± 2.10" -> 298.65 (the mean); the report's dash for
    a missing value -> None."""
    return spread(cell)[0]


def spread(cell: str) -> tuple[float | None, float | None]:
    """(value or mean, sd or None) of a cell."""
    cell = cell.replace("†", "").replace(",", "").strip()
    if cell in ("", "—", "-"):
        return None, None
    mean, _, sd = cell.partition("±")
    return float(mean), (float(sd) if sd.strip() else None)


def compare(readme: list[dict], report: list[dict], tolerance: float,
            spreads: float = 2.0) -> list[str]:
    """One line per disagreement; empty if the tables agree."""
    a = {r.get("variant"): r for r in readme}
    b = {r.get("variant"): r for r in report}
    problems = [f"{v}: in the README only" for v in a if v not in b]
    problems += [f"{v}: in report.md only" for v in b if v not in a]
    for v in (v for v in a if v in b):
        cols = [c for c in PPL_COLUMNS + PARAM_COLUMNS if c in a[v]]  # the README's choice
        if not any(c in PPL_COLUMNS for c in cols):
            problems.append(f"{v}: the README row has no perplexity column")
        for col in cols:
            if col not in b[v]:
                problems.append(f"{v}: {col}: column missing in report.md")
                continue
            try:
                (x, sd), y = spread(a[v][col]), number(b[v][col])
            except ValueError:
                problems.append(f"{v}: {col}: not a number: README {a[v][col]!r}, "
                                f"report {b[v][col]!r}")
                continue
            if x == y:
                continue
            allowed = tolerance * abs(y) if y is not None else 0.0
            if sd is not None and col not in PARAM_COLUMNS:
                allowed = max(allowed, spreads * sd)
            if x is None or y is None or col in PARAM_COLUMNS or not abs(x - y) <= allowed:
                problems.append(f"{v}: {col}: README {a[v][col]} vs report {b[v][col]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_out_dir", type=Path, help="output of `lmfix run` (holds report.md)")
    p.add_argument("--readme", type=Path,
                   default=Path(__file__).resolve().parents[1] / "README.md")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="relative, for perplexities stated without a spread")
    p.add_argument("--spread", type=float, default=2.0,
                   help="standard deviations a fresh perplexity may lie from a README mean")
    p.add_argument("--heading", default=HEADING,
                   help="the README section whose first table is checked (default %(default)r)")
    args = p.parse_args(argv)
    report_md = args.run_out_dir / "report.md"
    try:
        readme = first_table(section_lines(args.readme.read_text(), args.heading))
        report = first_table(report_md.read_text().splitlines())
    except (OSError, ValueError) as e:
        print(f"check_readme_quick: {e}", file=sys.stderr)
        return 2
    problems = compare(readme, report, args.tolerance, args.spread)
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"README table under {args.heading!r} matches {report_md} ({len(readme)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
