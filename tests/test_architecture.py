"""The package layering, read from the source tree at run time (so it follows modules as they move).

Builds clipdex's module import graph with `ast` (relative imports resolved; imports inside
functions count too, those under ``if TYPE_CHECKING:`` do not) and checks:

(a) no import cycles;
(b) clipdex.cli and clipdex.serve use only the public API (and their own package);
(c) clipdex.retrieval and clipdex.index never import each other.

``KNOWN_VIOLATIONS`` lists today's exceptions as explicit edges; an edge that is gone (or no longer
breaks a rule) fails `test_known_violations_still_exist`, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import clipdex

ROOT = Path(clipdex.__file__).resolve().parent  # the clipdex/ package being tested

# Public API that the front ends (cli, serve) may use: these modules and their public submodules.
PUBLIC = ("clipdex", "clipdex.errors", "clipdex.results", "clipdex.kinds", "clipdex.library",
          "clipdex.index.filters", "clipdex.demo")  # fmt: skip
FRONT_ENDS = ("clipdex.cli", "clipdex.serve")
# `clipdex serve` starts the other front end: the CLI may use the server's own package.
FRONT_END_USES = {"clipdex.cli": ("clipdex.serve",)}

KNOWN_VIOLATIONS: set[str] = set()  # empty since issue 17 landed: every rule holds


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports_in(other)
            continue
        yield from _imports_in(child)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The tree's module for a dotted name: itself, else its nearest enclosing module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the clipdex modules it imports (anywhere in the file but under TYPE_CHECKING)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` imports the module pkg.sub when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                resolved = _resolve(t, modules)
                if resolved is not None and resolved != mod:
                    graph[mod].add(resolved)
    return graph


def edges(graph: dict[str, set[str]]) -> set[str]:
    return {f"{a} -> {b}" for a, bs in graph.items() for b in bs}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (first node repeated at the end) per strongly connected component with a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm; the graphs here are small
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                sccs.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_cycle_in(graph, set(comp)) for comp in sccs]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A concrete cycle through the component's smallest node (breadth-first, so a short one)."""
    start = min(comp)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in comp and w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # cannot happen for a real SCC


def _in(mod: str, packages: Iterable[str]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in packages)


def _public(mod: str) -> bool:
    if mod in PUBLIC:
        return True
    # A public module's public submodules (clipdex.library.x, clipdex.demo.x): not clipdex.x in general.
    return any(
        mod.startswith(p + ".") and not any(part.startswith("_") for part in mod[len(p) + 1 :].split("."))
        for p in PUBLIC
        if p != "clipdex"
    )


def rule_broken(a: str, b: str) -> str | None:
    """Which layering rule the edge a -> b breaks, if any (cycles are checked separately)."""
    for front in FRONT_ENDS:
        if _in(a, [front]) and not (_in(b, [front, *FRONT_END_USES.get(front, ())]) or _public(b)):
            return f"{front} may import only the public API"
    if _in(a, ["clipdex.retrieval"]) and _in(b, ["clipdex.index"]):
        return "clipdex.retrieval never imports clipdex.index"
    if _in(a, ["clipdex.index"]) and _in(b, ["clipdex.retrieval"]):
        return "clipdex.index never imports clipdex.retrieval"
    return None


def _without_known(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {a: {b for b in bs if f"{a} -> {b}" not in KNOWN_VIOLATIONS} for a, bs in graph.items()}


def test_the_graph_is_read_from_the_tree():
    graph = import_graph()
    assert (
        "clipdex.library" in graph
        or "clipdex.library.__init__" in graph
        or any(m.startswith("clipdex.library") for m in graph)
    )
    assert "clipdex.cli.main" in graph
    assert sum(len(v) for v in graph.values()) > 50  # the resolver finds the package's imports


def test_no_import_cycles():
    cycles = find_cycles(_without_known(import_graph()))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layering():
    broken = sorted(
        f"{e}  ({why})"
        for e in edges(import_graph()) - KNOWN_VIOLATIONS
        if (why := rule_broken(*e.split(" -> ")))
    )
    assert not broken, "layering violations (fix them, or, if they must stay, list them):\n" + "\n".join(
        broken
    )


def test_known_violations_still_exist():
    """The allowlist only shrinks: an edge that is gone, or now allowed, must leave KNOWN_VIOLATIONS."""
    graph = import_graph()
    present = edges(graph)
    cyclic = {f"{a} -> {b}" for c in find_cycles(graph) for a, b in zip(c, c[1:])}
    stale = sorted(
        e
        for e in KNOWN_VIOLATIONS
        if e not in present or (rule_broken(*e.split(" -> ")) is None and e not in cyclic)
    )
    assert not stale, "no longer violations; remove from KNOWN_VIOLATIONS:\n" + "\n".join(stale)


def test_cycle_finder_on_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    cycles = sorted(find_cycles(graph))
    assert cycles == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    # Two cycles sharing a node are one component; the reported path is a real cycle in it.
    (cycle,) = find_cycles({"x": {"y", "z"}, "y": {"x"}, "z": {"x"}})
    assert cycle[0] == cycle[-1] == "x" and all(b in {"x": {"y", "z"}, "y": {"x"}, "z": {"x"}}[a]
                                                  for a, b in zip(cycle, cycle[1:]))  # fmt: skip


def test_resolver_on_a_synthetic_tree(tmp_path):
    pkg = tmp_path / "clipdex"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .sub import b\nif TYPE_CHECKING:\n    from clipdex import c\n"
        "def f():\n    import clipdex.c\n"
    )
    (pkg / "c.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .. import a\n")
    (pkg / "sub" / "b.py").write_text("from ..c import thing\nfrom . import missing\n")
    graph = import_graph(pkg)
    assert graph["clipdex.a"] == {"clipdex.sub.b", "clipdex.c"}  # the lazy import counts, TYPE_CHECKING not
    assert graph["clipdex.sub"] == {"clipdex.a"}
    assert graph["clipdex.sub.b"] == {"clipdex.c", "clipdex.sub"}
