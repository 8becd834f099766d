"""The two transports under Trio's own conformance check.

``trio.testing.check_half_closeable_stream`` runs the generic stream checks
(checkpoints, argument checking, ``BusyResourceError`` on conflicting calls,
``BrokenResourceError`` / ``ClosedResourceError`` after either side closes,
cancellation, a 1 MiB duplex exchange, half-close) against a stream maker: an
async function returning a connected pair. Both transports claim to be a
``trio.abc.HalfCloseableStream``; this holds them to the whole contract.

- :class:`~trio_netstream._socket.SocketTransport` over a loopback TCP
  connection and over a UNIX ``socket.socketpair()``, with a clogged maker
  too (both send buffers filled, as Trio's own ``SocketStream`` test does,
  repeated until neither side takes more: see :func:`clog`).
- :class:`~trio_netstream._tls.TLSTransport` (from ``make_transport``) over
  two SocketTransports, TLS 1.2 and 1.3, certificates from ``trustme``. The
  transport does not handshake lazily (``send_all`` before the handshake
  would meet ``SSLWantReadError``; the stream always runs ``do_handshake``
  first), so the maker runs both handshakes. There is no clogged maker for
  TLS: filling a TLS stream means cancelling a ``send_all`` that is blocked
  inside a record, which leaves a half-sent (or skipped) record and breaks
  the stream for every later check, a breakage of the test and not of the
  transport.

A failure here is a finding about the transport; nothing is skipped or
marked xfail.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trustme
from trio.testing import check_half_closeable_stream, wait_all_tasks_blocked

from trio_netstream._socket import SocketTransport
from trio_netstream._tls import TLSTransport, make_transport

#: Upper bound of one whole conformance run (a passing one takes about a second;
#: a receive that never returns must fail, not hang the run).
LIMIT = 10

Pair = tuple[socket.socket, socket.socket]


def tcp_pair() -> Pair:
    """A connected loopback TCP pair (Linux has no ``socketpair(AF_INET)``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        try:
            server, _ = listener.accept()
        except BaseException:
            client.close()
            raise
    return client, server


def unix_pair() -> Pair:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


@pytest.fixture(params=[tcp_pair, unix_pair], ids=["tcp", "unix"])
def connect_pair(request: pytest.FixtureRequest) -> Callable[[], Pair]:
    return request.param  # type: ignore[no-any-return]


async def fill(stream: trio.abc.SendStream) -> int:
    """Send until the kernel takes no more, as Trio's ``SocketStream`` test
    does (the sender blocks, then is cancelled); how many sends completed."""
    completed = 0

    async def sender() -> None:
        nonlocal completed
        while True:
            await stream.send_all(b"x" * 10000)
            completed += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return completed


async def clog(left: trio.abc.SendStream, right: trio.abc.SendStream) -> None:
    """Fill both directions until neither takes another send.

    Over TCP one round is not enough: once *right* has been filled, *left*
    takes more again (about 330 kB on loopback, freed by the reverse
    traffic), so it would not stay clogged. (A closed TCP window may still
    reopen a little a few hundred milliseconds later; the clogged checks run
    within milliseconds of the maker.)
    """
    for _ in range(20):
        if await fill(left) + await fill(right) == 0:
            return
    raise AssertionError("the send buffers never filled")


async def test_socket_transport_conforms(connect_pair: Callable[[], Pair]) -> None:
    async def stream_maker() -> tuple[SocketTransport, SocketTransport]:
        left, right = connect_pair()
        return SocketTransport(left), SocketTransport(right)

    async def clogged_stream_maker() -> tuple[SocketTransport, SocketTransport]:
        left, right = await stream_maker()
        await clog(left, right)
        return left, right

    with trio.fail_after(LIMIT):
        await check_half_closeable_stream(stream_maker, clogged_stream_maker)


# -- TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def contexts(
    request: pytest.FixtureRequest, ca: trustme.CA
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A (client, server) pair of contexts pinned to one TLS version."""
    version: ssl.TLSVersion = request.param
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ca.configure_trust(client)
    for context in (client, server):
        context.minimum_version = context.maximum_version = version
    return client, server


def tls_maker(
    connect_pair: Callable[[], Pair], contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Callable[[], Awaitable[tuple[TLSTransport, TLSTransport]]]:
    client_context, server_context = contexts

    async def stream_maker() -> tuple[TLSTransport, TLSTransport]:
        left, right = connect_pair()
        client = make_transport(
            SocketTransport(left),
            client_context,
            server_side=False,
            server_hostname="localhost",
            reject_unauthorized=True,
        )
        server = make_transport(
            SocketTransport(right),
            server_context,
            server_side=True,
            server_hostname=None,
            reject_unauthorized=True,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)
                nursery.start_soon(server.do_handshake)
        except BaseException:
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(server)
            raise
        return client, server

    return stream_maker


async def test_tls_transport_handshakes(
    connect_pair: Callable[[], Pair], contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """The maker itself works: both sides end the handshake and exchange bytes
    (so a failure of the conformance test below is not the fixture's)."""
    with trio.fail_after(LIMIT):
        client, server = await tls_maker(connect_pair, contexts)()
        async with client, server:
            await client.send_all(b"ping")
            assert await server.receive_some() == b"ping"
            assert server.ssl_object.version() == client.ssl_object.version()


async def test_tls_transport_conforms(
    connect_pair: Callable[[], Pair], contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    with trio.fail_after(LIMIT):
        await check_half_closeable_stream(tls_maker(connect_pair, contexts), None)
