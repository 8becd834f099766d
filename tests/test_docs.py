"""The docs' code examples run, and print what the docs say they print.

Every Python code block of every page in ``docs/`` (```` ```python ```` fences
in MyST pages, ``.. code-block:: python`` in reST pages) is executed, in
page order, in one namespace per page, like a reader working down the page
would run them. Each page runs in its own Python process with a time limit,
so a hanging example fails instead of blocking; the process runs with
warnings as errors, and anything it writes to stderr (a leaked socket's
``ResourceWarning``, a logged error) fails the page.

Where a block prints, the page shows the output in a ```` ```text ````
block introduced by a line ending in "prints:"; the printed text must be
exactly that. A block that prints without showing its output fails too.

The generated state diagram (``docs/_ext/netstream_gen.py``) is checked
against the library's transition table, and the generated alias tables
against the Node names of the original ``net.Stream``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import trio_netstream as net
from trio_netstream import _state

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = DOCS / "examples"
PAGE_TIMEOUT = 60  # seconds, a backstop: a block that hangs is stopped after BLOCK_TIMEOUT

# Runs in the page's process: execute each block, capture what it prints.
# Runs in the page's process: execute each block, capture what it prints. A
# block that hangs gets its traceback dumped (faulthandler) and ends the process.
RUNNER = r"""
import contextlib, faulthandler, io, json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
results = []
for block in blocks:
    print(MARK + block["where"], file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(BLOCK_TIMEOUT, exit=True)
    out = io.StringIO()
    error = None
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(block["code"], block["where"], "exec"), namespace)
    except BaseException:
        error = traceback.format_exc()
    faulthandler.cancel_dump_traceback_later()
    results.append({"out": out.getvalue(), "error": error})
    if error:
        break
