"""Shared test helpers: an event recorder and short UNIX socket paths."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trio_netstream as net

STREAM_EVENTS = ("connect", "data", "end", "drain", "timeout", "error", "close")


class Recorder:
    """Records every event of one stream (or server) into ``events``.

    Events without arguments are recorded as their name; others as a tuple
    ``(name, *args)``. ``data`` chunks are recorded separately in ``chunks``
    (and as ``"data"`` in ``events`` only when ``keep_data`` is true, so
    sequences stay independent of how the kernel splits bytes).
    """

    def __init__(
        self, emitter: Any, *, keep_data: bool = False, events: tuple[str, ...] = STREAM_EVENTS
    ) -> None:
        self.events: list[Any] = []
        self.chunks: list[Any] = []
        self.keep_data = keep_data
        for name in events:
            emitter.on(name, self._listener(name))

    def _listener(self, name: str) -> Any:
        def listener(*args: Any) -> None:
            if name == "data":
                self.chunks.append(args[0])
                if not self.keep_data:
                    if not self.events or self.events[-1] != "data":
                        self.events.append("data")
                    return
            self.events.append((name, *args) if args else name)

        return listener

    @property
    def data(self) -> Any:
        if self.chunks and isinstance(self.chunks[0], str):
            return "".join(self.chunks)
        return b"".join(self.chunks)


@pytest.fixture
def record() -> type[Recorder]:
    return Recorder


@pytest.fixture
def unix_path() -> Iterator[str]:
    """A fresh UNIX socket path short enough for AF_UNIX (under /tmp)."""
    directory = tempfile.mkdtemp(prefix="tns-")
    try:
        yield str(Path(directory) / "sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def netmod() -> Any:
    return net
