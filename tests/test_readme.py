"""The README stays true to the tree: its layout section names every module and script by its
path (a whole path, so `train.py` does not pass for `lmfix/train_state.py`)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def named(path: str, text: str) -> bool:
    return re.search(rf"(?<![\w/.-]){re.escape(path)}(?![\w.-])", text) is not None


def layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Layout")
    end = readme.find("\n## ", start + 1)
    return readme[start: end if end > 0 else None]


def test_layout_section_names_every_module_and_script():
    layout = layout_section()
    files = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "lmfix").rglob("*.py"))
             if p.name not in ("__init__.py", "__main__.py")]
    files += [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "scripts").iterdir())
              if p.is_file()]
    missing = [f for f in files if not named(f, layout)]
    assert not missing, f"README layout section does not name: {', '.join(missing)}"


def test_a_name_inside_another_does_not_count():
    assert named("lmfix/train.py", "see `lmfix/train.py`.")
    assert not named("lmfix/train.py", "`lmfix/train_state.py`")
    assert not named("lmfix/run.py", "lmfix/rundir.py and tests/lmfix/run.py")
    assert not named("scripts/test.sh", "scripts/test.shx")
