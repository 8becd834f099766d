"""A newcomer's first hour with the README and the docs (issue 14).

* Only words a reader was told about: no "the seed", no "the SPEC" (the
  project's private names for early Node's ``net.Stream`` and for its own
  contract), in the sources or in the built pages.
* The README works on a package index page too (absolute links), says
  what its test command runs and how long it takes, and keeps its two
  commands as ``.ci/run`` runs them.
* Porting covers today's Node, not only the original ``net.Stream``.
* The built pages: the README's commands are shown whole on the index page,
  the state diagram's edges into DESTROYED are legible and no edge crosses
  a state it does not touch, the demo's transcript is in the order the demo
  prints it, and the events page speaks to users, not to maintainers.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_netstream import _state

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
REPOSITORY = "https://github.com/trio-netstream/trio_netstream/"

# -- words the reader was never told -------------------------------------------------

# Whole words, case-insensitive ("SPEC.md" and "the seed's" match; "inspect",
# "option_spec" and "specification" do not).
UNTOLD = re.compile(r"\b(seed|spec)\b", re.IGNORECASE)
TEXT_SUFFIXES = {".md", ".rst", ".py", ".css", ".txt", ".js", ".html"}


def _sources() -> list[Path]:
    found = [README]
    for path in sorted(DOCS.rglob("*")):
        if path.suffix in TEXT_SUFFIXES and "_build" not in path.parts:
            found.append(path)
    return found


def _untold(text: str) -> list[str]:
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        if UNTOLD.search(line):
            hits.append(f"{number}: {line.strip()}")
    return hits


@pytest.mark.parametrize("path", _sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_sources_use_only_words_the_reader_knows(path: Path) -> None:
    """Node's ``net`` module and this library's contract, never "the seed" or
    "the SPEC" (words the reader was never given)."""
    assert _untold(path.read_text(encoding="utf-8")) == []


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built as ``nox -s docs`` builds it."""
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _page_text(page: Path) -> str:
    """The words of a built page: tags, scripts and styles dropped."""
    source = page.read_text(encoding="utf-8")
    source = re.sub(r"<(script|style)\b.*?</\1>", " ", source, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", source))


def test_built_pages_use_only_words_the_reader_knows(built: Path) -> None:
    """Docstrings pulled in by autodoc included; the sidebar too."""
    hits = {}
    for page in sorted(built.glob("*.html")):
        found = _untold(_page_text(page))
        if found:
            hits[page.name] = found
    assert hits == {}


# -- the README --------------------------------------------------------------------

README_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -q ."
    " && .venv/bin/python -m trio_netstream demo",
    'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]"'
    " && .venv/bin/python -m pytest --cov=trio_netstream --cov-branch --cov-fail-under=90",
]


