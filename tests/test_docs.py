"""The README and docs/ stay true: docs/cli.md is the parser's own text, every relative link and
anchor resolves, and the README is a newcomer's entry of at most ~250 lines (issue 21)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "data" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_cli_reference_is_generated_from_the_parser():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_cli_doc.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    out, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            out.add(slug(m[1]))
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"[a-z]+:", target):  # http(s):, mailto: — not checked offline
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_link_check_finds_a_broken_one(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A `b` c\n\n[x](p.md#a-b-c) [y](p.md#nope) [z](missing.md)\n")
    assert anchors(page) == {"a-b-c"} and links(page) == ["p.md#a-b-c", "p.md#nope",
                                                          "missing.md"]


def test_readme_is_one_screen_and_points_to_the_reference():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for doc in ("cli.md", "results.md", "embeddings.md", "running.md", "performance.md",
                "api.md", "models.md"):
        assert (ROOT / "docs" / doc).is_file() and f"docs/{doc}" in text, doc


def test_models_doc_states_each_model_default():
    """docs/models.md spells out MODEL_DEFAULTS; changing a default without the doc fails."""
    from lmfix.config import MODEL_DEFAULTS
    from lmfix.flags import format_number

    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for model, defaults in MODEL_DEFAULTS.items():
        for name, value in defaults.items():
            flag = f"--{name.replace('_', '-')} {format_number(value)}"
            assert flag in text, f"docs/models.md does not state {model}'s {flag}"
