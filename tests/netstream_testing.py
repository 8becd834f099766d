"""Helpers shared by the test modules (imported as ``netstream_testing``)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

#: Upper bound of every test (virtual seconds under ``autojump_clock``).
LIMIT = 10


def bounded(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run the test under ``trio.fail_after(LIMIT)``: a hang becomes a failure."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        with trio.fail_after(LIMIT):
            await fn(*args, **kwargs)

    return wrapper


async def read_to_eof(peer: trio.abc.ReceiveStream, size: int | None = None) -> bytes:
    """Everything the peer receives until EOF."""
    data = bytearray()
    while chunk := await peer.receive_some(size):
        data += chunk
    return bytes(data)


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


#: Whether ::1 can be bound here (the IPv6 cases are skipped, with a reason, if not).
IPV6 = _ipv6_loopback_available()
IPV6_REASON = "IPv6 loopback (::1) cannot be bound on this host"
