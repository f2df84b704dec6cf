"""Where a number came from: library versions and the lmfix commit, recorded with every run
and every embedding file (as modded-nanogpt keeps each record's code version and environment).
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
from pathlib import Path

from ._version import __version__


def versions(*packages: str) -> dict:
    """lmfix, Python and torch versions, plus those of ``packages`` (e.g. "gensim")."""
    out = {"lmfix": __version__, "python": platform.python_version()}
    for name in ("torch", *packages):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The lmfix source commit, so a number can be traced to the code that made it."""
    git = shutil.which("git")
    if not git:
        return None
    try:
        r = subprocess.run([git, "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"],
                           cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    return r.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
