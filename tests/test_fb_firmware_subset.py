"""The firmware stays inside the MicroPython subset DESIGN.md sets: checked on the source, so that a violation is
caught even where the MicroPython tests are skipped (no ``micropython`` command)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware_bridge" / "firmware"
FILES = sorted(FIRMWARE.glob("*.py"))
BANNED_MODULES = {"numpy", "dataclasses", "typing", "enum", "__future__", "abc", "functools", "pathlib"}


def test_firmware_files_found():
    names = {p.name for p in FILES}
    assert {"wire.py", "messages.py", "nvm.py", "board.py", "testchip.py", "mp_main.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_firmware_source_is_micropython_subset(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            problems += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in \
                BANNED_MODULES:
            problems.append(f"{where}: from {node.module} import")
        elif isinstance(node, ast.JoinedStr):
            problems.append(f"{where}: f-string (MicroPython lacks the = specifier; the firmware uses % instead)")
        elif isinstance(node, ast.Attribute) and node.attr == "Struct":
            problems.append(f"{where}: struct.Struct (MicroPython has only struct.pack/unpack)")
        elif isinstance(node, (ast.AnnAssign,)) or (isinstance(node, ast.arg) and node.annotation is not None):
            problems.append(f"{where}: annotation (no typing at run time)")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            problems.append(f"{where}: return annotation")
        elif isinstance(node, ast.ClassDef) and node.decorator_list:
            problems.append(f"{where}: class decorator (no dataclasses)")
        elif isinstance(node, (ast.AsyncFunctionDef, ast.Await)):
            problems.append(f"{where}: async")
    assert problems == []
