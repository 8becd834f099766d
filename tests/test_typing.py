"""Typed event registration: ``tests/typing/check_listeners.py`` is type-checked.

Every line of that file marked ``# E: <mypy code>`` must be reported as an
error (by mypy with that code, by pyright at that line), and no other line
may be. The file is never executed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ROOT / "tests" / "typing" / "check_listeners.py"
MARK = re.compile(r"#\s*E:\s*([\w-]+)\s*$")


def expected_errors() -> set[tuple[int, str]]:
    lines = CHECKED.read_text(encoding="utf-8").splitlines()
    marked = {
        (number, match[1])
        for number, line in enumerate(lines, start=1)
        if (match := MARK.search(line)) is not None
    }
    assert marked, "the check file marks no expected error"
    return marked


def test_mypy_reports_exactly_the_marked_listener_errors(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    out, err, _status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--strict",
            "--show-error-codes",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(CHECKED),
        ]
    )
    assert err == ""
    found = set()
    for line in out.splitlines():
        match = re.match(r"^(.+?):(\d+): error: .*\[([\w-]+)\]$", line)
        if match:
            assert Path(match[1]).resolve() == CHECKED, line
            found.add((int(match[2]), match[3]))
        else:
            assert ": note: " in line, line
    assert sorted(found) == sorted(expected_errors()), out


def _pyright() -> list[str]:
    beside = Path(sys.executable).with_name("pyright")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pyright")
    if found is None:
        pytest.skip("pyright is not installed (pip install pyright)")
    return [found]


def test_pyright_reports_errors_on_exactly_the_marked_lines() -> None:
    result = subprocess.run(
        [*_pyright(), "--outputjson", "--pythonpath", sys.executable, str(CHECKED)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    report = json.loads(result.stdout)
    found = {
        diagnostic["range"]["start"]["line"] + 1
        for diagnostic in report["generalDiagnostics"]
        if diagnostic["severity"] == "error"
    }
    assert sorted(found) == sorted(line for line, _ in expected_errors()), result.stdout
