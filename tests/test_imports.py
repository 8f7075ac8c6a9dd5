"""No module-level import cycle inside the memorybench package.

A cycle works only as long as the modules happen to be imported in the right order, and hiding one
behind a local import is how ``spec`` and ``generators`` grew tangled. The graph is read with
``ast`` from the sources: top-level ``import`` / ``from ... import`` statements (and those under a
top-level ``if``/``try``, but not under ``if TYPE_CHECKING:``); imports inside functions and classes
are deliberate laziness and are not edges. Importing a package runs its ``__init__``, so
``from .a.b import x`` is an edge to ``memorybench.a`` and to ``memorybench.a.b``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).parents[1] / "memorybench"


def module_name(path: Path, root: Path = PKG) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module):
    """Import nodes executed when the module is imported (not under ``if TYPE_CHECKING``)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test:
                stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])


def _targets(node: ast.AST, name: str, is_pkg: bool, known: set[str]) -> set[str]:
    """The package's modules an import statement of module ``name`` imports (with their parents)."""
    if isinstance(node, ast.Import):
        bases = [a.name for a in node.names]
    else:
        if node.level:
            anchor = name.split(".") if is_pkg else name.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        bases = [base] + [f"{base}.{a.name}" for a in node.names]
    out = set()
    for b in bases:
        parts = b.split(".")
        for i in range(1, len(parts) + 1):
            cand = ".".join(parts[:i])
            if cand in known:
                out.add(cand)
    return out


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _top_level_imports(tree):
            edges |= _targets(node, name, is_pkg, known)
        # a module's own package __init__ runs first: not an edge of the module's making
        graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (``[a, b, ..., a]``) of the directed graph, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]


def test_the_graph_reads_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "memorybench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from .sub import b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n"
    )
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..a import x\ndef f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import memorybench.sub.b\n")
    graph = import_graph(pkg)
    assert graph["memorybench.a"] == {"memorybench.sub", "memorybench.sub.b"}
    assert graph["memorybench.sub.b"] == {"memorybench.a"}
    assert graph["memorybench.c"] == {"memorybench.sub", "memorybench.sub.b"}
    assert find_cycle(graph) == ["memorybench.a", "memorybench.sub.b", "memorybench.a"]


def test_memorybench_has_no_module_level_import_cycle():
    graph = import_graph()
    assert "memorybench.taskfile" in graph and "memorybench.generators" in graph["memorybench.taskfile"]
    cycle = find_cycle(graph)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


# The modules a newcomer reads first keep their functions short (issue 18: "no function over ~60
# lines in the runner, training and CLI modules"); Typer's option declarations count.
SHORT = ["runner.py", "train.py", "summarize.py", "references.py", "taskfile.py", "cli"]
MAX_LINES = 60


def long_functions(root: Path = PKG, names=SHORT, limit: int = MAX_LINES) -> list[str]:
    files = [p for n in names for p in ([root / n] if n.endswith(".py") else sorted((root / n).glob("*.py")))]
    out = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{path.relative_to(root)}:{node.name} ({n} lines)")
    return out


def test_the_length_check_sees_a_long_function(tmp_path):
    (tmp_path / "runner.py").write_text("def f():\n" + "    x = 1\n" * 70 + "\ndef g():\n    pass\n")
    assert long_functions(tmp_path, ["runner.py"]) == ["runner.py:f (71 lines)"]


def test_entry_point_functions_stay_short():
    assert long_functions() == []
