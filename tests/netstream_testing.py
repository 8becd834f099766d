"""Helpers shared by the test modules (imported as ``netstream_testing``)."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
import trustme

import trio_netstream as net

#: Upper bound of every test (virtual seconds under ``autojump_clock``).
LIMIT = 10
#: Upper bound, in seconds, of a test over real sockets (``tests/reliability``).
NETWORK_LIMIT = 20

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


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


def sha(data: bytes | bytearray) -> str:
    """The SHA-256 of *data*, in hex."""
    return hashlib.sha256(data).hexdigest()


def open_fds() -> int:
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    """This process's resident set size now, in bytes (VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
    raise AssertionError("no VmRSS in /proc/self/status")


def port_of(server: net.Server) -> int:
    """The TCP port a listening server is bound to."""
    address = server.address()
    assert isinstance(address, tuple)
    return int(address[1])


class Tally:
    """A counter that tasks can wait on."""

    def __init__(self) -> None:
        self.count = 0
        self._lot = trio.lowlevel.ParkingLot()

    def add(self, *_: object) -> None:
        self.count += 1
        self._lot.unpark_all()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            await self._lot.park()


@dataclass(frozen=True)
class Certs:
    """``trustme`` certificates for loopback TLS (the ``certs`` fixture of
    ``tests/reliability``), and two ready contexts built from them."""

    ca: trustme.CA
    server: trustme.LeafCert  # from ca: localhost, 127.0.0.1
    client_ca: trustme.CA
    client: trustme.LeafCert  # from client_ca
    wrong_ca_client: trustme.LeafCert  # from a CA the server does not trust
    expired_client: trustme.LeafCert  # from client_ca, expired in 2002
    server_ctx: ssl.SSLContext  # serves ``server``
    client_ctx: ssl.SSLContext  # trusts ``ca``