sys.stdout.write(json.dumps(results))
"""
MARK = "@@ running "
BLOCK_TIMEOUT = 10  # seconds; each block takes a fraction of one


FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
PRINTS = re.compile(r"prints:\s*$", re.IGNORECASE)


@dataclass
class Block:
    where: str  # "docs/page.md:12"
    code: str
    expected: str | None = None


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)


def _md_blocks(path: Path) -> list[Block]:
    """Python fences, each with the ```text output block that follows it, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    last_prose = ""
    while index < len(lines):
        match = FENCE.match(lines[index].strip())
        if not match:
            if lines[index].strip():
                last_prose = lines[index].strip()
            index += 1
            continue
        fence, info = match["fence"], match["info"].strip()
        start = index + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = "\n".join(lines[start:end]) + "\n"
        language = info.split()[0] if info else ""
        if language in ("python", "py", "python3"):
            blocks.append(Block(f"{path.relative_to(DOCS.parent)}:{index + 1}", body))
        elif language == "text" and PRINTS.search(last_prose):
            assert blocks, f"{path}:{index + 1}: an output block before any code block"
            assert blocks[-1].expected is None, f"{path}:{index + 1}: a second output block"
            blocks[-1].expected = body
        last_prose = ""
        index = end + 1
    return blocks


RST_CODE = re.compile(r"^(?P<indent>\s*)\.\. (code-block|code|sourcecode)::\s*(?P<lang>\S*)")


def _rst_blocks(path: Path) -> list[Block]:
    """``.. code-block:: python`` blocks (the pages use no ``::`` literal blocks)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        assert not re.search(r"(^|[^:]):: *$", line) or line.lstrip().startswith(".. "), (
            f"{path}:{index + 1}: use '.. code-block:: python' (tested) instead of '::'"
        )
        match = RST_CODE.match(line)
        if not match or match["lang"] not in ("python", "py", "python3", ""):
            continue
        indent = len(match["indent"])
        body: list[str] = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        code = [text for text in body if not text.strip().startswith(":")]  # options
        width = min(len(text) - len(text.lstrip()) for text in code if text.strip())
        source = "\n".join(text[width:] for text in code).strip("\n") + "\n"
        blocks.append(Block(f"{path.relative_to(DOCS.parent)}:{index + 1}", source))
    return blocks


def _pages() -> list[Page]:
    pages = []
    for path in sorted(DOCS.glob("*.md")) + sorted(DOCS.glob("*.rst")):
        blocks = _md_blocks(path) if path.suffix == ".md" else _rst_blocks(path)
        pages.append(Page(path, blocks))
    return pages


PAGES = _pages()


def test_the_docs_have_examples() -> None:
    """The pages this suite exists for are found, with their examples."""
    with_code = {page.path.name for page in PAGES if page.blocks}
    assert {"index.md", "tutorial.md", "porting.md", "events.md"} <= with_code
    assert sum(len(page.blocks) for page in PAGES) >= 25


@pytest.mark.parametrize("page", [p for p in PAGES if p.blocks], ids=lambda p: p.path.name)
def test_page_examples_run(page: Page) -> None:
    """Every block of the page runs; what it prints is what the page shows."""
    payload = json.dumps([{"where": b.where, "code": b.code} for b in page.blocks])
    prelude = f"MARK = {MARK!r}\nBLOCK_TIMEOUT = {BLOCK_TIMEOUT}\n"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", prelude + RUNNER],
        input=payload,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT,
        cwd=EXAMPLES,  # the STARTTLS walkthrough imports the example next to it
        check=False,
    )
    stderr = "".join(
        line for line in result.stderr.splitlines(keepends=True) if not line.startswith(MARK)
    )
    assert result.returncode == 0, f"the page's process failed:\n{result.stderr}"
    runs = json.loads(result.stdout)
    # The runner stops at the first block that raises: that block is reported.
    for block, run in zip(page.blocks, runs, strict=False):
        assert run["error"] is None, f"{block.where} raised:\n{run['error']}"
        if block.expected is None:
            assert run["out"] == "", f"{block.where} prints, but the page shows no output"
        else:
            assert run["out"] == block.expected, f"{block.where} printed something else"
    assert len(runs) == len(page.blocks)
    assert stderr == "", f"the page's examples wrote to stderr:\n{stderr}"


# -- the generated parts -----------------------------------------------------------


@pytest.fixture(scope="module")
def gen() -> Iterator[Any]:
    """``docs/_ext/netstream_gen.py``, the docs' generator (it needs no Sphinx)."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import netstream_gen

        yield netstream_gen
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_state_diagram_draws_every_transition(gen: Any) -> None:
    """One arrow per entry of TRANSITIONS (and nothing else), every state a box."""
    svg = gen.render_svg(gen.state_graph(), "states")
    arrows = re.findall(r"<title>(\w+) --(.+?)--&gt; (\w+)</title>", svg)
    expected = [
        (source.name, given.value, target.name)
        for (source, given), target in _state.TRANSITIONS.items()
    ]
    assert sorted(arrows) == sorted(expected)
    for state in _state.State:
        assert f">{state.name}</text>" in svg
        assert f"ready_state {state.ready_state!r}" in svg


def test_state_diagram_follows_the_table(gen: Any) -> None:
    """Drawn from whatever table it is given: a changed table, a changed picture."""
    graph = gen.Graph(
        nodes=["A", "B", "C"],
        captions={"A": "a", "B": "b", "C": "c"},
        edges=[
            gen.Edge("A", "B", "go", "GO"),
            gen.Edge("B", "C", "on", "ON"),
            gen.Edge("C", "A", "back", "BACK"),
        ],
    )
    svg = gen.render_svg(graph, "three")
    assert re.findall(r"<title>(\w+) --(.+?)--&gt; (\w+)</title>", svg) == [
        ("A", "go", "B"),
        ("B", "on", "C"),
        ("C", "back", "A"),
    ]
    assert svg.count("<rect ") == 3


# The Node names of the original net.Stream that the library promises: every
# one must be found.
NODE_STREAM_ALIASES = {
    "readyState": "ready_state",
    "remoteAddress": "remote_address",
    "setEncoding": "set_encoding",
    "setSecure": "set_secure",
    "verifyPeer": "verify_peer",
    "getPeerCertificate": "get_peer_certificate",
    "setTimeout": "set_timeout",
    "setNoDelay": "set_no_delay",
    "setKeepAlive": "set_keep_alive",
    "addListener": "on",
    "removeListener": "remove_listener",
    "removeAllListeners": "remove_all_listeners",
    "listenerCount": "listener_count",
    "bytesRead": "bytes_read",
    "bytesWritten": "bytes_written",
    "remotePort": "remote_port",
    "localAddress": "local_address",
    "localPort": "local_port",
}


def test_alias_tables_list_the_node_names(gen: Any) -> None:
    """The generated alias tables hold every Node name the library promises."""
    stream = {node: python.split(", ") for node, python in gen.node_aliases(net.Stream)}
    for node, python in NODE_STREAM_ALIASES.items():
        assert python in stream[node], node
    module = dict(gen.node_aliases(net))
    assert "create_connection" in module["createConnection"]
    assert module["createServer"] == "create_server"
    server = dict(gen.node_aliases(net.Server))
    assert server["maxConnections"] == "max_connections"
