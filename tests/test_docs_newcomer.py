"""A newcomer's first hour with the docs (issue 14).

* The events page speaks to users, not to maintainers.
* The state diagram's edges into DESTROYED are legible, and no edge
  crosses a state it does not touch.
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
