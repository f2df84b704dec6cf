"""The lmfix package's import graph, read from the source with ast (lmfix is never imported).

A cycle works only while every module in it happens to import names defined before the
import that closes the loop, and breaks on a harmless reordering; run -> report ties
training to the plotting and rendering stack that only ``lmfix report`` needs.
"""

from __future__ import annotations

import ast
import re
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
    """train.py holds the loop a reader of the PyTorch example recognizes: no function over ~60
    lines, and train_one_epoch makes the example's calls in the example's order (batch,
    zero_grad, forward, loss, backward, clip, step); the rest lives beside it (issue 21)."""
    import dataclasses

    from lmfix import train_state
    tree = ast.parse((PACKAGE / "train.py").read_text())
    funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in funcs.values()
            if n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"functions over 60 lines in train.py: {', '.join(long)}"
    assert dataclasses.is_dataclass(train_state.TrainState)
    assert call_order(funcs["train_one_epoch"]) == EXAMPLE_STEP, call_order(
        funcs["train_one_epoch"])


EXAMPLE_STEP = ["get_batch", "zero_grad", "net", "loss", "backward", "clip_grad_norm_", "step"]


def call_order(func: ast.FunctionDef) -> list[str]:
    """The example's step calls in ``func``'s loop body, in source order."""
    loop = next(n for n in ast.walk(func) if isinstance(n, ast.For))
    names = []
    for node in ast.walk(ast.Module(body=loop.body, type_ignores=[])):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in EXAMPLE_STEP:
                names.append((node.lineno, node.col_offset, name))
    return [n for *_, n in sorted(names)]


def test_call_order_sees_a_step_out_of_place():
    """The check above fails on a loop that steps before it backpropagates."""
    bad = ast.parse("def f(run):\n    for b in x:\n        x, y = get_batch(d)\n"
                    "        run.opt.zero_grad()\n        out = run.net(x)\n"
                    "        loss = m.loss(out)\n        run.opt.step()\n"
                    "        loss.backward()\n        clip_grad_norm_(p)\n").body[0]
    assert call_order(bad) != EXAMPLE_STEP


# --- one owner per concept ----------------------------------------------------------------


def tokenizer_decisions(path: Path) -> list[str]:
    """Places in ``path`` that decide between word-level and SentencePiece tokens: an
    isinstance check against a tokenizer class, or a comparison involving a tokenizer kind
    ("word", "sentencepiece") or a ``.kind`` attribute."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    kinds = {"word", "sentencepiece"}
    classes = {"WordTokenizer", "SentencePieceTokenizer"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            names = {getattr(n, "id", getattr(n, "attr", "")) for n in ast.walk(node)}
            if names & classes:
                found.append(f"{path.name}:{node.lineno} isinstance")
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(isinstance(p, ast.Constant) and p.value in kinds for p in parts) or \
                    any(isinstance(p, ast.Attribute) and p.attr == "kind"
                        and "tok" in ast.unparse(p.value) for p in parts):
                found.append(f"{path.name}:{node.lineno} comparison")
    return found


def test_one_module_owns_the_word_or_subword_decision():
    """Only lmfix/tokenizer.py decides between word and SentencePiece tokens (issue 21)."""
    offenders = [hit for p in sorted(PACKAGE.rglob("*.py")) if p.name != "tokenizer.py"
                 for hit in tokenizer_decisions(p)]
    assert not offenders, offenders
    assert len(tokenizer_decisions(PACKAGE / "tokenizer.py")) >= 3  # the decisions are there


def test_the_decision_detector_finds_each_spelling(tmp_path):
    f = tmp_path / "m.py"
    for code in ("isinstance(tok, WordTokenizer)", "isinstance(t, tokenizer.SentencePieceTokenizer)",
                 "tok.kind == 'word'", "'sentencepiece' != x", "a.tokenizer.kind in ('x',)",
                 "identity.get('kind') == 'word'"):
        f.write_text(f"if {code}:\n    pass\n")
        assert tokenizer_decisions(f), code
    f.write_text("if tok.tokens_are_words or a.dtype.kind in 'fiu':\n    pass\n"
                 "x = {'kind': 'word'}\n")
    assert not tokenizer_decisions(f)


def test_status_json_has_one_reader_and_writer(tmp_path):
    """Only lmfix/rundir.py (RunDir) names a run's status.json as a path to read or write,
    and only it holds the status transitions (issue 21)."""
    def paths(p: Path) -> list[str]:  # the file name as a string of its own (not a message)
        return [f"{p.name}:{n.lineno}" for n in ast.walk(ast.parse(p.read_text()))
                if isinstance(n, ast.Constant) and n.value == "status.json"]
    offenders = [hit for p in PACKAGE.rglob("*.py") if p.name != "rundir.py" for hit in paths(p)]
    assert not offenders, offenders
    assert len(paths(PACKAGE / "rundir.py")) == 1  # STATUS = "status.json"
    planted = tmp_path / "planted.py"  # the check sees a second reader
    planted.write_text("import json\nx = json.load(open(d / 'status.json'))\n")
    assert paths(planted)


def test_inference_imports_the_model_not_training():
    """lmfix.load (inference) uses the model and the scoring, never the training code, as
    nanoGPT's sample.py imports only the model (issue 21)."""
    graph = import_graph()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    assert not {"lmfix.train", "lmfix.train_state", "lmfix.run"} & reach("lmfix.inference")
    assert "lmfix.evaluation" in graph["lmfix.train"] and "lmfix.evaluation" in graph[
        "lmfix.inference"]


def test_the_fast_lane_leaves_out_only_registered_markers():
    """`pytest -m` with a misspelt marker silently selects everything; and a marker left out
    of the lane's expression would slow the inner loop without anyone noticing."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "test.sh").read_text()
    expr = re.search(r'fast=\(-m "([^"]+)"\)', script).group(1)
    named = set(re.findall(r"not (\w+)", expr))
    config = tomllib.loads((root / "pyproject.toml").read_text())
    registered = {m.split(":")[0] for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    assert named == registered
