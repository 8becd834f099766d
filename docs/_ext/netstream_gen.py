"""The generated parts of the docs, without Sphinx (so tests can check them).

* :func:`render_svg` draws the stream's ready-state machine as SVG from
  :data:`trio_netstream._state.TRANSITIONS` (see :func:`state_graph`): a small
  layered ("Sugiyama") layout in plain Python, so the docs need no Graphviz
  binary, no JavaScript and no network, and the picture cannot drift from
  the code. Edges that share a target and a label (every state's
  ``destroy()``) join before it: one label, one arrowhead.
* :func:`node_aliases` finds the Node (camelCase) names of a class or module
  and the Python names they are the very same object as.
* :func:`readme_commands` reads the README's commands, and
  :func:`command_html` shows one so that it wraps between words only.
"""

from __future__ import annotations

import html
import inspect
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# -- the graph -------------------------------------------------------------


@dataclass
class Edge:
    source: str
    target: str
    label: str  # the input, as the table names it
    kind: str  # the input's name, for styling
    text: str = ""  # what the diagram shows (default: the label)

    @property
    def shown(self) -> str:
        return self.text or self.label


@dataclass
class Graph:
    nodes: list[str]  # in definition order; the first is the initial state
    captions: dict[str, str]  # second line of a node's box
    edges: list[Edge]


# How the diagram words an input, where the table's name alone would mislead
# a reader: a failure moves a stream to DESTROYED just as destroy() does.
SHOWN = {"DESTROY": "destroy() / failure"}


def state_graph() -> Graph:
    """The stream's state machine, read from ``trio_netstream._state``."""
    from trio_netstream import _state

    states = list(_state.State)
    graph = Graph(
        nodes=[state.name for state in states],
        captions={state.name: f"ready_state {state.ready_state!r}" for state in states},
        edges=[],
    )
    for (source, given), target in _state.TRANSITIONS.items():
        shown = SHOWN.get(given.name, "")
        graph.edges.append(Edge(source.name, target.name, given.value, given.name, shown))
    return graph


# -- layout ------------------------------------------------------------------
#
# Top to bottom: every state gets a rank (its longest path from the initial
# state, cycles broken at their back edges), ranks become rows, and the rows
# in between hold the edges' labels and the bends of edges that span several
# rows. Forward edges with the same target and label join in the row above
# their target, at one shared label, and go on as one line with one
# arrowhead. Rows are ordered by barycentre sweeps (fewest crossings kept),
# then every item is pulled towards its neighbours while keeping its row's
# order and gaps. An edge runs straight down through every row it crosses
# (beside the states and labels there, never across them) and bends only in
# the gaps between rows, as a cubic curve, vertical at each end.

FONT = 12.0  # px; monospace, so a character is 0.6 em wide
CHAR = FONT * 0.6
NODE_HEIGHT = 40.0
NODE_PAD = 12.0
LABEL_HEIGHT = 16.0
GAP = 16.0  # between neighbours in a row
ROW_GAP = 20.0  # between rows
MARGIN = 12.0
SCALE = 1.2  # shown a little larger than drawn: the text stays readable


@dataclass
class Item:
    """One slot of a row: a state, an edge label, or a bend of a long edge.

    ``x`` is where edges pass (a state's centre, a label's left edge); the
    item covers ``x - before`` to ``x + after`` of its row.
    """

    key: str
    kind: str  # "node" | "label" | "bend" | "join" (the label where edges join)
    before: float
    after: float
    height: float
    layer: int = 0
    x: float = 0.0
    y: float = 0.0  # centre of the row
    text: str = ""


@dataclass
class Route:
    edge: Edge
    items: list[Item] = field(default_factory=list)  # source ... target, in edge direction


def _text_width(text: str) -> float:
    return len(text) * CHAR


