"""The project's own checks, run by the test command so CI enforces them:
ruff (lint and format), mypy --strict and pyright strict on the package, and
the Sphinx docs built with warnings as errors."""

from __future__ import annotations

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
