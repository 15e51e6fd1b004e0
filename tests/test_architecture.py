"""The shape of the package, checked: which part may import which (docs/architecture.md
draws it), no import cycles, and no module using another's private names.

Imports are read from the source with :mod:`ast` (those inside functions too), so the
check needs nothing installed and fails the build the moment a layer is crossed.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "posthog_logging"
ROOT = "posthog_logging"

#: The parts, lowest first. A module may import modules of its own part and of the parts
#: below it, never above. (What delivery and the server may import is narrower still:
#: see the tests below.)
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundations",
        {
            "_version",
            "wire",
            "levels",
            "ids",
            "diagnostics",
            "exceptions",
            "reentry",
            "serialisation",
            "contexts",
            "error_tracking",
            "steps",
            "flood_control",
            "tracing",
            "code_variables",
            "flags",
            "held_lines",
            "log_volume",
            "compat",
        },
    ),
    ("records", {"events", "otlp", "delivery"}),
    ("client", {"client", "default_client", "uncaught", "official"}),
    (
        "front-ends",
        {
            "entries",
            "stdlib",
            "structlog",
            "loguru",
            "propagation",
            "web",
            "wsgi",
            "asgi",
            "django",
            "celery",
            "testing",
            "pytest_plugin",
            "__init__",
        },
    ),
    ("tools", {"server", "cli", "__main__"}),
]

#: Delivery knows bytes and a kind: nothing of logging, contexts or how events are built.
DELIVERY_MAY_IMPORT = {"_version", "wire", "ids", "diagnostics", "exceptions", "reentry",
                       "serialisation", "delivery"}  # fmt: skip
#: The dev server is PostHog's stand-in: it imports nothing of the client side.
SERVER_MAY_IMPORT = {"_version", "wire", "levels", "serialisation", "server"}


def modules() -> Iterator[tuple[str, pathlib.Path]]:
    """Every module of the package, by dotted name."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


MODULES = dict(modules())


def package_of(name: str, path: pathlib.Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def source(package: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` takes from, as a dotted name."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(name: str, path: pathlib.Path) -> Iterator[tuple[str, list[str], int]]:
    """The package's modules ``name`` imports: (module, names taken from it, line)."""
    package = package_of(name, path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = source(package, node)
            if target.split(".")[0] != ROOT:
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if submodules:  # from . import default_client: the module itself
                for submodule in submodules:
                    yield submodule, [], node.lineno
                rest = [n for n in names if f"{target}.{n}" not in MODULES]
                if rest:
                    yield target, rest, node.lineno
            else:
                yield target, names, node.lineno


def part(module: str) -> str:
    """The top-level piece of the package a module belongs to (``delivery`` for
    ``posthog_logging.delivery.sender``, ``__init__`` for the package itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def layer(module: str) -> int:
    piece = part(module)
    for index, (_, members) in enumerate(LAYERS):
        if piece in members:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


EDGES = [
    (name, target, names, line)
    for name, path in MODULES.items()
    for target, names, line in imports(name, path)
]


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer(name)


@pytest.mark.parametrize(("importer", "imported", "line"), [(a, b, n) for a, b, _, n in EDGES])
def test_no_lower_layer_imports_a_higher_one(importer: str, imported: str, line: int) -> None:
    assert layer(imported) <= layer(importer), (
        f"{importer} (line {line}) imports {imported}: "
        f"{LAYERS[layer(importer)][0]} may not import {LAYERS[layer(imported)][0]}"
    )


def test_delivery_knows_nothing_of_logging_contexts_or_events() -> None:
    crossing = [
        f"{a} (line {n}) imports {b}"
        for a, b, _, n in EDGES
        if part(a) == "delivery" and part(b) not in DELIVERY_MAY_IMPORT
    ]
    assert crossing == []


def test_the_server_imports_nothing_of_the_client() -> None:
    crossing = [
        f"{a} (line {n}) imports {b}"
        for a, b, _, n in EDGES
        if part(a) == "server" and part(b) not in SERVER_MAY_IMPORT
    ]
    assert crossing == []


def test_only_the_entry_point_imports_the_cli() -> None:
    importers = {a for a, b, _, _ in EDGES if part(b) == "cli" and part(a) != "cli"}
    assert importers <= {f"{ROOT}.__main__"}


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        f"{a} (line {n}) takes {', '.join(private)} from {b}"
        for a, b, names, n in EDGES
        if (private := [x for x in names if x.startswith("_") and not x.startswith("__")])
        and a != b
    ]
    assert found == []


def test_no_module_reaches_into_another_modules_private_attributes() -> None:
    """``module._name`` on a module of the package that was imported as a name."""
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        package = package_of(name, path)
        bound = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = source(package, node)
                bound |= {
                    alias.asname or alias.name
                    for alias in node.names
                    if f"{target}.{alias.name}" in MODULES
                }
            elif isinstance(node, ast.Import):
                bound |= {
                    alias.asname for alias in node.names if alias.asname and alias.name in MODULES
                }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name} (line {node.lineno}) uses {node.value.id}.{node.attr}")
    assert found == []


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for importer, imported, _, _ in EDGES:
        if imported in graph and imported != importer:
            graph[importer].add(imported)
    # A package's __init__ imports its parts to re-export them; a part importing its
    # own package's __init__ back would be a cycle, and is caught like any other.
    cycles = _cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
