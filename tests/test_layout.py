"""Size rules a reader relies on: functions under 60 lines, source files under 400, test modules independent.

Each failure lists every violation as ``path:line name (N lines)``, so one run shows all that is left to do.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "lmtune"
TESTS = ROOT / "tests"
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _functions(tree: ast.AST, prefix: str = ""):
    """Every function and method in ``tree`` (nested ones too), with its dotted name."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not isinstance(node, ast.ClassDef):
                yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _report(violations: list[str]) -> str:
    text = "\n".join(violations)
    print(text)
    return f"{len(violations)} violation(s):\n{text}"


def test_no_function_in_the_source_is_over_60_lines():
    violations = []
    for path in sorted(SOURCE.rglob("*.py")):
        for name, node in _functions(ast.parse(path.read_text(), str(path))):
            # From the ``def`` line to the end of the body, decorators excluded: what a reader scrolls through.
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                violations.append(f"{_relative(path)}:{node.lineno} {name} ({length} lines)")
    assert not violations, _report(violations)


def test_no_source_file_is_over_400_lines():
    violations = []
    for path in sorted(SOURCE.rglob("*.py")):
        length = len(path.read_text().splitlines())
        if length > MAX_FILE_LINES:
            violations.append(f"{_relative(path)}:1 {path.name} ({length} lines)")
    assert not violations, _report(violations)


def test_no_test_module_imports_another():
    """Shared helpers live in conftest.py or a helper module (tiny.py, hostile.py, ...), never in a test file."""
    test_modules = {path.stem for path in TESTS.rglob("test_*.py")}
    violations = []
    for path in sorted(TESTS.rglob("test_*.py")):
        nodes = ast.walk(ast.parse(path.read_text(), str(path)))
        for node in sorted(nodes, key=lambda n: getattr(n, "lineno", 0)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for imported in names:
                if imported.split(".")[0] in test_modules:
                    violations.append(f"{_relative(path)}:{node.lineno} imports {imported}")
    assert not violations, _report(violations)