def test_readme_opens_with_its_two_commands() -> None:
    """The first code of the README is exactly the two commands, and the test
    command is the one ``.ci/run`` runs."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("```sh")
    assert not any(line.startswith("```") for line in lines[:start])
    assert lines[start + 1 : start + 4] == [*README_COMMANDS, "```"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == README_COMMANDS[1]


def test_readme_says_what_the_test_command_runs_and_how_long() -> None:
    """Between the commands and the rule below them: the time it takes, the
    linter, both type checkers and the docs build."""
    text = README.read_text(encoding="utf-8")
    intro = text[text.index("```\n", text.index("```sh")) : text.index("\n---\n")]
    intro = " ".join(intro.split())
    assert re.search(r"about \d+.\d+ minutes", intro), intro
    for word in ("ruff", "mypy", "pyright", "docs build"):
        assert word in intro, word


def test_readme_links_work_on_a_package_index_page() -> None:
    """Every link is absolute; links into the repository name a file that exists."""
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "the README links to its docs"
    for link in links:
        assert link.startswith("https://"), link
        if link.startswith(REPOSITORY):
            kind, branch, path = link[len(REPOSITORY) :].split("/", 2)
            assert (kind, branch) in {("blob", "main"), ("tree", "main")}, link
            assert (ROOT / path).exists(), link


# -- porting from today's Node -------------------------------------------------------

TODAYS_NODE = [
    # (today's Node, trio_netstream)
    ("`new net.Socket()`", "`net.Socket()`"),
    ("`net.connect(port, host, listener)`", "`net.connect(port, host, listener)`"),
    ("`net.connect(port, listener)`", "`net.connect(port, listener)`"),
    (
        "`net.createConnection({port: 8124, host: 'example.org'})`",
        '`net.create_connection({"port": 8124, "host": "example.org"})`',
    ),
    ("`server.listen(port, host, listener)`", "`await server.listen(port, host, listener)`"),
    ("`server.listen(port, listener)`", "`await server.listen(port, listener)`"),
    (
        "`server.listen({port: 8124, host: 'localhost', backlog: 511})`",
        '`await server.listen({"port": 8124, "host": "localhost", "backlog": 511})`',
    ),
    ("`server.listen('8124')`", '`await server.listen("8124")`'),
    ("`server.on('error', ...)`", "`except OSError as error:`"),
    ("`allowHalfOpen: false` by default", "`allow_half_open=True` by default"),
]


def test_porting_has_a_table_from_todays_node() -> None:
    """Each form of today's Node sits in one row with its spelling here."""
    text = (DOCS / "porting.md").read_text(encoding="utf-8")
    section = text[text.index("\n## From today's Node\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for node, ours in TODAYS_NODE:
        assert any(node in row and ours in row for row in rows), node


# -- the index page: the README's commands, the demo's transcript ---------------------


def test_index_shows_the_readme_commands_whole(built: Path) -> None:
    """Each command is on the page, in a block that wraps between words
    (``div.command``) instead of being cut off at the right edge."""
    page = (built / "index.html").read_text(encoding="utf-8")
    blocks = re.findall(r'<div class="command highlight"><pre>(.*?)</pre></div>', page, re.DOTALL)
    shown = [html.unescape(re.sub(r"<[^>]+>", "", block)) for block in blocks]
    assert shown == README_COMMANDS
    for block in blocks:
        words = re.findall(r'<span class="word[^"]*">(.*?)</span>', block)
        assert " ".join(html.unescape(word) for word in words) == html.unescape(
            re.sub(r"<[^>]+>", "", block)
        )
    css = (DOCS / "_static" / "custom.css").read_text(encoding="utf-8")
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    rules = {name.strip(): body for name, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)}
    assert "white-space: pre-wrap" in rules["div.command pre"]
    assert "white-space: nowrap" in rules["div.command span.word"]


def _index_transcript() -> list[str]:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    after = text[text.index("The demo's transcript") :]
    start = after.index("```{code-block} text\n") + len("```{code-block} text\n")
    return after[start : after.index("```", start)].splitlines()


PORT = re.compile(r"(?<=', )\d+(?=\))|(?<=:)\d+(?=')")
LINE = re.compile(r"^(?P<side>\S+)\s+(?P<event>\w+)\((?P<args>.*)\)$")


def _canonical(lines: list[str]) -> list[str]:
    """The transcript with what legitimately varies between runs taken out:
    the port numbers; which of a client's ``connect()`` and the server's
    ``connection(...)`` comes first; and how the bytes are split into
    ``data`` events (a side's data is merged into its next ``data`` when
    only the other side's lines come between)."""
    lines = [PORT.sub("N", line) for line in lines]
    for i in range(len(lines) - 1):
        first, second = LINE.match(lines[i]), LINE.match(lines[i + 1])
        if (
            first
            and second
            and first["side"] != second["side"]
            and (first["event"], second["event"]) == ("connect", "connection")
        ):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
    merged: list[str] = []
    for line in lines:
        match = LINE.match(line)
        if match and match["event"] == "data":
            for j in range(len(merged) - 1, -1, -1):
                earlier = LINE.match(merged[j])
                if earlier is None or earlier["side"] == match["side"]:
                    if earlier and earlier["event"] == "data":
                        payload = earlier["args"][1:-1] + match["args"][1:-1]
                        del merged[j]
                        line = f"{match['side']} data('{payload}')"
                    break
        merged.append(line)
    return merged


def test_canonical_transcript_knows_only_the_documented_races() -> None:
    """What ``_canonical`` forgives, and what it does not."""
    one = ["s connection('h:1')", "c connect()", "c data('a')", "s data('x')", "c data('b')"]
    two = ["c connect()", "s connection('h:2')", "s data('x')", "c data('ab')"]
    assert _canonical(one) == _canonical(two)
    assert _canonical(["s end()", "c end()"]) != _canonical(["c end()", "s end()"])


def test_index_transcript_is_what_the_demo_prints() -> None:
    """The transcript on the index page, line by line as the demo prints it."""
    result = subprocess.run(
        [sys.executable, "-m", "trio_netstream", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _canonical(_index_transcript()) == _canonical(result.stdout.splitlines())


# -- the events page ----------------------------------------------------------------


def test_events_page_speaks_to_users(built: Path) -> None:
    """No module docstring written for the library's maintainers."""
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    assert not re.search(r"automodule::\s*trio_netstream\._", text)
    page = " ".join(_page_text(built / "events.html").split())
    for maintainers_words in ("this module", "imports no Trio", "h11"):
        assert maintainers_words not in page


def test_events_page_lists_every_state() -> None:
    """The table of states names each state of the diagram and its ``ready_state``."""
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    rows = re.findall(r'^\| ([A-Z_]+) \| `"(\w+)"` \|', text, re.MULTILINE)
    assert rows == [(state.name, state.ready_state) for state in _state.State]


# -- the state diagram ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gen() -> Iterator[Any]:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import netstream_gen

        yield netstream_gen
    finally:
        sys.path.remove(str(DOCS / "_ext"))


NUMBER = r"-?\d+(?:\.\d+)?"


def _boxes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """Each state's box: (left, top, right, bottom)."""
    found = re.findall(
        rf'<rect x="({NUMBER})" y="({NUMBER})" width="({NUMBER})" height="({NUMBER})"'
        r"[^>]*/>\s*<text[^>]*>(\w+)</text>",
        svg,
    )
    return {
        name: (float(x), float(y), float(x) + float(w), float(y) + float(h))
        for x, y, w, h, name in found
    }


def _paths(svg: str) -> list[tuple[list[tuple[float, float]], bool]]:
    """Each path as points sampled along its curves, and whether it ends in
    an arrowhead."""
    paths = []
    for d, rest in re.findall(r'<path d="(M[^"]+)"([^>]*)>', svg):
        numbers = [float(n) for n in re.findall(NUMBER, d)]
        points = list(zip(numbers[::2], numbers[1::2], strict=True))
        samples = [points[0]]
        for k in range(1, len(points) - 2, 3):
            p0, p1, p2, p3 = points[k - 1], points[k], points[k + 1], points[k + 2]
            for step in range(1, 21):
                t = step / 20
                a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
                samples.append(
                    (
                        a * p0[0] + b * p1[0] + c * p2[0] + e * p3[0],
                        a * p0[1] + b * p1[1] + c * p2[1] + e * p3[1],
                    )
                )
        paths.append((samples, "marker-end" in rest))
    return paths


def _inside(point: tuple[float, float], box: tuple[float, ...], margin: float) -> bool:
    left, top, right, bottom = box
    x, y = point
    return left + margin < x < right - margin and top + margin < y < bottom - margin


def _touches(point: tuple[float, float], box: tuple[float, ...]) -> bool:
    return _inside(point, box, -1.0)


def test_state_diagram_edges_cross_no_state(gen: Any) -> None:
    """An edge runs from its state to its state and through no other's box
    (nor across a corner of one)."""
    svg = gen.render_svg(gen.state_graph(), "states")
    boxes = _boxes(svg)
    assert set(boxes) == {state.name for state in _state.State}
    for samples, _ in _paths(svg):
        ends = {name for name, box in boxes.items() if _touches(samples[0], box)}
        ends |= {name for name, box in boxes.items() if _touches(samples[-1], box)}
        for name, box in boxes.items():
            if name not in ends:
                crossing = [p for p in samples if _inside(p, box, -2.0)]
                assert crossing == [], f"an edge crosses {name} at {crossing[0]}"


def test_state_diagram_joins_the_edges_into_destroyed(gen: Any) -> None:
    """Every state's ``destroy()`` edge ends in one arrowhead at DESTROYED,
    under one label; each is still its own arrow (see test_docs.py)."""
    svg = gen.render_svg(gen.state_graph(), "states")
    destroyed = _boxes(svg)["DESTROYED"]
    tips = {
        (round(samples[-1][0], 1), round(samples[-1][1], 1))
        for samples, arrow in _paths(svg)
        if arrow and _touches(samples[-1], destroyed)
    }
    assert len(tips) == 1
    assert svg.count(">destroy() / failure</text>") == 1
    assert ">destroy()</text>" not in svg
    sources = re.findall(r"<title>(\w+) --destroy\(\)--&gt; DESTROYED</title>", svg)
    live = [state.name for state in _state.State if state.name not in ("CLOSED", "DESTROYED")]
    assert sorted(sources) == sorted(live)


def test_state_diagram_joins_any_shared_target(gen: Any) -> None:
    """The rule, on a graph of its own: edges with one target and one label
    share a label and an arrowhead; other edges keep theirs."""
    graph = gen.Graph(
        nodes=["A", "B", "C", "D"],
        captions={name: name.lower() for name in "ABCD"},
        edges=[
            gen.Edge("A", "B", "go", "GO"),
            gen.Edge("A", "D", "stop", "STOP"),
            gen.Edge("B", "C", "go", "GO"),
            gen.Edge("B", "D", "stop", "STOP"),
            gen.Edge("C", "D", "stop", "STOP"),
        ],
    )
    svg = gen.render_svg(graph, "four")
    assert svg.count(">stop</text>") == 1
    assert svg.count(">go</text>") == 2
    d = _boxes(svg)["D"]
    tips = {(round(s[-1][0], 1), round(s[-1][1], 1)) for s, arrow in _paths(svg) if arrow}
    assert len([tip for tip in tips if _touches(tip, d)]) == 1
    assert len(re.findall(r"<title>\w+ --stop--&gt; D</title>", svg)) == 3


def test_api_signatures_show_default_values(built: Path) -> None:
    """``host='127.0.0.1'``, not the name of a private constant."""
    page = _page_text(built / "api.html")
    assert "host: str = '127.0.0.1'" in page
    assert not re.search(r"=\s*_?[A-Z][A-Z_]{2,}\b", page)
