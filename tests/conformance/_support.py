"""Helpers shared by the conformance tests.

The conformance tests translate behaviours asserted by Node.js's own
``test/parallel/test-net-*.js`` and ``test-tls-*.js`` into pytest-trio tests
of ``trio_netstream``. Each test's docstring names the Node test it comes
from and says where our documented behaviour (SPEC.md, docs/behaviour.md)
deliberately differs from Node v20.
"""

from __future__ import annotations

import socket
from typing import Any

from netstream_testing import IPV6 as IPV6
from netstream_testing import Tally as Tally

import trio_netstream as net

LOOPBACK = "127.0.0.1"


def unused_port() -> int:
    """A loopback TCP port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


def port_of(server: net.Server) -> int:
    address = server.address()
    assert isinstance(address, tuple)
    return address[1]


def echo(conn: net.Stream) -> None:
    """Node's ``socket.pipe(socket)`` plus ending when the peer ends."""
    conn.on("data", conn.write)
    conn.on("end", conn.end)


def code_of(error: BaseException) -> Any:
    """The Node error code the library attaches to an exception (``err.code``)."""
    return getattr(error, "code", None)


def sockopt(stream: net.Stream, level: int, option: int) -> Any:
    sock = stream.socket
    assert sock is not None
    return sock.getsockopt(level, option)
