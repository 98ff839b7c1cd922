"""The layering of docs/architecture.md, read from the source: every import statement of every module, those inside
functions included (ast, no import is executed).

- no import cycle anywhere in hw_models, firmware_bridge and calibrate;
- hw_models imports neither calibrate nor firmware_bridge; firmware_bridge does not import calibrate;
- nothing in calibrate outside the CLI package imports the CLI (it is the top layer);
- the shape the project keeps for a newcomer: no module of calibrate over 500 lines, no function over 80.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hw_models", "firmware_bridge", "calibrate")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages (``pkg.__init__`` is ``pkg``)."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


MODULES = _modules()


def _resolve(importer: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_pkg else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str) -> set[str]:
    """Modules of the tree that module ``name`` imports, anywhere in its body."""
    path = MODULES[name]
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(name, is_pkg, node)
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        for t in targets:
            while t and t not in MODULES:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t:
                found.add(t)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _ancestors(m: str) -> set[str]:
    parts = m.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_the_graph_sees_imports_inside_functions():
    assert "calibrate.backends" in GRAPH["calibrate.cli.exits"]  # imported inside _kinds()
    assert "firmware_bridge.host" in GRAPH["calibrate.backends"] or "firmware_bridge" in GRAPH["calibrate.backends"]
    assert "calibrate.figures" in GRAPH["calibrate.diagnostics.balance"]  # "from .. import figures"


def test_no_import_cycle_anywhere():
    """Depth-first search for a back edge; a package importing its own submodules is not a cycle, and neither is a
    submodule that names its own package (it is already being imported)."""
    edges = {m: {t for t in ts if t != m and t not in _ancestors(m)} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_hw_models_imports_neither_calibrate_nor_firmware_bridge():
    bad = {m: sorted(t for t in ts if t.split(".")[0] in ("calibrate", "firmware_bridge"))
           for m, ts in GRAPH.items() if m.split(".")[0] == "hw_models"}
    assert not {m: t for m, t in bad.items() if t}


def test_firmware_bridge_does_not_import_calibrate():
    bad = {m: sorted(t for t in ts if t.split(".")[0] == "calibrate")
           for m, ts in GRAPH.items() if m.split(".")[0] == "firmware_bridge"}
    assert not {m: t for m, t in bad.items() if t}


def test_only_the_cli_imports_the_cli():
    bad = {m: sorted(t for t in ts if t.startswith("calibrate.cli"))
           for m, ts in GRAPH.items() if not m.startswith("calibrate.cli")}
    assert not {m: t for m, t in bad.items() if t}


# -- shape ---------------------------------------------------------------------------------------------------------
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: functions allowed over the limit, and why (none at present; name each here and in the commit that adds it)
LONG_FUNCTIONS: dict[str, str] = {}


def _calibrate_modules() -> list[str]:
    return [m for m in MODULES if m.split(".")[0] == "calibrate"]


@pytest.mark.parametrize("module", _calibrate_modules())
def test_module_is_at_most_500_lines(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{module}: {n} lines"


def test_no_function_over_80_lines():
    long = []
    for m in _calibrate_modules():
        tree = ast.parse(MODULES[m].read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_FUNCTION_LINES and f"{m}.{node.name}" not in LONG_FUNCTIONS:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert not long, long
