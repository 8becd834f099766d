"""Sphinx directives that generate parts of the docs from the library itself.

* ``state-diagram``: the stream's ready-state machine, an inline SVG drawn at
  build time from :data:`trio_netstream._state.TRANSITIONS`
  (:mod:`netstream_gen`), so the picture cannot drift from the code.
* ``state-table``: the same table as text (every legal move).
* ``node-aliases``: the Node (camelCase) names of a class or module and the
  Python names they are aliases of, found by identity, not written by hand.
* ``readme-command``: one of the README's two commands, read from the
  README, shown whole (it wraps between words).

The ``autodoc-skip-member`` hook leaves those aliases out of the API
reference (they are listed once, in the alias tables, instead).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from netstream_gen import (
    _CAMEL,
    command_html,
    is_node_alias,
    node_aliases,
    readme_commands,
    render_svg,
    state_graph,
)
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

# -- directives ----------------------------------------------------------------


class StateDiagram(SphinxDirective):
    """``.. state-diagram::`` (MyST: ```` ```{state-diagram} ````)."""

    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {"title": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(_state_source())
        title = self.options.get("title", "The ready-state machine of a stream")
        svg = render_svg(state_graph(), title)
        figure = nodes.container(classes=["state-diagram"])
        figure += nodes.raw("", svg, format="html")
        return [figure]


def _table(header: Iterable[str], rows: Iterable[Iterable[nodes.Node | str]]) -> nodes.table:
    header = list(header)
    table = nodes.table()
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    head += _row(header)
    body = nodes.tbody()
    group += body
    for row in rows:
        body += _row(row)
    return table


def _row(cells: Iterable[nodes.Node | str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        paragraph += nodes.literal(text=cell) if isinstance(cell, str) else cell
        entry += paragraph
        row += entry
    return row


class StateTable(SphinxDirective):
    """Every legal move of the state machine, as a table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from trio_netstream import _state

        self.env.note_dependency(_state_source())
        rows = [
            (
                f"{source.name} ({source.ready_state})",
                given.value,
                f"{target.name} ({target.ready_state})",
            )
            for (source, given), target in _state.TRANSITIONS.items()
        ]
        return [_table(["state (ready_state)", "input", "next state (ready_state)"], rows)]


class NodeAliases(SphinxDirective):
    """``.. node-aliases:: trio_netstream.Stream``: the alias table of one object."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        module_name, _, attribute = path.rpartition(".")
        target: Any
        if module_name:
            target = getattr(importlib.import_module(module_name), attribute)
        else:
            target = importlib.import_module(path)
        rows = [(node, python) for node, python in node_aliases(target)]
        if not rows:
            raise self.error(f"{path} has no Node aliases")
        return [_table(["Node name", "Python name (the same object)"], rows)]


class ReadmeCommand(SphinxDirective):
    """``.. readme-command:: 1``: the README's first (or second) command."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        readme = Path(self.env.srcdir).parent / "README.md"
        self.env.note_dependency(str(readme))
        commands = readme_commands(readme.read_text(encoding="utf-8"))
        number = int(self.arguments[0])
        if not 1 <= number <= len(commands):
            raise self.error(f"the README has {len(commands)} commands, not {number}")
        return [nodes.raw("", command_html(commands[number - 1]), format="html")]


def _state_source() -> str:
    from trio_netstream import _state

    return _state.__file__ or ""


def _skip_aliases(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Leave the camelCase aliases out of autodoc (the alias tables list them)."""
    if _CAMEL.match(name):
        import trio_netstream

        for owner in (trio_netstream.Stream, trio_netstream.Server):
            if hasattr(owner, name) and is_node_alias(owner, name):
                return True
        if name in vars(trio_netstream) and is_node_alias(trio_netstream, name):
            return True
    return None


def _plain_property_docstrings(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Keep napoleon from reading a property's first line as ``type: text``.

    The library's property docstrings are sentences (``"The idle timeout in
    milliseconds (``0``: none)."``), not Google-style ``type: description``
    lines; an empty comment in front makes napoleon take them as text.
    """
    if what == "property" and any(":" in line for line in lines[:1]):
        lines[:0] = ["..", ""]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("state-diagram", StateDiagram)
    app.add_directive("state-table", StateTable)
    app.add_directive("node-aliases", NodeAliases)
    app.add_directive("readme-command", ReadmeCommand)
    app.connect("autodoc-skip-member", _skip_aliases)
    # Before sphinx.ext.napoleon (priority 500) sees the docstring.
    app.connect("autodoc-process-docstring", _plain_property_docstrings, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
