"""Architecture: folders by concern, imports that point down, size limits, one definition.

Reads every module under ``stream/`` (sub-packages included) with :mod:`ast`; nothing is
imported except in the light-import checks, which run ``import ...`` in a child process so
this process's modules cannot hide or cause a heavy import.

Rules (issues 10 and 20, and the style guide):

* each folder of the package lists what it may import (:data:`ALLOWED`, drawn in the
  README's "How it works"); every import counts, also under ``TYPE_CHECKING`` and inside
  functions (a circle hidden there is still a circle), and the import graph has no cycle;
* size limits count code lines only (no docstrings, comments or blank lines): module
  500, class 200, function 60, and no code line over 100 characters;
* at most a dozen modules directly in ``stream/``; nothing in it imports ``cli``;
* every error message and default that issue 20 found written several times is written
  once (:data:`DEFINED_ONCE`);
* ``tests/`` mirrors the package: a test file in ``tests/<folder>/`` is named after a
  module of ``stream/<folder>/``;
* ``import stream`` and ``import stream.core.settings`` load none of torch, timm,
  openvino, av.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "stream"

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 60
MAX_LINE_CHARS = 100
MAX_TOP_MODULES = 12
#: Modules at the bottom: they may import each other and nothing else from the package.
BOTTOM = frozenset({"stream.core.errors", "stream.core.records", "stream.core.units"})
#: What each folder (or top module) of ``stream`` may import besides itself;
#: docs/how-it-works.md draws this table. Layers, bottom to top.
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "geometry": frozenset({"core"}),
    "models": frozenset({"core"}),
    "engines": frozenset({"core", "geometry", "models"}),
    "depth": frozenset({"core", "geometry"}),
    "sources": frozenset({"core"}),
    "sinks": frozenset({"core", "depth", "sources"}),
    "robotics": frozenset({"core", "geometry", "depth", "sinks"}),
    "window": frozenset({"core", "depth", "sinks"}),
    "runtime": frozenset({"core", "geometry", "models", "engines", "depth", "sources", "sinks",
                          "robotics", "window"}),
    "api": frozenset({"core", "models", "engines", "sources", "runtime"}),
    "web": frozenset({"core", "models", "engines", "depth", "sources", "sinks", "runtime"}),
    "batch": frozenset({"core", "engines", "sources", "sinks", "runtime"}),
    "cli_args": frozenset({"core", "models", "window", "batch"}),
    "cli": frozenset({"core", "models", "engines", "runtime", "sinks", "robotics", "web", "batch",
                      "cli_args", "api"}),
    "__main__": frozenset({"cli"}),
}
#: Texts issue 20 found written two or three times: each must now stand once in the package.
DEFINED_ONCE = (
    "runs on the cpu; use --backend torch",
    "runs on OpenVINO (cpu)",
    "no CUDA GPU is available",
    "a state dict or a weights file",
    "--zmq-dtype and --zmq-jpeg go with",
    "DEFAULT_SMOOTH = ",
    "MB = ",
)
#: Texts that must not come back: the string tuples that shadowed the enums, and a second
#: smoothing default or megabyte.
NEVER = ("BACKENDS = (", "PRECISIONS = (", "DEFAULT_STRENGTH = 0", " * 1e6)",
         "return self._render", "return self._model")
HEAVY = ("torch", "timm", "openvino", "av")


@dataclass(frozen=True)
class Module:
    """One parsed module: dotted ``name``, ``path`` relative to the root, its syntax tree."""

    name: str
    path: str
    is_package: bool
    lines: int
    tree: ast.Module
    code: frozenset[int]
    text: str

    def code_lines(self, node: ast.AST | None = None) -> int:
        """Code lines (no docstrings, comments or blank lines) of the module or ``node``."""
        if node is None:
            return len(self.code)
        return sum(1 for n in self.code if node.lineno <= n <= node.end_lineno)


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
        tree = ast.parse(text, str(rel))
        modules[name] = Module(name, rel.as_posix(), is_package, len(text.splitlines()), tree,
                               code_line_numbers(text, tree), text)
    return modules


def code_line_numbers(text: str, tree: ast.AST) -> frozenset[int]:
    """Line numbers that hold code: tokens other than comments, minus docstrings."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return frozenset(lines - docstrings)