def _back_edges(graph: Graph) -> set[int]:
    """Edges that close a cycle (found by DFS from the initial state)."""
    out: dict[str, list[int]] = {name: [] for name in graph.nodes}
    for index, edge in enumerate(graph.edges):
        out[edge.source].append(index)
    back: set[int] = set()
    done: set[str] = set()
    active: set[str] = set()

    def visit(name: str) -> None:
        active.add(name)
        for index in out[name]:
            target = graph.edges[index].target
            if target in active:
                back.add(index)
            elif target not in done:
                visit(target)
        active.discard(name)
        done.add(name)

    for name in graph.nodes:
        if name not in done:
            visit(name)
    return back


def _ranks(graph: Graph, back: set[int]) -> dict[str, int]:
    """Longest-path ranks of the graph with its back edges turned round."""
    rank = {name: 0 for name in graph.nodes}
    forward = [
        (e.target, e.source) if i in back else (e.source, e.target)
        for i, e in enumerate(graph.edges)
        if e.source != e.target
    ]
    for _ in graph.nodes:  # enough rounds for any DAG of this size
        changed = False
        for source, target in forward:
            if rank[target] < rank[source] + 1:
                rank[target] = rank[source] + 1
                changed = True
        if not changed:
            break
    return rank


def _crossings(layers: list[list[Item]], links: list[tuple[Item, Item]]) -> int:
    position = {id(item): i for layer in layers for i, item in enumerate(layer)}
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for a, b in links:
        by_layer.setdefault(a.layer, []).append((position[id(a)], position[id(b)]))
    total = 0
    for pairs in by_layer.values():
        for i, (a1, b1) in enumerate(pairs):
            for a2, b2 in pairs[i + 1 :]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total


def _order(layers: list[list[Item]], links: list[tuple[Item, Item]]) -> list[list[Item]]:
    """Barycentre sweeps; keep the ordering with the fewest crossings."""
    up: dict[int, list[Item]] = {}
    down: dict[int, list[Item]] = {}
    for a, b in links:  # a.layer + 1 == b.layer
        down.setdefault(id(a), []).append(b)
        up.setdefault(id(b), []).append(a)
    best = [list(layer) for layer in layers]
    best_count = _crossings(best, links)
    current = [list(layer) for layer in layers]
    for sweep in range(24):
        downward = sweep % 2 == 0
        indices = range(1, len(current)) if downward else range(len(current) - 2, -1, -1)
        for index in indices:
            fixed = current[index - 1] if downward else current[index + 1]
            where = {id(item): i for i, item in enumerate(fixed)}
            neighbours = up if downward else down
            layer = current[index]
            was = {id(item): i for i, item in enumerate(layer)}

            def key(
                item: Item,
                where: dict[int, int] = where,
                neighbours: dict[int, list[Item]] = neighbours,
                was: dict[int, int] = was,
            ) -> tuple[float, int]:
                near = [where[id(other)] for other in neighbours.get(id(item), [])]
                centre = sum(near) / len(near) if near else float(was[id(item)])
                return (centre, was[id(item)])

            layer.sort(key=key)
        count = _crossings(current, links)
        if count < best_count:
            best, best_count = [list(layer) for layer in current], count
    return best


