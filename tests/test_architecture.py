"""Architecture: size limits, the import graph and light imports of the ``stream`` package.

Reads every module under ``stream/`` (sub-packages included) with :mod:`ast`; nothing is
imported except in the light-import checks, which run ``import ...`` in a child process so
this process's modules cannot hide or cause a heavy import.

Rules (issue 10 and the style guide):

* no module over 700 lines, no class over 250, no function or method over 90;
* the imports between stream modules form no cycle: relative and absolute ``stream.``
  imports count, also inside functions; imports under ``if TYPE_CHECKING:`` do not;
* nothing in ``stream/`` imports ``cli`` (it sits on top);
* ``stream.errors`` and ``stream.records`` import no stream module but each other;
* ``import stream`` and ``import stream.settings`` load none of torch, timm, openvino, av.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "stream"

MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 90
#: Modules at the bottom: they may import each other and nothing else from the package.
BOTTOM = frozenset({"stream.errors", "stream.records"})
HEAVY = ("torch", "timm", "openvino", "av")


@dataclass(frozen=True)
class Module:
    """One parsed module: dotted ``name``, ``path`` relative to the root, its syntax tree."""

    name: str
    path: str
    is_package: bool
    lines: int
    tree: ast.Module


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.source} -> {self.target}"


def parse_package(root: Path, package: str = PACKAGE) -> dict[str, Module]:
    """Every ``.py`` file under ``root/package``, by dotted module name."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root)
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        text = path.read_text(encoding="utf-8")
        name = ".".join(parts)
        modules[name] = Module(
            name, rel.as_posix(), is_package, len(text.splitlines()), ast.parse(text, str(rel))
        )
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """True for ``TYPE_CHECKING`` and ``typing.TYPE_CHECKING`` (any module prefix)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, nested ones included, except those under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _imported_names(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute dotted names a statement imports (``from P import n`` gives ``P.n`` and ``P``).

    Resolving which of the two is a module is left to :func:`import_edges`.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        # The package a relative import starts from: the module's own for a package.
        parts = module.name.split(".")
        if not module.is_package:
            parts.pop()
        if node.level > 1:
            parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" if base else alias.name for alias in node.names] + [base]


def import_edges(modules: dict[str, Module], package: str = PACKAGE) -> list[Edge]:
    """Edges between modules of ``package``, one per import statement and target.

    ``from P import n`` is an edge to the module ``P.n`` when that is a module, else to
    ``P``; ``import P.Q`` is an edge to ``P.Q`` (not to its parent packages, whose
    ``__init__`` merely runs first).
    """
    edges = []
    for module in modules.values():
        for node in _runtime_imports(module.tree):
            names = _imported_names(module, node)
            if isinstance(node, ast.ImportFrom):
                base = names.pop()
                targets = {name if name in modules else base for name in names}
            else:
                targets = set(names)
            for target in sorted(targets):
                if target == package or target.startswith(package + "."):
                    edges.append(Edge(module.name, target, module.path, node.lineno))
    return edges


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def cli_imports(modules: dict[str, Module]) -> list[str]:
    """``path:line`` of every import of the top-level ``cli`` module (absolute only)."""
    return [
        f"{m.path}:{node.lineno}"
        for m in modules.values()
        for node in _runtime_imports(m.tree)
        if not getattr(node, "level", 0)
        and any(n == "cli" or n.startswith("cli.") for n in _imported_names(m, node))
    ]


def oversized(modules: dict[str, Module], kinds: tuple[type, ...], limit: int) -> list[str]:
    """``path:line name (n lines)`` for every node of ``kinds`` longer than ``limit`` lines."""
    found = []

    def visit(node: ast.AST, module: Module, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            scope = prefix
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = f"{prefix}{child.name}."
                if isinstance(child, kinds):
                    length = child.end_lineno - child.lineno + 1
                    if length > limit:
                        found.append(
                            f"{module.path}:{child.lineno} {prefix}{child.name} ({length} lines)"
                        )
            visit(child, module, scope)

    for module in modules.values():
        visit(module.tree, module, "")
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return parse_package(ROOT)


@pytest.fixture(scope="module")
def edges(modules: dict[str, Module]) -> list[Edge]:
    return import_edges(modules)


# -- the package -----------------------------------------------------------------------


def test_the_package_is_read_whole(modules: dict[str, Module], edges: list[Edge]) -> None:
    # Guards the checks below against passing on nothing.
    assert {"stream", "stream.errors", "stream.records", "stream.smoothing"} <= set(modules)
    assert ("stream.smoothing", "stream.align") in {(e.source, e.target) for e in edges}
    if (ROOT / PACKAGE / "web").is_dir():
        assert any(name.startswith("stream.web.") for name in modules)


def test_no_module_is_too_long(modules: dict[str, Module]) -> None:
    long = [f"{m.path}:1 ({m.lines} lines)" for m in modules.values() if m.lines > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_no_class_is_too_long(modules: dict[str, Module]) -> None:
    long = oversized(modules, (ast.ClassDef,), MAX_CLASS_LINES)
    assert not long, f"classes over {MAX_CLASS_LINES} lines:\n" + "\n".join(long)


def test_no_function_is_too_long(modules: dict[str, Module]) -> None:
    long = oversized(modules, (ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION_LINES)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_imports_between_modules_have_no_cycle(edges: list[Edge]) -> None:
    found = cycles(edges)
    report = []
    for component in found:
        members = set(component)
        report.append(" <-> ".join(component))
        report += [f"  {e}" for e in edges if e.source in members and e.target in members]
    assert not found, "import cycles:\n" + "\n".join(report)


def test_nothing_in_the_package_imports_cli(modules: dict[str, Module]) -> None:
    offenders = cli_imports(modules)
    assert not offenders, "cli.py is the top layer; imported by:\n" + "\n".join(offenders)


def test_errors_and_records_import_only_each_other(edges: list[Edge]) -> None:
    offenders = [str(e) for e in edges if e.source in BOTTOM and e.target not in BOTTOM]
    assert not offenders, "the bottom layer imports upwards:\n" + "\n".join(offenders)


@pytest.mark.parametrize("module", ["stream", "stream.settings"])
def test_import_is_light(module: str, modules: dict[str, Module]) -> None:
    if module not in modules:
        pytest.skip(f"{module} does not exist (yet)")
    probe = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"heavy = {{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})\n"
        "ours = [m for m in sys.modules if m == 'stream' or m.startswith('stream.')]\n"
        "print(json.dumps([sorted(heavy), sorted(ours)]))\n"
    )
    path = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    heavy, ours = json.loads(result.stdout.strip().splitlines()[-1])
    assert not heavy, f"import {module} loads {', '.join(heavy)}; stream modules it ran: {ours}"


# -- the checks themselves, on a made-up package ---------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checks_see_nested_relative_and_absolute_imports_and_skip_type_checking(
    tmp_path: Path,
) -> None:
    _write(
        tmp_path,
        {
            "stream/__init__.py": "",
            "stream/a.py": "def f():\n    from .b import x\n",
            "stream/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    import stream.a\nelse:\n    import stream.c\n"
            ),
            "stream/c.py": "import os\nfrom stream import d\n",
            "stream/d.py": "",
            "stream/web/__init__.py": "from .app import run\n",
            "stream/web/app.py": "from . import jobs\nfrom ..errors import E\nimport cli\n",
            "stream/web/jobs.py": "",
            "stream/errors.py": "",
        },
    )
    found = parse_package(tmp_path)
    got = {(e.source, e.target, e.line) for e in import_edges(found)}
    assert got == {
        ("stream.a", "stream.b", 2),
        ("stream.b", "stream.c", 5),
        ("stream.c", "stream.d", 2),
        ("stream.web", "stream.web.app", 1),
        ("stream.web.app", "stream.web.jobs", 1),
        ("stream.web.app", "stream.errors", 2),
    }
    assert cycles(import_edges(found)) == []
    assert cli_imports(found) == ["stream/web/app.py:3"]


def test_checks_find_cycles_and_long_definitions(tmp_path: Path) -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(91))
    _write(
        tmp_path,
        {
            "stream/__init__.py": "",
            "stream/a.py": "def g():\n    import stream.b\n",
            "stream/b.py": "from . import c\n",
            "stream/c.py": f"from .a import g\nclass K:\n    def long(self):\n{body}",
            "stream/d.py": "from . import d\n",
        },
    )
    found = parse_package(tmp_path)
    assert cycles(import_edges(found)) == [["stream.a", "stream.b", "stream.c"], ["stream.d"]]
    assert oversized(found, (ast.FunctionDef,), 90) == ["stream/c.py:3 K.long (92 lines)"]
    assert oversized(found, (ast.ClassDef,), 92) == ["stream/c.py:2 K (93 lines)"]
    assert oversized(found, (ast.ClassDef,), 93) == []
