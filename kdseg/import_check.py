"""``python -m kdseg.import_check``: import every module of kdseg, and find cycles among top-level imports.

Top-level means what a module imports when it is imported: statements at module level (including
``try``/``if`` blocks, not ``if TYPE_CHECKING:``), not imports inside functions. An edge goes to the
module named (``from kdseg.a import b`` reaches ``kdseg.a.b`` when that is a module, else ``kdseg.a``);
a package's ``__init__`` importing its own submodules is an edge like any other. Prints the longest
modules too. Exit status 1 when an import fails or a cycle exists.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import kdseg


def modules() -> dict[str, Path]:
    """Every module of kdseg: dotted name -> file."""
    out = {"kdseg": Path(kdseg.__file__)}
    for m in pkgutil.walk_packages(kdseg.__path__, "kdseg."):
        spec = importlib.util.find_spec(m.name)
        if spec is not None and spec.origin:
            out[m.name] = Path(spec.origin)
    return out


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    found: list[ast.stmt] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for h in node.handlers:
                    walk(h.body)
                walk(node.orelse)
                walk(node.finalbody)

    walk(tree.body)
    return found


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the kdseg modules it imports at top level."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            edges.update(t for t in targets if t in mods and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    mods = modules()
    failed = []
    for name in sorted(mods):
        if name.endswith(".__main__"):  # importing it runs the command
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # report them all, not the first
            failed.append(f"{name}: {type(e).__name__}: {e}")
    found = cycles(import_graph(mods))
    sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in mods.items()), reverse=True)
    print(f"{len(mods)} modules imported, {len(failed)} failed; {len(found)} import cycles")
    print("longest: " + ", ".join(f"{n} ({lines})" for lines, n in sizes[:5]))
    for line in failed:
        print(f"import failed: {line}")
    for comp in found:
        print("cycle: " + " <-> ".join(comp))
    return 1 if failed or found else 0


if __name__ == "__main__":
    sys.exit(main())
