"""The README stays true to the tree: its layout section names every module and script."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layout_section_names_every_module_and_script():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout of the code"):]
    missing = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "lmfix").rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py") and p.name not in layout]
    missing += [f"scripts/{p.name}" for p in sorted((ROOT / "scripts").iterdir())
                if p.is_file() and p.name not in layout]
    assert not missing, f"README layout section does not mention: {', '.join(missing)}"
