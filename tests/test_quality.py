"""The project's own checks, run by the test command so CI enforces them:
ruff (lint and format), mypy --strict and pyright strict on the package, and
the Sphinx docs built with warnings as errors."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:  # pragma: no cover - the test extras install every one
        pytest.fail(f"{name} is not installed; `pip install -e .[test]` installs it")
    return path


def test_ruff_check_is_clean() -> None:
    result = run(tool("ruff"), "check", "trio_netstream", "tests", "noxfile.py", "docs")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = run(tool("ruff"), "format", "--check", "trio_netstream", "tests", "noxfile.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = run(sys.executable, "-m", "mypy", "--strict", "trio_netstream")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyright_strict_is_clean() -> None:
    result = run(tool("pyright"), "--pythonpath", sys.executable)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    result = run(
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "docs",
        str(tmp_path / "html"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "index.html").exists()
    assert (tmp_path / "html" / "events.html").exists()


PACKAGE = ROOT / "trio_netstream"


def _definitions() -> list[tuple[str, int, str, int]]:
    """Every function and class of the package: (file, line, name, length in
    lines, from the ``def``/``class`` line to the last line of its body)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                kind = "class " if isinstance(node, ast.ClassDef) else ""
                where = str(path.relative_to(ROOT))
                found.append((where, node.lineno, kind + node.name, length))
    return found


def test_no_function_over_60_lines_and_no_class_over_400() -> None:
    too_long = [
        f"{where}:{line} {name} ({length} lines)"
        for where, line, name, length in _definitions()
        if length > (400 if name.startswith("class ") else 60)
    ]
    assert too_long == []


def test_no_private_usage_is_suppressed() -> None:
    """pyright strict (above) reports every use of another class's or
    module's private name; none may be silenced."""
    offences = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, text in enumerate(path.read_text().splitlines(), 1)
        if "reportPrivateUsage" in text
    ]
    assert offences == []
