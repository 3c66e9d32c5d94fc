"""The package's layout holds its rules (docs/architecture.md): no import cycle, no import up a layer, no private name
imported from another package.

Every module under ``src/corekd`` is parsed with :mod:`ast`; every ``import`` counts, those inside functions
included; only imports under ``if TYPE_CHECKING:`` are skipped (they never run). An import of ``corekd.a.b`` is an
edge to the module ``corekd.a.b`` (not to the package ``corekd.a`` whose ``__init__`` Python also runs);
``from corekd.a import b`` is an edge to ``corekd.a.b`` when that is a module, else to ``corekd.a``. Imports made
by name at run time (``importlib.import_module``, as ``corekd.serving``'s lazy names do) are not seen.

A violation tolerated during a rewrite is named in :data:`KNOWN` (empty today); the set may only shrink: a test
fails when an entry no longer occurs, so that it is removed with the fix.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom -> top. A module may import its own layer and the layers below it, never one above. A pattern is a module
# name, or ``pkg.*`` for a package and everything under it; the most specific pattern decides (an exact name over
# ``pkg.*``, a longer ``pkg.*`` over a shorter one).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "corekd.version",
            "corekd.errors",
            "corekd.files",
            "corekd.device",
            "corekd.seeding",
            "corekd.progress",
            "corekd.weights",
        ),
    ),
    ("data", ("corekd.data.*",)),
    ("features", ("corekd.features.*",)),
    ("models", ("corekd.models.*",)),
    ("methods", ("corekd.methods.*",)),
    ("scoring", ("corekd.evaluation.metrics", "corekd.evaluation.predict")),
    ("config", ("corekd.config",)),
    ("training", ("corekd.training", "corekd.ensemble")),
    ("evaluation", ("corekd.evaluation.*",)),
    ("reporting", ("corekd.reporting.*",)),
    (
        "experiments",
        ("corekd.experiments.*",),
    ),
    ("serving: bottom", ("corekd.serving.schema", "corekd.serving.dialogue", "corekd.serving.module")),
    (
        "serving: middle",
        ("corekd.serving.bundle", "corekd.serving.inputs", "corekd.serving.media", "corekd.serving.onnx_export"),
    ),
    ("serving: top", ("corekd.serving.*",)),
    ("cli", ("corekd.cli", "corekd.__main__")),
    ("facade", ("corekd",)),  # the public face (corekd.run, corekd.load, corekd.__version__): imported by no module
]

# Imports that the layer order allows but the design does not: (importer prefix, imported module prefix).
FORBIDDEN: list[tuple[str, str]] = [
    # serving reads run folders (corekd.experiments.folder), never the driver that writes them
    ("corekd.serving", "corekd.experiments.engine"),
    ("corekd.serving", "corekd.experiments.unit"),
]

# Tolerated violations, named one by one while a rewrite is under way; empty since issue 30 landed, and any entry
# that no longer occurs fails the test. "A -> B": an import of module B in module A; "A: _name from B": a private
# name imported across packages.
KNOWN: set[str] = set()


@dataclass
class Graph:
    modules: dict[str, Path]  # name -> file
    edges: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (importer, imported) -> import lines
    private: dict[str, list[int]] = field(default_factory=dict)  # "A: _name from B" -> import lines

    def where(self, a: str, b: str) -> str:
        lines = ", ".join(map(str, sorted(set(self.edges[(a, b)]))))
        return f"{a} -> {b} ({self.modules[a].relative_to(SRC)}:{lines})"


def _module_names(src: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(tree: ast.Module):
    """Every Import / ImportFrom node, at any depth, except under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def build_graph(src: Path, root: str = "corekd") -> Graph:
    """The import graph of the package ``root`` under ``src`` (see the module docstring for what counts)."""
    modules = {n: p for n, p in _module_names(src).items() if n == root or n.startswith(root + ".")}
    graph = Graph(modules)

    def owner(target: str) -> str | None:  # the module that ``target`` names, or the nearest package above it
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    for name, path in modules.items():
        package = _package(name, path)
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = owner(alias.name) if alias.name.split(".")[0] == root else None
                    if target:
                        graph.edges.setdefault((name, target), []).append(node.lineno)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != root:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                target = sub if sub in modules else owner(source)
                if target is None:
                    continue
                graph.edges.setdefault((name, target), []).append(node.lineno)
                if target != sub and alias.name.startswith("_") and not alias.name.startswith("__"):
                    if _package(target, modules[target]) != package:
                        graph.private.setdefault(f"{name}: {alias.name} from {target}", []).append(node.lineno)
    return graph


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (specificity, layer index)
    for i, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                pkg = pattern[:-2]
                hit = module == pkg or module.startswith(pkg + ".")
                rank = 2 * len(pkg)
            else:
                hit = module == pattern
                rank = 2 * len(pattern) + 1
            if hit and (best is None or rank > best[0]):
                best = (rank, i)
    return None if best is None else best[1]