def _pava(targets: Sequence[float], offsets: Sequence[float]) -> list[float]:
    """Positions closest (least squares) to *targets* that keep each item at
    least the gap given by *offsets* (cumulative) after the one before it."""
    blocks: list[list[float]] = []  # [sum, count]
    for target, offset in zip(targets, offsets, strict=True):
        blocks.append([target - offset, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    values: list[float] = []
    for total, count in blocks:
        values.extend([total / count] * int(count))
    return [value + offset for value, offset in zip(values, offsets, strict=True)]


def _joins(graph: Graph, back: set[int], items: dict[str, Item]) -> dict[int, Item]:
    """The shared label of every group of forward edges with one target and
    one label (two edges or more), placed in the row above that target."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, edge in enumerate(graph.edges):
        if index not in back and edge.source != edge.target:
            groups.setdefault((edge.target, edge.label), []).append(index)
    joins: dict[int, Item] = {}
    for (target, _), members in groups.items():
        if len(members) < 2:
            continue
        text = graph.edges[members[0]].shown
        layer = items[target].layer - 1
        join = Item(f"join:{target}:{text}", "join", 2.0, _text_width(text) + 6,
                    LABEL_HEIGHT, layer, text=text)  # fmt: skip
        items[join.key] = join
        joins.update(dict.fromkeys(members, join))
    return joins


def _chains(
    graph: Graph, back: set[int], items: dict[str, Item]
) -> tuple[list[Route], list[tuple[Item, Item]]]:
    """Every edge as a chain of items, one per row it spans, and the links
    between neighbouring rows (each once)."""
    joins = _joins(graph, back, items)
    routes: list[Route] = []
    links: dict[tuple[int, int], tuple[Item, Item]] = {}
    crowd: dict[int, int] = {}  # labels per row; a join counts once per edge it joins
    for join in joins.values():
        crowd[join.layer] = crowd.get(join.layer, 0) + 1
    for index, edge in enumerate(graph.edges):
        if edge.source == edge.target:
            continue  # self-loops are not drawn (no state machine of ours has one)
        start, end = (edge.target, edge.source) if index in back else (edge.source, edge.target)
        first, last = items[start].layer, items[end].layer
        join = joins.get(index)
        if join is None:
            # The label goes to the least crowded row of the span, the one
            # nearest the edge's source among equals.
            near = last if index in back else first
            label_layer = min(
                range(first + 1, last, 2), key=lambda row: (crowd.get(row, 0), abs(row - near))
            )
            crowd[label_layer] = crowd.get(label_layer, 0) + 1
        chain = [items[start]]
        for layer in range(first + 1, last):
            key = f"{index}@{layer}"
            if join is not None and layer == join.layer:
                bend = join
            elif join is None and layer == label_layer:
                width = _text_width(edge.shown) + 6
                bend = Item(key, "label", 2.0, width, LABEL_HEIGHT, layer, text=edge.shown)
            else:
                bend = Item(key, "bend", 0.0, 0.0, 0.0, layer)
            items[bend.key] = bend
            chain.append(bend)
        chain.append(items[end])
        for a, b in itertools.pairwise(chain):
            links[id(a), id(b)] = (a, b)
        if index in back:
            chain.reverse()
        routes.append(Route(edge, chain))
    return routes, list(links.values())


def layout(graph: Graph) -> tuple[list[list[Item]], list[Route], float, float]:
    """Place every state, label and bend; return rows, routes and the size."""
    back = _back_edges(graph)
    rank = _ranks(graph, back)
    items: dict[str, Item] = {}
    for name in graph.nodes:
        half = max(_text_width(name), _text_width(graph.captions[name])) / 2 + NODE_PAD
        items[name] = Item(name, "node", half, half, NODE_HEIGHT, layer=2 * rank[name], text=name)
    routes, links = _chains(graph, back, items)

    depth = max(item.layer for item in items.values()) + 1
    layers: list[list[Item]] = [[] for _ in range(depth)]
    for item in items.values():
        layers[item.layer].append(item)
    layers = _order(layers, links)

    # y: each row as tall as its tallest item.
    # A bend takes its row's height: its edge runs straight down through it.
    y = MARGIN
    for layer in layers:
        height = max((item.height for item in layer), default=0.0)
        for item in layer:
            item.y = y + height / 2
            if item.kind == "bend":
                item.height = height
        y += height + ROW_GAP
    total_height = y - ROW_GAP + MARGIN

    # x: start packed, then pull every item towards its neighbours while
    # keeping the order and the gaps (isotonic regression per row).
    neighbours: dict[int, list[Item]] = {}
    for a, b in links:
        neighbours.setdefault(id(a), []).append(b)
        neighbours.setdefault(id(b), []).append(a)

    def offsets(layer: list[Item]) -> list[float]:
        result, at = [], 0.0
        for i, item in enumerate(layer):
            if i:
                previous = layer[i - 1]
                kinds = {item.kind, previous.kind}
                gap = GAP if kinds == {"node"} else 1.5 * GAP if "node" in kinds else GAP / 2
                at += previous.after + gap + item.before
            result.append(at)
        return result

    for layer in layers:
        for item, at in zip(layer, offsets(layer), strict=True):
            item.x = at
    for _ in range(80):
        for layer in layers:
            targets = []
            for item in layer:
                near = neighbours.get(id(item), [])
                targets.append(sum(o.x for o in near) / len(near) if near else item.x)
            for item, x in zip(layer, _pava(targets, offsets(layer)), strict=True):
                item.x = x
    left = min(item.x - item.before for item in items.values())
    right = max(item.x + item.after for item in items.values())
    for item in items.values():
        item.x += MARGIN - left
    return layers, routes, right - left + 2 * MARGIN, total_height


# -- SVG -------------------------------------------------------------------

STYLES = {
    "DESTROY": ("#b03030", "5,3"),
    "CLOSED": ("#6a6a6a", "2,3"),
}
DEFAULT_STYLE = ("#1f3b5c", "")


def _slots(routes: list[Route]) -> dict[tuple[int, int], float]:
    """Spread the edges meeting a side (top/bottom) of a state along it;
    edges that reach it through the same item (a join) share one slot."""
    ends: dict[tuple[int, int], tuple[Item, dict[int, list[tuple[int, int]]], list[Item]]] = {}
    for r, route in enumerate(routes):
        pairs = ((route.items[0], route.items[1]), (route.items[-1], route.items[-2]))
        for position, (node, other) in enumerate(pairs):
            side = 1 if other.y > node.y else -1
            _, by_other, others = ends.setdefault((id(node), side), (node, {}, []))
            if id(other) not in by_other:
                others.append(other)
            by_other.setdefault(id(other), []).append((r, position))
    slots: dict[tuple[int, int], float] = {}
    for node, by_other, others in ends.values():
        others.sort(key=lambda other: other.x)
        count = len(others)
        spread = min(node.before + node.after - 2 * NODE_PAD, 18.0 * (count - 1))
        for i, other in enumerate(others):
            offset = 0.0 if count == 1 else -spread / 2 + spread * i / (count - 1)
            for key in by_other[id(other)]:
                slots[key] = offset
    return slots


def _port(node: Item, towards: Item, slot: float) -> tuple[float, float]:
    side = 1 if towards.y > node.y else -1
    return node.x + slot, node.y + side * node.height / 2


def _path(points: list[tuple[float, float]]) -> str:
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        mid = (y1 - y0) / 2
        parts.append(f"C{x0:.1f},{y0 + mid:.1f} {x1:.1f},{y1 - mid:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(parts)


def render_svg(graph: Graph, title: str) -> str:
    layers, routes, width, height = layout(graph)
    slots = _slots(routes)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="state-diagram" role="img" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width * SCALE:.0f}" '
        f'style="max-width: 100%; height: auto" '
        f'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT:.0f}">',
        f"<title>{html.escape(title)}</title>",
        "<defs>",
    ]
    colours = sorted({colour for colour, _ in [*STYLES.values(), DEFAULT_STYLE]})
    for n, colour in enumerate(colours):
        out.append(
            f'<marker id="sd-arrow-{n}" viewBox="0 0 10 10" refX="10" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    labels: dict[str, str] = {}  # one text per label item, however many edges join there
    trunks: dict[str, str] = {}  # from each join to its target: drawn once
    for r, route in enumerate(routes):
        colour, dash = STYLES.get(route.edge.kind, DEFAULT_STYLE)
        marker = f' marker-end="url(#sd-arrow-{colours.index(colour)})"'
        dashing = f' stroke-dasharray="{dash}"' if dash else ""
        chain = route.items
        points = [_port(chain[0], chain[1], slots[r, 0])]
        for item in chain[1:-1]:
            # Straight down (or up) through the row: beside a label's text, or
            # beside the states of a row the edge passes.
            top, bottom = item.y - item.height / 2, item.y + item.height / 2
            if chain[0].y > chain[-1].y:
                top, bottom = bottom, top
            points += [(item.x, top), (item.x, bottom)] if top != bottom else [(item.x, top)]
            if item.kind in ("label", "join"):
                labels[item.key] = (
                    f'<text x="{item.x + 4:.1f}" y="{item.y + 4:.1f}" fill="{colour}">'
                    f"{html.escape(item.text)}</text>"
                )
        points.append(_port(chain[-1], chain[-2], slots[r, 1]))
        if chain[-2].kind == "join":  # the edge ends where it joins; the trunk goes on
            trunks[chain[-2].key] = (
                f'<path d="{_path(points[-3:])}" fill="none" stroke="{colour}" '
                f'stroke-width="1.4"{dashing}{marker}>'
                f"<title>{html.escape(chain[-2].text)}</title></path>"
            )
            points, marker = points[:-2], ""
        out.append(
            f'<path d="{_path(points)}" fill="none" stroke="{colour}" stroke-width="1.4"'
            f"{dashing}{marker}>"
            f"<title>{html.escape(route.edge.source)} --{html.escape(route.edge.label)}--&gt; "
            f"{html.escape(route.edge.target)}</title></path>"
        )
    out.extend(trunks.values())
    out.extend(labels.values())
    initial = graph.nodes[0]
    for layer in layers:
        for item in layer:
            if item.kind != "node":
                continue
            left, top = item.x - item.before, item.y - item.height / 2
            stroke = 2.4 if item.key == initial else 1.2
            out.append(
                f'<rect x="{left:.1f}" y="{top:.1f}" width="{item.before + item.after:.1f}" '
                f'height="{item.height:.1f}" rx="8" fill="#f4f7fb" stroke="#1f3b5c" '
                f'stroke-width="{stroke}"/>'
            )
            out.append(
                f'<text x="{item.x:.1f}" y="{item.y - 3:.1f}" text-anchor="middle" '
                f'font-weight="bold" fill="#10243a">{html.escape(item.text)}</text>'
            )
            out.append(
                f'<text x="{item.x:.1f}" y="{item.y + 12:.1f}" text-anchor="middle" '
                f'font-size="{FONT - 1:.0f}" fill="#44556a">'
                f"{html.escape(graph.captions[item.key], quote=False)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out)


# -- Node aliases ----------------------------------------------------------------

_CAMEL = re.compile(r"[a-z][a-z0-9]*[A-Z]")


def node_aliases(target: Any) -> list[tuple[str, str]]:
    """``(node_name, python_names)`` for every camelCase attribute of *target*
    that is the very same object as one or more snake_case ones (inherited
    attributes included)."""
    namespace = {name: inspect.getattr_static(target, name) for name in dir(target)}
    pairs = []
    for name, value in namespace.items():
        if not _CAMEL.match(name):
            continue
        same = sorted(
            other
            for other, candidate in namespace.items()
            if candidate is value and not _CAMEL.match(other) and not other.startswith("_")
        )
        if same:
            pairs.append((name, ", ".join(same)))
    return sorted(pairs, key=lambda pair: pair[0].lower())


def is_node_alias(owner: Any, name: str) -> bool:
    return any(alias == name for alias, _ in node_aliases(owner))


# -- the README's commands -------------------------------------------------------


def readme_commands(readme: str) -> list[str]:
    """The lines of the README's first ``sh`` block: its two commands."""
    lines = readme.splitlines()
    start = lines.index("```sh") + 1
    end = lines.index("```", start)
    return lines[start:end]


def command_html(command: str) -> str:
    """*command* as a ``<pre>`` whose words never break: a long command
    wraps between words (see ``div.command`` in ``custom.css``), so nothing
    is cut off and no option is split at its hyphens."""
    words = []
    for word in command.split(" "):
        kind = "word o" if word in ("&&", "||", "|") else "word"
        words.append(f'<span class="{kind}">{html.escape(word, quote=False)}</span>')
    return f'<div class="command highlight"><pre>{" ".join(words)}</pre></div>'