def _is_type_checking(test: ast.expr) -> bool:
    """True for ``TYPE_CHECKING`` and ``typing.TYPE_CHECKING`` (any module prefix)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(tree: ast.AST, type_checking: bool = True
                     ) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, nested ones included.

    ``type_checking=False`` skips those under ``if TYPE_CHECKING:`` (the made-up package
    below checks that the switch works).
    """
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
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


def import_edges(modules: dict[str, Module], package: str = PACKAGE,
                 type_checking: bool = True) -> list[Edge]:
    """Edges between modules of ``package``, one per import statement and target.

    ``from P import n`` is an edge to the module ``P.n`` when that is a module, else to
    ``P``; ``import P.Q`` is an edge to ``P.Q`` (not to its parent packages, whose
    ``__init__`` merely runs first).
    """
    edges = []
    for module in modules.values():
        for node in _runtime_imports(module.tree, type_checking):
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
    """``path:line name (n code lines)`` for every node of ``kinds`` over ``limit`` code lines."""
    found = []

    def visit(node: ast.AST, module: Module, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            scope = prefix
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = f"{prefix}{child.name}."
                if isinstance(child, kinds):
                    length = module.code_lines(child)
                    if length > limit:
                        found.append(f"{module.path}:{child.lineno} {prefix}{child.name} "
                                     f"({length} code lines)")
            visit(child, module, scope)

    for module in modules.values():
        visit(module.tree, module, "")
    return found


def layer(name: str) -> str:
    """The folder (or top module) of a dotted name: ``stream.core.files`` -> ``core``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def forbidden_edges(edges: list[Edge]) -> list[str]:
    """Imports from one folder into another that :data:`ALLOWED` does not list."""
    return [f"{e} ({layer(e.source)} may not import {layer(e.target)})" for e in edges
            if layer(e.source) != layer(e.target) and layer(e.target) != PACKAGE
            and layer(e.target) not in ALLOWED.get(layer(e.source), frozenset())]


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return parse_package(ROOT)


@pytest.fixture(scope="module")
def edges(modules: dict[str, Module]) -> list[Edge]:
    return import_edges(modules)


# -- the package -----------------------------------------------------------------------


def test_the_package_is_read_whole(modules: dict[str, Module], edges: list[Edge]) -> None:
    # Guards the checks below against passing on nothing.
    assert {"stream", "stream.core.errors", "stream.core.records",
            "stream.depth.smoothing"} <= set(modules)
    pairs = {(e.source, e.target) for e in edges}
    assert ("stream.depth.smoothing", "stream.geometry.align") in pairs
    if (ROOT / PACKAGE / "web").is_dir():
        assert any(name.startswith("stream.web.") for name in modules)


def test_no_module_is_too_long(modules: dict[str, Module]) -> None:
    long = [f"{m.path}:1 ({m.code_lines()} code lines)" for m in modules.values()
            if m.code_lines() > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} code lines:\n" + "\n".join(long)


def test_no_class_is_too_long(modules: dict[str, Module]) -> None:
    long = oversized(modules, (ast.ClassDef,), MAX_CLASS_LINES)
    assert not long, f"classes over {MAX_CLASS_LINES} code lines:\n" + "\n".join(long)


def test_no_function_is_too_long(modules: dict[str, Module]) -> None:
    long = oversized(modules, (ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION_LINES)
    assert not long, f"functions over {MAX_FUNCTION_LINES} code lines:\n" + "\n".join(long)


def test_no_code_line_is_too_wide(modules: dict[str, Module]) -> None:
    wide = [f"{m.path}:{n}" for m in modules.values() for n in sorted(m.code)
            if len(m.text.splitlines()[n - 1]) > MAX_LINE_CHARS]
    assert not wide, f"code lines over {MAX_LINE_CHARS} characters:\n" + "\n".join(wide)


def test_few_modules_stay_at_the_top(modules: dict[str, Module]) -> None:
    top = [m.name for m in modules.values() if m.name.count(".") == 1 and not m.is_package]
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in stream/: {top}"


def test_every_folder_imports_only_what_it_may(modules: dict[str, Module],
                                               edges: list[Edge]) -> None:
    folders = {layer(m.name) for m in modules.values() if m.name != PACKAGE}
    assert folders <= set(ALLOWED), f"folders with no row in ALLOWED: {folders - set(ALLOWED)}"
    offenders = forbidden_edges(edges)
    assert not offenders, "imports against the layers:\n" + "\n".join(offenders)


def test_the_checkout_shim_only_runs_the_packaged_command() -> None:
    tree = ast.parse((ROOT / "cli.py").read_text(encoding="utf-8"))
    shim = Module("cli", "cli.py", False, 0, tree, frozenset(), "")
    targets = {name for node in _runtime_imports(tree) for name in _imported_names(shim, node)
               if name.startswith(PACKAGE)}
    assert targets == {"stream.__main__", "stream.__main__.run"}  # the installed command's


@pytest.mark.parametrize("text", DEFINED_ONCE)
def test_messages_and_defaults_are_written_once(text: str, modules: dict[str, Module]) -> None:
    places = [m.path for m in modules.values() for _ in range(m.text.count(text))]
    assert len(places) == 1, f"{text!r} stands in {places or 'no module'}"


@pytest.mark.parametrize("text", NEVER)
def test_shadow_definitions_do_not_come_back(text: str, modules: dict[str, Module]) -> None:
    places = [m.path for m in modules.values() if text in m.text]
    assert not places, f"{text!r} stands in {places}"


def test_tests_mirror_the_package(modules: dict[str, Module]) -> None:
    stems = {(layer(m.name), m.name.rsplit(".", 1)[-1]) for m in modules.values()}
    strays = []
    for path in sorted((ROOT / "tests").glob("*/test_*.py")):
        folder, stem = path.parent.name, path.stem[len("test_"):]
        if folder == "commands":
            continue  # end-to-end command tests
        if (folder, stem) not in stems and not any(
                f == folder and stem.startswith(s + "_") for f, s in stems):
            strays.append(path.relative_to(ROOT).as_posix())
    assert not strays, ("test files named after no module of their folder (name them "
                        "test_<module>[_<topic>].py):\n" + "\n".join(strays))


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


@pytest.mark.parametrize("module", ["stream", "stream.core.settings"])
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


def test_checks_see_nested_relative_absolute_and_type_checking_imports(tmp_path: Path) -> None:
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
    runtime_only = {
        ("stream.a", "stream.b", 2),
        ("stream.b", "stream.c", 5),
        ("stream.c", "stream.d", 2),
        ("stream.web", "stream.web.app", 1),
        ("stream.web.app", "stream.web.jobs", 1),
        ("stream.web.app", "stream.errors", 2),
    }
    edges = import_edges(found, type_checking=False)
    assert {(e.source, e.target, e.line) for e in edges} == runtime_only
    assert cycles(edges) == []
    # Counted as the rules ask, the import under TYPE_CHECKING closes a circle a -> b -> a.
    every = import_edges(found)
    assert {(e.source, e.target, e.line) for e in every} == runtime_only | {
        ("stream.b", "stream.a", 3)}
    assert cycles(every) == [["stream.a", "stream.b"]]
    assert cli_imports(found) == ["stream/web/app.py:3"]


def test_checks_find_cycles_and_long_definitions(tmp_path: Path) -> None:
    body = "".join(f"        x{i} = {i}  # a comment does not count\n\n" for i in range(61))
    doc = '        """A docstring does not count.\n\n        However long it is.\n        """\n'
    _write(
        tmp_path,
        {
            "stream/__init__.py": "",
            "stream/a.py": "def g():\n    import stream.b\n",
            "stream/b.py": "from . import c\n",
            "stream/c.py": f"from .a import g\nclass K:\n    def long(self):\n{doc}{body}",
            "stream/d.py": "from . import d\n",
        },
    )
    found = parse_package(tmp_path)
    assert cycles(import_edges(found)) == [["stream.a", "stream.b", "stream.c"], ["stream.d"]]
    assert found["stream.c"].code_lines() == 64
    assert oversized(found, (ast.FunctionDef,), 60) == ["stream/c.py:3 K.long (62 code lines)"]
    assert oversized(found, (ast.FunctionDef,), 62) == []
    assert oversized(found, (ast.ClassDef,), 62) == ["stream/c.py:2 K (63 code lines)"]


def test_layer_check_names_a_forbidden_import() -> None:
    up = Edge("stream.core.files", "stream.runtime.builder", "stream/core/files.py", 3)
    down = Edge("stream.runtime.builder", "stream.core.files", "stream/runtime/builder.py", 9)
    inside = Edge("stream.web.app", "stream.web.jobs", "stream/web/app.py", 1)
    assert forbidden_edges([up, down, inside]) == [
        "stream/core/files.py:3 stream.core.files -> stream.runtime.builder "
        "(core may not import runtime)"]