def strongly_connected(nodes: list[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (or a module importing itself), iteratively."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(edges):
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            if i < len(succ[v]):
                work.append((v, i + 1))
                w = succ[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or (v, v) in edges:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def _edge_key(a: str, b: str) -> str:
    return f"{a} -> {b}"


def _cycle_report(graph: Graph, edges: set[tuple[str, str]]) -> list[str]:
    report = []
    for comp in strongly_connected(sorted(graph.modules), edges):
        inner = [graph.where(a, b) for a, b in sorted(edges) if a in comp and b in comp]
        report.append(f"cycle among {', '.join(comp)}:\n    " + "\n    ".join(inner))
    return report


def _upward(graph: Graph) -> dict[str, str]:
    """Edge key -> why, for every import that goes up a layer or is forbidden."""
    out = {}
    for a, b in graph.edges:
        la, lb = layer_of(a), layer_of(b)
        if la is not None and lb is not None and lb > la:
            out[_edge_key(a, b)] = f"{graph.where(a, b)}: layer '{LAYERS[la][0]}' imports layer '{LAYERS[lb][0]}'"
        for importer, imported in FORBIDDEN:
            if (a == importer or a.startswith(importer + ".")) and (b == imported or b.startswith(imported + ".")):
                out[_edge_key(a, b)] = f"{graph.where(a, b)}: {importer} may not import {imported}"
    return out


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(SRC)


def _allowed_edges(graph: Graph) -> set[tuple[str, str]]:
    return {e for e in graph.edges if _edge_key(*e) not in KNOWN}


def test_every_module_has_a_layer(graph):
    missing = [m for m in graph.modules if layer_of(m) is None]
    assert not missing, f"place these modules in LAYERS (and in docs/architecture.md): {missing}"


def test_no_import_cycle(graph):
    report = _cycle_report(graph, _allowed_edges(graph))
    assert not report, "import cycles (imports inside functions count):\n" + "\n".join(report)


def test_no_import_goes_up_a_layer(graph):
    bad = [why for key, why in sorted(_upward(graph).items()) if key not in KNOWN]
    assert not bad, "imports against the layer order (docs/architecture.md):\n" + "\n".join(bad)


def test_no_private_name_is_imported_from_another_package(graph):
    bad = [
        f"{key} (line {', '.join(map(str, lines))})" for key, lines in sorted(graph.private.items()) if key not in KNOWN
    ]
    assert not bad, "private names imported across packages (make them public in their home module):\n" + "\n".join(bad)


def test_known_violations_still_occur(graph):
    """KNOWN only shrinks: an entry that no longer occurs (fixed) must be removed from it."""
    upward = _upward(graph)
    in_cycle = {
        _edge_key(a, b)
        for comp in strongly_connected(sorted(graph.modules), set(graph.edges))
        for a, b in graph.edges
        if a in comp and b in comp
    }
    gone = sorted(k for k in KNOWN if k not in graph.private and k not in upward and k not in in_cycle)
    assert not gone, f"fixed, so remove from KNOWN: {gone}"


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The parser itself: imports inside functions and relative ones count, TYPE_CHECKING ones do not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("_hidden = 1\nvalue = 2\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import b\n"
        "def f():\n    from ..low import _hidden\n    import pkg.sub.b\n"
    )
    (pkg / "sub" / "b.py").write_text("from . import a\nfrom pkg import low\n")
    g = build_graph(tmp_path, "pkg")
    assert set(g.edges) == {
        ("pkg.sub.a", "pkg.low"),
        ("pkg.sub.a", "pkg.sub.b"),
        ("pkg.sub.b", "pkg.sub.a"),
        ("pkg.sub.b", "pkg.low"),
    }
    assert g.edges[("pkg.sub.a", "pkg.low")] == [5]
    assert list(g.private) == ["pkg.sub.a: _hidden from pkg.low"]
    assert strongly_connected(sorted(g.modules), set(g.edges)) == [["pkg.sub.a", "pkg.sub.b"]]
