"""nox sessions: tests (every installed Python 3.10-3.13), lint, typecheck."""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The README's test command runs pytest with exactly these arguments.
TEST_ARGS = ["--cov=trio_netstream", "--cov-branch", "--cov-fail-under=90"]

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = False


def _expose_pyenv_versions() -> None:
    """Make every pyenv-installed 3.10-3.13 reachable as ``pythonX.Y``."""
    if "PYENV_VERSION" in os.environ or shutil.which("pyenv") is None:
        return
    bare = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    wanted = [v for v in bare if any(v == p or v.startswith(p + ".") for p in PYTHONS)]
    if wanted:
        os.environ["PYENV_VERSION"] = ":".join(wanted)


_expose_pyenv_versions()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *TEST_ARGS, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "trio_netstream", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_netstream", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict and pyright strict (pyrightconfig.json) on the package, then
    the typed-listener checks (tests/test_typing.py runs both on tests/typing/)."""
    session.install("-e", ".[test]", "mypy", "pyright", "typing_extensions", "exceptiongroup")
    session.run("mypy", "--strict", "trio_netstream")
    session.run("mypy", "--strict", "benchmarks")
    session.run("pyright", "--pythonpath", session.virtualenv.location + "/bin/python")
    session.run("python", "-m", "pytest", "tests/test_typing.py", "-p", "no:cacheprovider")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (minutes); writes docs/performance.md and .png.

    The harness lives in benchmarks/, outside the package; arguments go to it:
    ``nox -s bench -- --quick``, ``nox -s bench -- --baseline ../old-checkout``.
    """
    session.install("-e", ".", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The Sphinx site in docs/_build/html; any warning fails the build."""
    session.install("-e", ".", "sphinx", "sphinxcontrib-trio", "myst-parser")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
