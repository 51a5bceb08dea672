"""The package's import graph: no circles, and the layers import only downwards.

Every ``import`` / ``from ... import`` of a ``hiersrec`` module counts, at module level or inside a function
(a function-level import that dodges a circle is still a circle). Importing ``a.b.c`` also runs the
``__init__`` of ``a.b``, which is counted as an edge to that package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hiersrec

PACKAGE_DIR = Path(hiersrec.__file__).resolve().parent

# (importer prefix, imported prefix): layers that must not depend on each other.
FORBIDDEN = [
    ("hiersrec.data", "hiersrec.models"),
    ("hiersrec.data", "hiersrec.train"),
    ("hiersrec.data", "hiersrec.retrieval"),
    ("hiersrec.data", "hiersrec.serve"),
    ("hiersrec.data", "hiersrec.recommend"),
    ("hiersrec.data", "hiersrec.artifact"),
    ("hiersrec.models", "hiersrec.train"),
    ("hiersrec.models", "hiersrec.artifact"),
    ("hiersrec.models", "hiersrec.config"),
    ("hiersrec.models", "hiersrec.recommend"),
    ("hiersrec.models", "hiersrec.serve"),
    ("hiersrec.serve", "hiersrec.train"),
    ("hiersrec.recommend", "hiersrec.train"),
    ("hiersrec.artifact", "hiersrec.train"),
    ("hiersrec.retrieval", "hiersrec.train"),
    ("hiersrec.eval", "hiersrec.train"),
    ("hiersrec.config", "hiersrec.train"),
    ("hiersrec.tuning", "hiersrec.train"),
]


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    modules = {_module_name(path, package_dir): path for path in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                if not target.startswith("hiersrec"):
                    continue
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                # Importing a.b.c runs a.b's __init__ first: an edge to every enclosing package too.
                parts = target.split(".")
                for depth in range(2, len(parts) + 1):
                    enclosing = ".".join(parts[:depth])
                    if enclosing in modules and enclosing != name and not name.startswith(enclosing + "."):
                        graph[name].add(enclosing)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    # Tarjan's strongly connected components; a component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_package_has_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_no_layer_imports_a_layer_above_it():
    graph = _import_graph()
    violations = [
        f"{importer} imports {imported}"
        for importer, targets in graph.items()
        for imported in targets
        for low, high in FORBIDDEN
        if _within(importer, low) and _within(imported, high)
    ]
    assert violations == []


def test_the_graph_sees_function_level_imports(tmp_path):
    # The walker is what the two tests above rely on: an import inside a function that closes a circle, a
    # relative import and the edge to an enclosing package's __init__ must all count.
    package = tmp_path / "hiersrec"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from hiersrec.sub import b\n")
    (package / "sub" / "b.py").write_text("def late():\n    from .. import a\n    return a\n")
    graph = _import_graph(package)
    assert graph["hiersrec.a"] == {"hiersrec.sub", "hiersrec.sub.b"}
    assert "hiersrec.a" in graph["hiersrec.sub.b"]
    assert _cycles(graph) == [["hiersrec.a", "hiersrec.sub.b"]]


def test_serving_loads_no_training_code():
    code = "import sys, hiersrec.serve.app; print(sorted(m for m in sys.modules if m.startswith('hiersrec.train')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out)
    assert loaded == []  # not the loop, not its options: a run is read without any training module
