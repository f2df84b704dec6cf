"""The lmfix package's import graph, read from the source with ast (lmfix is never imported).

A cycle works only while every module in it happens to import names defined before the
import that closes the loop, and breaks on a harmless reordering; run -> report ties
training to the plotting and rendering stack that only ``lmfix report`` needs.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmfix"

Graph = dict[str, dict[str, list[str]]]  # module -> imported module -> ["file:line", ...]


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name of every module under the package directory ``root``."""
    names = {}
    for f in sorted(root.rglob("*.py")):
        parts = [root.name, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = f
    return names


def imports_of(name: str, path: Path, label: str, modules: set[str]) -> dict[str, list[str]]:
    """The package's modules that ``path`` imports, anywhere in the file (functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, list[str]] = {}

    def add(target: str, node: ast.AST) -> None:
        if target not in modules or target == name:
            return
        where = found.setdefault(target, [])
        if f"{label}:{node.lineno}" not in where:  # "from x import a, b" is one line
            where.append(f"{label}:{node.lineno}")

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # "from ..errors import X" in lmfix/embeddings/ is lmfix.errors
                parts = package.split(".")[: package.count(".") + 2 - node.level]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # "from pkg import name" loads pkg.name when that is a submodule, else pkg.
                add(sub if sub in modules else base, node)
    return found


def import_graph(root: Path = PACKAGE) -> Graph:
    modules = module_names(root)
    return {name: imports_of(name, path, str(path.relative_to(root.parent)), set(modules))
            for name, path in modules.items()}


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def describe(cycle: list[str], graph: Graph) -> str:
    steps = [f"  {a} -> {b}   ({', '.join(graph[a][b])})" for a, b in zip(cycle, cycle[1:])]
    return "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_resolver_on_a_made_up_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "__version__ = '1'\n",
        "a.py": "from .b import x\nimport pkg.c\n",
        "b.py": "def f():\n    from . import c, __version__\n    from .sub import d, helper\n",
        "c.py": "import os\nfrom pkg.sub.d import y\n",
        "sub/__init__.py": "from .d import y\n",
        "sub/d.py": "from ..a import z\nfrom .. import b\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    graph = {m: set(t) for m, t in import_graph(pkg).items()}
    assert graph == {
        "pkg": set(), "pkg.a": {"pkg.b", "pkg.c"},
        "pkg.b": {"pkg.c", "pkg", "pkg.sub.d", "pkg.sub"},
        "pkg.c": {"pkg.sub.d"}, "pkg.sub": {"pkg.sub.d"}, "pkg.sub.d": {"pkg.a", "pkg.b"},
    }
    cycle = find_cycle(import_graph(pkg))
    assert cycle == ["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d", "pkg.a"]


def test_no_import_cycles():
    graph = import_graph()
    assert "lmfix.run" in graph and "lmfix.embeddings.build" in graph
    cycle = find_cycle(graph)
    assert cycle is None, describe(cycle, graph)


def test_run_does_not_import_report():
    where = import_graph()["lmfix.run"].get("lmfix.report")
    assert not where, f"lmfix.run imports lmfix.report at {', '.join(where)}"


def test_training_loop_stays_readable():
    """No function in train.py over ~60 lines, and the training state is one dataclass that
    a checkpoint stores as it is (issue 11)."""
    import dataclasses

    from lmfix import train
    tree = ast.parse((PACKAGE / "train.py").read_text())
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"functions over 60 lines in train.py: {', '.join(long)}"
    assert dataclasses.is_dataclass(train.TrainState) and callable(train.train_one_epoch)


def test_one_module_owns_the_word_or_subword_decision():
    """Only lmfix/tokenizer.py decides between word and SentencePiece tokens."""
    offenders = [p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")
                 if p.name != "tokenizer.py" and 'get("kind", "word")' in p.read_text()]
    assert not offenders, offenders
