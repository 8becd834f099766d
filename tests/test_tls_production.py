"""TLS in production (issue 16): ALPN, the negotiated protocol and cipher,
session resumption, SNI (``servername``), ``handshake_timeout``, the TLS
server's ``'secureConnection'`` and ``'tlsClientError'``, ``reject_unauthorized``
on servers and clients, and bad TLS options refused at the call.

Every TLS test runs with both contexts pinned to TLS 1.2 and then to TLS 1.3,
and most of them in three modes: ``ssl`` (TLS from the first byte, the options
given to ``create_server`` / ``create_connection``), ``starttls`` (a plaintext
exchange, then ``set_secure()`` on both sides with the options as its
keywords) and ``starttls_defaults`` (the same, with the options given to
``create_server`` / ``create_connection`` and ``set_secure()`` taking them as
its defaults). Peers are real loopback sockets, or ``memory_stream_pair()``
wrapped with ``Stream.wrap`` where determinism (or the autojump clock) is
needed; raw Trio peers play the peers the library cannot be (one that stops
in the middle of a ClientHello, a server that never answers). Every body runs
under ``trio.fail_after`` so that a hang fails instead of blocking.
"""

from __future__ import annotations

import errno
import functools
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trustme
from trio.testing import memory_stream_pair

import trio_netstream as net

TLS_EVENTS = ("connect", "secure", "data", "end", "drain", "timeout", "error", "close")
MODES = ["ssl", "starttls", "starttls_defaults"]
PAYLOAD = b"ping over TLS"
STARTTLS = b"STARTTLS\r\n"
GO = b"GO\r\n"

#: What every TLS property says before a handshake and on a plaintext stream.
NOTHING = {
    "alpn": None,
    "protocol": None,
    "cipher": None,
    "session": None,
    "reused": False,
    "servername": None,
}


# -- certificates and contexts ------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: trustme.CA
    server: trustme.LeafCert  # from ca: localhost, 127.0.0.1, ::1
    other: trustme.LeafCert  # from ca: other.example (served after an SNI switch)
    untrusted_ca: trustme.CA
    untrusted: trustme.LeafCert  # from untrusted_ca: localhost, 127.0.0.1
    client_ca: trustme.CA
    client: trustme.LeafCert  # from client_ca
    wrong_client: trustme.LeafCert  # from untrusted_ca


@pytest.fixture(scope="module")
def certs() -> Certs:
    ca = trustme.CA(organization_name="trio_netstream tests", organization_unit_name="server CA")
    untrusted_ca = trustme.CA(organization_name="somebody else")
    client_ca = trustme.CA(organization_name="trio_netstream tests", organization_unit_name="cl")
    return Certs(
        ca=ca,
        server=ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost"),
        other=ca.issue_cert("other.example", common_name="other.example"),
        untrusted_ca=untrusted_ca,
        untrusted=untrusted_ca.issue_cert("localhost", "127.0.0.1"),
        client_ca=client_ca,
        client=client_ca.issue_cert("client.example", common_name="client one"),
        wrong_client=untrusted_ca.issue_cert("client.example", common_name="impostor"),
    )


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def server_context(
    cert: trustme.LeafCert, version: ssl.TLSVersion, *, client_ca: trustme.CA | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = version
    cert.configure_cert(ctx)
    if client_ca is not None:
        client_ca.configure_trust(ctx)  # a server context holding CAs asks for a client cert
    return ctx


def client_context(
    trust: trustme.CA, version: ssl.TLSVersion, *, cert: trustme.LeafCert | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = ctx.maximum_version = version
    trust.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def context_state(ctx: ssl.SSLContext) -> tuple[Any, ...]:
    """What the library must leave as the caller set it."""
    return (
        ctx.verify_mode,
        ctx.check_hostname,
        ctx.sni_callback,
        ctx.options,
        ctx.minimum_version,
        ctx.maximum_version,
    )


def version_name(version: ssl.TLSVersion) -> str:
    return {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


# -- recording ----------------------------------------------------------------------------


class Log:
    """Every event of one stream, in order; consecutive ``'data'`` chunks are
    joined into one ``("data", payload)`` entry, ``'error'`` is recorded as
    ``"error"`` with the exception in :attr:`errors`."""

    def __init__(self, stream: net.Stream, *, first: Iterable[Any] = ()) -> None:
        self.events: list[Any] = list(first)
        self.errors: list[BaseException] = []
        emitter: Any = stream
        for name in TLS_EVENTS:
            emitter.on(name, self._listener(name))

    def _listener(self, name: str) -> Any:
        def listener(*args: Any) -> None:
            if name == "data":
                last = self.events[-1] if self.events else None
                if isinstance(last, tuple) and last[0] == "data":
                    self.events[-1] = ("data", last[1] + args[0])
                else:
                    self.events.append(("data", args[0]))
            elif name == "error":
                self.errors.append(args[0])
                self.events.append("error")
            else:
                self.events.append((name, *args) if args else name)

        return listener


def snapshot(stream: net.Stream) -> dict[str, Any]:
    """Every TLS property of *stream* now."""
    return {
        "alpn": stream.alpn_protocol,
        "protocol": stream.get_protocol(),
        "cipher": stream.get_cipher(),
        "session": stream.get_session(),
        "reused": stream.is_session_reused(),
        "servername": stream.servername,
    }


@dataclass
class Side:
    """One stream of a test connection and what it said when."""

    stream: net.Stream
    log: Log
    before: dict[str, Any] | None = None  # at 'connect'
    secure: dict[str, Any] | None = None  # at 'secure'
    after: dict[str, Any] | None = None  # once data went both ways over TLS
    verified: tuple[bool, str | None] | None = None  # (verify_peer(), authorization_error)


@dataclass
class Served:
    server: net.Server
    port: int
    sides: list[Side] = field(default_factory=list)
    order: list[Any] = field(default_factory=list)  # 'secure' and 'secureConnection'
    tls_errors: list[tuple[BaseException, net.Stream]] = field(default_factory=list)


def port_of(server: net.Server) -> int:
    address = server.address()
    assert isinstance(address, tuple)
    return int(address[1])


@asynccontextmanager
async def tls_server(
    mode: str,
    ctx: ssl.SSLContext,
    *,
    tls: dict[str, Any] | None = None,
    tls_client_error: bool = True,
) -> AsyncIterator[Served]:
    """A loopback echo server speaking TLS in *mode* with the TLS options *tls*.

    Each stream's properties are recorded at ``'connect'``, ``'secure'`` and
    at its first TLS ``'data'``. In the STARTTLS modes the server answers
    ``STARTTLS`` with ``GO`` and calls ``set_secure()``.
    """
    tls = dict(tls or {})
    if mode == "ssl":
        options: dict[str, Any] = {"ssl": ctx, **tls}
    elif mode == "starttls_defaults":
        options = dict(tls)
    else:
        options = {}
    holder: list[Served] = []

    def on_connection(conn: net.Stream) -> None:
        side = Side(conn, Log(conn, first=["connection"]))
        served = holder[0]
        served.sides.append(side)
        plain = bytearray()

        def on_connect() -> None:
            side.before = snapshot(conn)

        def on_secure() -> None:
            served.order.append(("secure", conn))
            side.secure = snapshot(conn)
            side.verified = (conn.verify_peer(), conn.authorization_error)

        def on_data(chunk: bytes) -> None:
            if conn.secure:
                if side.after is None:
                    side.after = snapshot(conn)
                conn.write(chunk)
                return
            plain.extend(chunk)
            if plain == STARTTLS:
                conn.write(GO)
                conn.set_secure(ctx, **(tls if mode == "starttls" else {}))

        conn.on("connect", on_connect)
        conn.on("secure", on_secure)
        conn.on("data", on_data)
        conn.on("end", conn.end)

    async with net.create_server(on_connection, **options) as server:
        await server.listen(0, "127.0.0.1")
        served = Served(server, port_of(server))
        holder.append(served)
        server.on("secureConnection", lambda stream: served.order.append(("sc", stream)))
        if tls_client_error:
            server.on("tlsClientError", lambda exc, stream: served.tls_errors.append((exc, stream)))
        yield served
        server.close()


async def tls_client(
    mode: str,
    port: int,
    ctx: ssl.SSLContext,
    *,
    host: str = "127.0.0.1",
    hostname: str | None = "localhost",
    tls: dict[str, Any] | None = None,
    payload: bytes = PAYLOAD,
) -> Side:
    """One client connection in *mode*: TLS (or STARTTLS), *payload* sent and
    echoed, then ``end()``; its properties recorded as :class:`Side` says."""
    tls = dict(tls or {})
    if mode == "ssl":
        options: dict[str, Any] = {"ssl": ctx, **tls}
        if hostname is not None:
            options["server_hostname"] = hostname
    elif mode == "starttls_defaults":
        options = dict(tls)
    else:
        options = {}
    client = net.create_connection(port, host, **options)
    side = Side(client, Log(client))
    plain = bytearray()
    echoed = bytearray()

    def on_connect() -> None:
        side.before = snapshot(client)
        client.write(payload if mode == "ssl" else STARTTLS)

    def on_data(chunk: bytes) -> None:
        if not client.secure:
            plain.extend(chunk)
            if plain == GO:
                keywords = dict(tls) if mode == "starttls" else {}
                if hostname is not None:
                    keywords["server_hostname"] = hostname
                client.set_secure(ctx, **keywords)
            return
        echoed.extend(chunk)
        if echoed == payload:
            side.after = snapshot(client)  # TLS 1.3: the session tickets came by now
            client.end()

    def on_secure() -> None:
        side.secure = snapshot(client)
        side.verified = (client.verify_peer(), client.authorization_error)
        if mode != "ssl":
            client.write(payload)

    client.on("connect", on_connect)
    client.on("data", on_data)
    client.on("secure", on_secure)
    async with client:
        pass
    return side


def plain_prefix(mode: str, *, server: bool) -> list[Any]:
    """The events of a stream before its TLS handshake in *mode*."""
    if mode == "ssl":
        return ["connection", "connect"] if server else ["connect"]
    if server:
        return ["connection", "connect", ("data", STARTTLS)]
    return ["connect", ("data", GO)]


def assert_clean(client: Side, served: Served, mode: str, index: int = 0) -> Side:
    """The client's connection went through: secure, echo, end, close(False)."""
    assert client.log.events == [
        *plain_prefix(mode, server=False),
        "secure",
        ("data", PAYLOAD),
        "end",
        ("close", False),
    ]
    server_side = served.sides[index]
    assert server_side.log.events == [
        *plain_prefix(mode, server=True),
        "secure",
        ("data", PAYLOAD),
        "end",
        ("close", False),
    ]
    return server_side


def assert_failed(side: Side, prefix: list[Any]) -> BaseException:
    """One ``'error'``, then ``'close'(True)``; *prefix* before (a TLS 1.3
    client may see ``'secure'`` before the server refuses it)."""
    events = side.log.events
    assert events[: len(prefix)] == prefix
    assert events[-2:] == ["error", ("close", True)]
    assert set(map(str, events[len(prefix) : -2])) <= {"secure"}
    (error,) = side.log.errors
    return error


# -- ALPN ------------------------------------------------------------------------------------


async def test_alpn_the_servers_order_of_preference_wins(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        server_state, client_state = context_state(server_ctx), context_state(client_ctx)
        async with tls_server(
            mode, server_ctx, tls={"alpn_protocols": ["h2", "http/1.1"]}
        ) as served:
            client = await tls_client(
                mode, served.port, client_ctx, tls={"alpn_protocols": ["http/1.1", "h2"]}
            )
        server = assert_clean(client, served, mode)
        assert client.secure is not None and server.secure is not None
        assert client.secure["alpn"] == server.secure["alpn"] == "h2"
        assert client.stream.alpn_protocol == client.stream.alpnProtocol == "h2"
        assert context_state(server_ctx) == server_state
        assert context_state(client_ctx) == client_state


async def test_alpn_without_a_common_protocol_agrees_on_none(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    """OpenSSL (through Python's ALPN callback) does not abort the handshake
    when the lists do not overlap: the server answers without ALPN, and the
    connection goes on with no protocol agreed (``None`` on both sides)."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server(
            mode, server_ctx, tls={"alpn_protocols": ["h2", "http/1.1"]}
        ) as served:
            client = await tls_client(
                mode, served.port, client_ctx, tls={"alpn_protocols": ["spdy/3", "acme-tls/1"]}
            )
        server = assert_clean(client, served, mode)
        assert client.secure is not None and server.secure is not None
        assert client.secure["alpn"] is None
        assert server.secure["alpn"] is None
        assert client.secure["protocol"] == version_name(version)


@pytest.mark.parametrize("configured", ["client_only", "server_only"])
async def test_alpn_configured_on_one_side_only_agrees_on_none(
    certs: Certs, version: ssl.TLSVersion, mode: str, configured: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        offer = {"alpn_protocols": ["h2", "http/1.1"]}
        async with tls_server(
            mode, server_ctx, tls=offer if configured == "server_only" else None
        ) as served:
            client = await tls_client(
                mode, served.port, client_ctx, tls=offer if configured == "client_only" else None
            )
        server = assert_clean(client, served, mode)
        assert client.secure is not None and server.secure is not None
        assert (client.secure["alpn"], server.secure["alpn"]) == (None, None)


@pytest.mark.parametrize("client_mode", ["ssl", "starttls"])
async def test_alpn_concurrent_clients_sharing_one_context_each_offer_their_own(
    certs: Certs, version: ssl.TLSVersion, client_mode: str
) -> None:
    """Client streams made from ONE ``SSLContext``, handshaking at the same
    time with different ``alpn_protocols``: each offers its own list, and the
    shared context is left without one."""
    offers: list[list[str] | None] = [["h2"], ["http/1.1"], None, ["http/1.1", "h2"], ["x-y"]]
    expected = ["h2", "http/1.1", None, "h2", None]
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        client_state = context_state(client_ctx)
        results: dict[int, Side] = {}
        async with tls_server(
            client_mode, server_ctx, tls={"alpn_protocols": ["h2", "http/1.1"]}
        ) as served:

            async def one(index: int) -> None:
                offer = offers[index % len(offers)]
                results[index] = await tls_client(
                    client_mode,
                    served.port,
                    client_ctx,
                    tls=None if offer is None else {"alpn_protocols": offer},
                )

            async with trio.open_nursery() as nursery:
                for index in range(3 * len(offers)):
                    nursery.start_soon(one, index)

            # After all of them, a client without alpn_protocols offers none.
            last = await tls_client(client_mode, served.port, client_ctx)

        for index, side in results.items():
            assert side.log.events[-1] == ("close", False)
            assert side.secure is not None
            assert side.secure["alpn"] == expected[index % len(offers)], index
        server_choices = sorted(
            (s.secure["alpn"] or "") for s in served.sides if s.secure is not None
        )
        assert server_choices == sorted(
            [(expected[i % len(offers)] or "") for i in range(len(results))] + [""]
        )
        assert last.secure is not None and last.secure["alpn"] is None
        assert context_state(client_ctx) == client_state


async def test_alpn_a_servers_streams_share_the_servers_list(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    offers: list[tuple[list[str] | None, str | None]] = [
        (["http/1.1"], "http/1.1"),
        (["h2"], "h2"),
        (["x-other", "http/1.1", "h2"], "h2"),
        (None, None),
        (["x-other"], None),
    ]
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        sides: dict[int, Side] = {}
        async with tls_server(
            mode, server_ctx, tls={"alpn_protocols": ["h2", "http/1.1"]}
        ) as served:

            async def one(index: int) -> None:
                offer = offers[index][0]
                sides[index] = await tls_client(
                    mode,
                    served.port,
                    client_ctx,
                    tls=None if offer is None else {"alpn_protocols": offer},
                )

            async with trio.open_nursery() as nursery:
                for index in range(len(offers)):
                    nursery.start_soon(one, index)

        by_client = {}
        for index, side in sides.items():
            assert side.secure is not None and side.log.events[-1] == ("close", False)
            assert side.secure["alpn"] == offers[index][1]
            by_client[side.stream.local_port] = side.secure["alpn"]
        # Each server stream agrees with its own client.
        for server in served.sides:
            assert server.secure is not None
            assert server.secure["alpn"] == by_client[server.stream.remote_port]


async def test_alpn_per_stream_lists_of_server_side_set_secure_on_one_context(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """A plaintext server's streams upgraded by ``set_secure()`` with their
    own ``alpn_protocols`` and one shared server context, at the same time:
    each stream chooses from its own list."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        server_state = context_state(server_ctx)
        chosen: dict[int, str | None] = {}
        lists = {b"A": ["h2"], b"B": ["http/1.1"], b"C": None}

        def on_connection(conn: net.Stream) -> None:
            def on_data(chunk: bytes) -> None:
                if conn.secure:
                    conn.write(chunk)
                    return
                conn.write(GO)
                conn.set_secure(server_ctx, alpn_protocols=lists[chunk])

            conn.on("data", on_data)
            conn.on("secure", lambda: chosen.__setitem__(conn.remote_port or 0, conn.alpn_protocol))
            conn.on("end", conn.end)

        client_seen: list[tuple[bytes, int | None, str | None]] = []

        async def one(name: bytes) -> None:
            client = net.create_connection(port)
            client.on("connect", lambda: client.write(name))

            def on_data(chunk: bytes) -> None:
                if chunk == GO and not client.secure:
                    client.set_secure(
                        client_ctx, server_hostname="localhost", alpn_protocols=["http/1.1", "h2"]
                    )
                elif client.secure:
                    client.end()

            def on_secure() -> None:
                client_seen.append((name, client.local_port, client.alpn_protocol))
                client.write(b"x")

            client.on("data", on_data)
            client.on("secure", on_secure)
            async with client:
                pass

        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    for name in lists:
                        nursery.start_soon(one, name)
            server.close()

        expected = {b"A": "h2", b"B": "http/1.1", b"C": None}
        assert len(client_seen) == len(chosen) == 3 * len(lists)
        for name, local_port, alpn in client_seen:
            assert alpn == expected[name]
            assert local_port is not None and chosen[local_port] == alpn
        assert context_state(server_ctx) == server_state


async def test_alpn_over_memory_streams(certs: Certs, version: ssl.TLSVersion) -> None:
    """Deterministic: ``Stream.wrap(ssl=..., alpn_protocols=...)`` against a
    ``set_secure(server_side=True, alpn_protocols=...)`` peer."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        a, b = memory_stream_pair()
        client = net.Stream.wrap(
            a, ssl=client_ctx, server_hostname="localhost", alpn_protocols=["http/1.1", "h2"]
        )
        server = net.Stream.wrap(b)
        seen: dict[str, dict[str, Any]] = {}
        server.on(
            "connect",
            lambda: server.set_secure(
                server_ctx, server_side=True, alpn_protocols=("h2", "http/1.1")
            ),
        )
        client.on("secure", lambda: (seen.__setitem__("client", snapshot(client)), client.end()))
        server.on("secure", lambda: seen.__setitem__("server", snapshot(server)))
        server.on("end", server.end)
        client_log, server_log = Log(client), Log(server)
        async with client, server:
            pass
        assert client_log.events == ["connect", "secure", "end", ("close", False)]
        assert server_log.events == ["connect", "secure", "end", ("close", False)]
        assert seen["client"]["alpn"] == seen["server"]["alpn"] == "h2"
        assert seen["client"]["protocol"] == seen["server"]["protocol"] == version_name(version)
        assert seen["client"]["cipher"] == seen["server"]["cipher"]
        assert seen["client"]["servername"] == seen["server"]["servername"] == "localhost"


async def test_shared_contexts_are_unchanged_after_alpn_handshakes(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """After handshakes that used ALPN on both sides, fresh connections made
    from the same two contexts (by the library and by ``trio.SSLStream``)
    negotiate no protocol unless they ask for one."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version, client_ca=certs.client_ca)
        client_ctx = client_context(certs.ca, version, cert=certs.client)
        server_state, client_state = context_state(server_ctx), context_state(client_ctx)
        assert server_state[:3] == (ssl.CERT_NONE, False, None)
        assert client_state[:3] == (ssl.CERT_REQUIRED, True, None)
        for mode in MODES:
            async with tls_server(
                mode,
                server_ctx,
                tls={"alpn_protocols": ["h2"], "reject_unauthorized": mode == "ssl"},
            ) as served:
                client = await tls_client(
                    mode,
                    served.port,
                    client_ctx,
                    tls={"alpn_protocols": ["h2"], "reject_unauthorized": mode != "ssl"},
                )
            assert client.secure is not None and client.secure["alpn"] == "h2"
            assert context_state(server_ctx) == server_state
            assert context_state(client_ctx) == client_state

        # A client of the shared context without alpn_protocols, against a
        # server that has a list: no ALPN.
        async with tls_server("ssl", server_ctx, tls={"alpn_protocols": ["h2"]}) as served:
            client = await tls_client("ssl", served.port, client_ctx)
            # And trio's own TLS client on the same context: no ALPN either.
            raw = await trio.open_tcp_stream("127.0.0.1", served.port)
            tls = trio.SSLStream(raw, client_ctx, server_hostname="localhost")
            await tls.do_handshake()
            assert tls.selected_alpn_protocol() is None
            await tls.aclose()
        assert client.secure is not None and client.secure["alpn"] is None
        assert served.sides[0].secure is not None and served.sides[0].secure["alpn"] is None

        # A server of the shared context without alpn_protocols, against
        # clients that offer one: no ALPN.
        async with tls_server("ssl", server_ctx) as served:
            client = await tls_client(
                "ssl", served.port, client_ctx, tls={"alpn_protocols": ["h2"]}
            )
            other = client_context(certs.ca, version, cert=certs.client)
            other.set_alpn_protocols(["h2"])
            raw = await trio.open_tcp_stream("127.0.0.1", served.port)
            tls = trio.SSLStream(raw, other, server_hostname="localhost")
            await tls.do_handshake()
            assert tls.selected_alpn_protocol() is None
            await tls.aclose()
        assert client.secure is not None and client.secure["alpn"] is None
        assert context_state(server_ctx) == server_state
        assert context_state(client_ctx) == client_state


async def test_alpn_of_the_server_survives_an_sni_callback_that_switches_context(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        other_ctx = server_context(certs.other, version)

        def switch(ssl_object: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name == "other.example":
                ssl_object.context = other_ctx

        server_ctx.sni_callback = switch
        client_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx, tls={"alpn_protocols": ["h2"]}) as served:
            client = await tls_client(
                "ssl",
                served.port,
                client_ctx,
                hostname="other.example",
                tls={"alpn_protocols": ["h2"]},
            )
        server = assert_clean(client, served, "ssl")
        assert client.verified == (True, None)  # other.example's certificate was served
        assert server.secure is not None and server.secure["servername"] == "other.example"
        assert client.secure is not None and client.secure["alpn"] == "h2"
        assert server.secure["alpn"] == "h2"


# -- protocol and cipher ------------------------------------------------------------------


@functools.cache
def openssl_cipher_table() -> dict[str, tuple[str, str]]:
    """OpenSSL's name → (standard name, version), from ``openssl ciphers -stdname``."""
    exe = shutil.which("openssl")
    if exe is None:
        return {}
    out = subprocess.run(
        [exe, "ciphers", "-stdname", "-v", "ALL:COMPLEMENTOFALL"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    table: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        standard, _dash, rest = line.partition(" - ")
        fields = rest.split()
        if len(fields) >= 2:
            table[fields[0]] = (standard.strip(), fields[1])
    return table


def check_cipher(cipher: dict[str, Any] | None, version: ssl.TLSVersion) -> None:
    assert cipher is not None
    assert set(cipher) == {"name", "standard_name", "version"}
    assert cipher["version"] == version_name(version)
    standard = cipher["standard_name"]
    assert isinstance(standard, str) and standard.startswith("TLS_")
    if version is ssl.TLSVersion.TLSv1_3:
        assert cipher["name"] == standard  # OpenSSL's name of a TLS 1.3 suite is the IANA one
    else:
        assert "_WITH_" in standard and "-" in cipher["name"]
    table = openssl_cipher_table()
    if table:
        assert table[cipher["name"]] == (standard, cipher["version"])


async def test_protocol_and_cipher_are_the_same_on_both_sides(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server(mode, server_ctx) as served:
            client = await tls_client(mode, served.port, client_ctx)
        server = assert_clean(client, served, mode)
        assert client.secure is not None and server.secure is not None
        assert client.secure["protocol"] == server.secure["protocol"] == version_name(version)
        assert client.secure["cipher"] == server.secure["cipher"]
        check_cipher(client.secure["cipher"], version)
        # Node's names are the same methods.
        stream = client.stream
        assert stream.getProtocol == stream.get_protocol
        assert stream.getCipher == stream.get_cipher
        assert stream.getSession == stream.get_session
        assert stream.isSessionReused == stream.is_session_reused


@pytest.mark.parametrize(
    ("suite", "standard"),
    [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ],
)
async def test_tls12_cipher_suite_standard_names(certs: Certs, suite: str, standard: str) -> None:
    version = ssl.TLSVersion.TLSv1_2
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        client_ctx.set_ciphers(suite)
        async with tls_server("ssl", server_ctx) as served:
            client = await tls_client("ssl", served.port, client_ctx)
        server = assert_clean(client, served, "ssl")
        expected = {"name": suite, "standard_name": standard, "version": "TLSv1.2"}
        assert client.secure is not None and server.secure is not None
        assert client.secure["cipher"] == server.secure["cipher"] == expected
        check_cipher(expected, version)


async def test_nothing_before_the_handshake_and_on_plaintext_streams(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        fresh = net.Stream()
        assert snapshot(fresh) == NOTHING

        # TLS from the first byte: at 'connect' the handshake has not run.
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx) as served:
            client = await tls_client("ssl", served.port, client_ctx)
        server = assert_clean(client, served, "ssl")
        assert server.before == NOTHING
        assert client.before is not None
        assert {k: v for k, v in client.before.items() if k != "servername"} == {
            k: v for k, v in NOTHING.items() if k != "servername"
        }

        # A plaintext connection, before and after data, and after 'close'.
        seen: list[dict[str, Any]] = []

        def on_connection(conn: net.Stream) -> None:
            conn.on("connect", lambda: seen.append(snapshot(conn)))
            conn.on("data", lambda chunk: (seen.append(snapshot(conn)), conn.write(chunk)))
            conn.on("end", conn.end)

        async with net.create_server(on_connection) as plain_server:
            await plain_server.listen(0, "127.0.0.1")
            plain = net.create_connection(port_of(plain_server), server_hostname="localhost")
            plain.on("connect", lambda: (seen.append(snapshot(plain)), plain.write(b"hi")))
            plain.on("data", lambda _: (seen.append(snapshot(plain)), plain.end()))
            async with plain:
                pass
            plain_server.close()
        seen.append(snapshot(plain))
        assert len(seen) == 5
        assert all(s == NOTHING for s in seen), seen

        # A STARTTLS stream before its set_secure() (plaintext 'data').
        async with tls_server("starttls", server_ctx) as served:
            client = await tls_client("starttls", served.port, client_ctx)
        assert client.before == NOTHING
        assert served.sides[0].before == NOTHING


async def test_client_servername_is_none_before_the_handshake(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """As Node's ``tlsSocket.servername`` (set when the handshake is done):
    ``None`` at ``'connect'`` of an ``ssl=`` client, then the name."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx) as served:
            client = await tls_client("ssl", served.port, client_ctx)
        assert client.secure is not None and client.secure["servername"] == "localhost"
        assert client.before is not None and client.before["servername"] is None


# -- session resumption -------------------------------------------------------------------


async def test_session_resumption(certs: Certs, version: ssl.TLSVersion, mode: str) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server(mode, server_ctx) as served:
            first = await tls_client(mode, served.port, client_ctx)
            assert first.after is not None
            session = first.after["session"]
            assert isinstance(session, ssl.SSLSession)
            assert first.stream.get_session() is not None
            resumed = await tls_client(mode, served.port, client_ctx, tls={"session": session})
            fresh = await tls_client(mode, served.port, client_ctx)
            again = await tls_client(mode, served.port, client_ctx, tls={"session": session})

        for index, side in enumerate([first, resumed, fresh, again]):
            assert_clean(side, served, mode, index)
        expected = [False, True, False, True]
        assert [s.secure["reused"] for s in (first, resumed, fresh, again) if s.secure] == expected
        assert [s.secure["reused"] for s in served.sides if s.secure] == expected
        assert [s.stream.is_session_reused() for s in served.sides] == expected
        assert resumed.secure is not None and resumed.secure["protocol"] == version_name(version)
        assert resumed.secure["cipher"] == first.secure["cipher"]  # type: ignore[index]


async def test_a_resumed_session_still_verifies_the_peer(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """As Node's ``authorized`` (OpenSSL keeps the verify result and the
    peer's certificate in the session): a resumed connection was verified."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        certificates: list[Any] = []
        async with tls_server("ssl", server_ctx) as served:
            first = await tls_client("ssl", served.port, client_ctx)
            assert first.after is not None
            resumed = await tls_client(
                "ssl", served.port, client_ctx, tls={"session": first.after["session"]}
            )
            certificates.append(resumed.stream.get_peer_certificate())
        assert resumed.secure is not None and resumed.secure["reused"] is True
        assert certificates[0] is not None and certificates[0]["subject"]["CN"] == "localhost"
        assert first.verified == (True, None)
        assert resumed.verified == (True, None)


async def test_session_resumption_over_memory_streams(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)

        async def connection(session: ssl.SSLSession | None) -> tuple[Any, ...]:
            a, b = memory_stream_pair()
            options: dict[str, Any] = {} if session is None else {"session": session}
            client = net.Stream.wrap(a, ssl=client_ctx, server_hostname="localhost", **options)
            server = net.Stream.wrap(b)
            server.on("connect", lambda: server.set_secure(server_ctx, server_side=True))
            server.on("data", server.write)
            server.on("end", server.end)
            client.on("secure", lambda: client.write(b"x"))
            taken: list[Any] = []
            client.on("data", lambda _: (taken.append(client.get_session()), client.end()))
            async with client, server:
                pass
            return taken[0], client.is_session_reused(), server.is_session_reused()

        session, *reused = await connection(None)
        assert reused == [False, False]
        _, *reused = await connection(session)
        assert reused == [True, True]


async def test_session_of_another_context_is_refused_at_the_call(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        other_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx) as served:
            first = await tls_client("ssl", served.port, client_ctx)
            assert first.after is not None
            session = first.after["session"]
            assert isinstance(session, ssl.SSLSession)
            connections = len(served.sides)
            with pytest.raises(ValueError, match="session"):
                net.create_connection(served.port, ssl=other_ctx, session=session)
            with pytest.raises(ValueError, match="session"):
                net.create_connection(served.port, ssl=True, session=session)
            with pytest.raises(ValueError, match="session"):
                net.Stream(ssl=other_ctx, session=session)
            with pytest.raises(ValueError, match="session"):
                net.connect({"port": served.port, "ssl": other_ctx, "session": session})
            await trio.sleep(0.05)
            assert len(served.sides) == connections  # nothing connected

            # set_secure() with another context: refused, the stream stays plaintext.
            plain_peer: list[bytes] = []
            a, b = memory_stream_pair()
            stream, peer = net.Stream.wrap(a), net.Stream.wrap(b)
            log = Log(stream)

            def on_connect() -> None:
                with pytest.raises(ValueError, match="session"):
                    stream.set_secure(other_ctx, server_hostname="localhost", session=session)
                with pytest.raises(ValueError, match="session"):
                    stream.set_secure(session=session)  # the default client context
                assert snapshot(stream) == NOTHING
                stream.end(b"still plaintext")

            stream.on("connect", on_connect)
            peer.on("data", plain_peer.append)
            peer.on("end", peer.end)
            async with stream, peer:
                pass
            assert b"".join(plain_peer) == b"still plaintext"
            assert log.events == ["connect", "end", ("close", False)]

            # The right context with the same session: accepted, and resumed.
            resumed = await tls_client("ssl", served.port, client_ctx, tls={"session": session})
            assert resumed.secure is not None and resumed.secure["reused"] is True


async def test_session_is_refused_by_servers(certs: Certs, version: ssl.TLSVersion) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx) as served:
            first = await tls_client("ssl", served.port, client_ctx)
        assert first.after is not None
        session = first.after["session"]
        with pytest.raises(ValueError, match="session"):
            net.create_server(session=session)
        with pytest.raises(ValueError, match="session"):
            net.Server(session=session)

        # Server-side set_secure(session=...): refused, the stream stays usable.
        a, b = memory_stream_pair()
        stream, peer = net.Stream.wrap(a), net.Stream.wrap(b)
        got: list[bytes] = []

        def on_connect() -> None:
            with pytest.raises(ValueError, match="session"):
                stream.set_secure(server_ctx, server_side=True, session=session)
            assert not stream.secure
            stream.end(b"plain")

        stream.on("connect", on_connect)
        peer.on("data", got.append)
        peer.on("end", peer.end)
        async with stream, peer:
            pass
        assert got == [b"plain"]


async def test_session_with_ssl_is_refused_by_create_server(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx) as served:
            first = await tls_client("ssl", served.port, client_ctx)
        assert first.after is not None
        state = context_state(server_ctx)
        with pytest.raises(ValueError, match="session"):
            net.create_server(ssl=server_ctx, session=first.after["session"])
        assert context_state(server_ctx) == state


# -- servername (SNI) ---------------------------------------------------------------------


async def test_servername_is_the_sni_name(certs: Certs, version: ssl.TLSVersion, mode: str) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server(mode, server_ctx) as served:
            client = await tls_client(mode, served.port, client_ctx, hostname="localhost")
        server = assert_clean(client, served, mode)
        assert server.secure is not None and server.secure["servername"] == "localhost"
        assert client.secure is not None and client.secure["servername"] == "localhost"
        assert server.stream.servername == "localhost"  # still after 'close'


async def test_servername_without_sni_to_an_ip_address(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    """A client connecting to 127.0.0.1 without ``server_hostname`` verifies
    the IP address and sends no SNI (none is sent for an IP address): the
    server stream's ``servername`` is ``None``; the client's is the name it
    used, the address."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server(mode, server_ctx) as served:
            client = await tls_client(mode, served.port, client_ctx, hostname=None)
        server = assert_clean(client, served, mode)
        assert client.verified == (True, None)
        assert server.secure is not None and server.secure["servername"] is None
        assert client.secure is not None and client.secure["servername"] == "127.0.0.1"


async def test_a_callers_sni_callback_still_runs_and_is_restored(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        names: list[str | None] = []

        def callback(ssl_object: Any, name: str | None, ctx: ssl.SSLContext) -> None:
            assert isinstance(ssl_object, ssl.SSLObject)
            assert ctx is server_ctx
            names.append(name)

        server_ctx.sni_callback = callback
        state = context_state(server_ctx)
        async with tls_server(mode, server_ctx) as served:
            first = await tls_client(mode, served.port, client_ctx, hostname="localhost")
            assert server_ctx.sni_callback is callback
            second = await tls_client(mode, served.port, client_ctx, hostname=None)
        assert_clean(first, served, mode, 0)
        assert_clean(second, served, mode, 1)
        assert names == ["localhost", None]
        assert [s.secure["servername"] for s in served.sides if s.secure] == ["localhost", None]
        assert server_ctx.sni_callback is callback
        assert context_state(server_ctx) == state


async def test_a_callers_sni_callback_may_switch_the_context(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        other_ctx = server_context(certs.other, version)
        client_ctx = client_context(certs.ca, version)

        def switch(ssl_object: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name == "other.example":
                ssl_object.context = other_ctx

        server_ctx.sni_callback = switch
        states = context_state(server_ctx), context_state(other_ctx)
        async with tls_server(mode, server_ctx) as served:
            client = await tls_client(mode, served.port, client_ctx, hostname="other.example")
        server = assert_clean(client, served, mode)
        assert client.verified == (True, None)
        assert server.secure is not None and server.secure["servername"] == "other.example"
        assert (context_state(server_ctx), context_state(other_ctx)) == states


# -- handshake_timeout --------------------------------------------------------------------


def client_hello(ctx: ssl.SSLContext) -> bytes:
    """The bytes of a real ClientHello for *ctx*."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def assert_handshake_timeout(error: BaseException) -> None:
    assert isinstance(error, TimeoutError), repr(error)
    assert error.code == "ERR_TLS_HANDSHAKE_TIMEOUT"  # type: ignore[attr-defined]
    assert error.errno == errno.ETIMEDOUT


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return bytes(data)


@pytest.mark.parametrize("given", ["keyword", "stream_option"])
async def test_handshake_timeout_server_side_set_secure_on_memory_streams(
    certs: Certs, version: ssl.TLSVersion, autojump_clock: Any, given: str
) -> None:
    with trio.fail_after(60):
        server_ctx = server_context(certs.server, version)
        hello = client_hello(client_context(certs.ca, version))
        raw, b = memory_stream_pair()
        server = net.Stream.wrap(b, **({"handshake_timeout": 200} if given != "keyword" else {}))
        keywords = {"handshake_timeout": 200} if given == "keyword" else {}
        server.on("connect", lambda: server.set_secure(server_ctx, server_side=True, **keywords))
        log = Log(server)
        times: list[float] = []
        server.on("close", lambda _: times.append(trio.current_time()))
        start = trio.current_time()
        async with server, trio.open_nursery() as nursery:

            async def half_a_hello() -> None:
                await raw.send_all(hello[: len(hello) // 2])
                await read_until_closed(raw)

            nursery.start_soon(half_a_hello)
        assert log.events == ["connect", "error", ("close", True)]
        assert_handshake_timeout(log.errors[0])
        assert times[0] - start == pytest.approx(0.2, abs=0.01)
        assert "200" in str(log.errors[0])


async def test_handshake_timeout_client_with_ssl_on_memory_streams(
    certs: Certs, version: ssl.TLSVersion, autojump_clock: Any
) -> None:
    with trio.fail_after(60):
        a, silent = memory_stream_pair()
        client = net.Stream.wrap(
            a,
            ssl=client_context(certs.ca, version),
            server_hostname="localhost",
            handshake_timeout=200,
        )
        log = Log(client)
        times: list[float] = []
        client.on("error", lambda _: times.append(trio.current_time()))
        start = trio.current_time()
        received: list[bytes] = []
        async with client, trio.open_nursery() as nursery:

            async def never_answer() -> None:
                received.append(await read_until_closed(silent))

            nursery.start_soon(never_answer)
        assert log.events == ["connect", "error", ("close", True)]
        assert_handshake_timeout(log.errors[0])
        assert times[0] - start == pytest.approx(0.2, abs=0.01)
        assert received[0][:1] == b"\x16"  # it did send its ClientHello


async def test_handshake_timeout_client_set_secure_after_a_plaintext_exchange(
    certs: Certs, version: ssl.TLSVersion, autojump_clock: Any
) -> None:
    with trio.fail_after(60):
        a, raw = memory_stream_pair()
        client = net.Stream.wrap(a)
        log = Log(client)
        client.on("connect", lambda: client.write(STARTTLS))
        client.on(
            "data",
            lambda _: client.set_secure(
                client_context(certs.ca, version),
                server_hostname="localhost",
                handshake_timeout=1500,
            ),
        )
        times: list[float] = []
        client.on("error", lambda _: times.append(trio.current_time()))
        async with client, trio.open_nursery() as nursery:

            async def answer_then_go_silent() -> None:
                assert await raw.receive_some() == STARTTLS
                await raw.send_all(GO)
                times.append(trio.current_time())
                await read_until_closed(raw)

            nursery.start_soon(answer_then_go_silent)
        assert log.events == ["connect", ("data", GO), "error", ("close", True)]
        assert_handshake_timeout(log.errors[0])
        assert times[1] - times[0] == pytest.approx(1.5, abs=0.01)


async def test_handshake_timeout_default_is_120_seconds(certs: Certs, autojump_clock: Any) -> None:
    with trio.fail_after(1000):
        a, silent = memory_stream_pair()
        client = net.Stream.wrap(
            a, ssl=client_context(certs.ca, ssl.TLSVersion.TLSv1_3), server_hostname="localhost"
        )
        log = Log(client)
        times: list[float] = []
        client.on("error", lambda _: times.append(trio.current_time()))
        start = trio.current_time()
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(read_until_closed, silent)
        assert log.events == ["connect", "error", ("close", True)]
        assert_handshake_timeout(log.errors[0])
        assert times[0] - start == pytest.approx(120, abs=0.01)


@pytest.mark.parametrize("side", ["client", "server"])
async def test_handshake_timeout_zero_never_times_out(
    certs: Certs, version: ssl.TLSVersion, autojump_clock: Any, side: str
) -> None:
    with trio.fail_after(100_000):
        a, raw = memory_stream_pair()
        if side == "client":
            stream = net.Stream.wrap(
                a,
                ssl=client_context(certs.ca, version),
                server_hostname="localhost",
                handshake_timeout=0,
            )
        else:
            stream = net.Stream.wrap(a, handshake_timeout=0)
            stream.on(
                "connect",
                lambda: stream.set_secure(server_context(certs.server, version), server_side=True),
            )
        hello = client_hello(client_context(certs.ca, version))
        log = Log(stream)
        async with stream, trio.open_nursery() as nursery:
            if side == "server":
                await raw.send_all(hello[:10])
            nursery.start_soon(read_until_closed, raw)
            await trio.sleep(10 * 3600)  # far beyond the 120 s default
            assert log.events == ["connect"]
            assert stream.ready_state == "open" and not stream.secure
            stream.destroy()
        assert log.events == ["connect", ("close", False)]


async def test_handshake_timeout_ends_with_the_handshake(
    certs: Certs, version: ssl.TLSVersion, autojump_clock: Any
) -> None:
    """The limit is on the handshake only: a connection idle for much longer
    afterwards is not touched."""
    with trio.fail_after(1000):
        a, b = memory_stream_pair()
        client = net.Stream.wrap(
            a,
            ssl=client_context(certs.ca, version),
            server_hostname="localhost",
            handshake_timeout=200,
        )
        server = net.Stream.wrap(b, handshake_timeout=200)
        server.on(
            "connect",
            lambda: server.set_secure(server_context(certs.server, version), server_side=True),
        )
        server.on("end", server.end)
        client_log, server_log = Log(client), Log(server)
        async with client, server:
            await trio.sleep(300)
            client.end(b"late")
        assert client_log.events == ["connect", "secure", "end", ("close", False)]
        assert server_log.events == [
            "connect",
            "secure",
            ("data", b"late"),
            "end",
            ("close", False),
        ]


async def test_handshake_timeout_on_a_tls_server_is_a_tls_client_error(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """Real sockets: a raw TCP peer sends half a ClientHello and stops."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        hello = client_hello(client_context(certs.ca, version))
        logs: list[Log] = []
        streams: list[net.Stream] = []
        tls_errors: list[tuple[BaseException, net.Stream]] = []

        def on_connection(conn: net.Stream) -> None:
            streams.append(conn)
            logs.append(Log(conn, first=["connection"]))

        async with net.create_server(
            on_connection, ssl=server_ctx, handshake_timeout=200
        ) as server:
            server.on("tlsClientError", lambda exc, stream: tls_errors.append((exc, stream)))
            server.on("secureConnection", lambda _: pytest.fail("no handshake completed"))
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            start = trio.current_time()
            async with raw:
                await raw.send_all(hello[: len(hello) // 2])
                answer = await read_until_closed(raw)
            elapsed = trio.current_time() - start
            server.close()
        assert answer == b""
        assert 0.19 <= elapsed < 5
        (log,) = logs
        assert log.events == ["connection", "connect", "error", ("close", True)]
        assert_handshake_timeout(log.errors[0])
        assert tls_errors == [(log.errors[0], streams[0])]


async def test_handshake_timeout_of_server_side_set_secure_over_tcp(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """A plaintext server's stream upgraded by ``set_secure(handshake_timeout=200)``:
    the stream's 'error'; it is no TLS server, so no 'tlsClientError'."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        hello = client_hello(client_context(certs.ca, version))
        logs: list[Log] = []

        def on_connection(conn: net.Stream) -> None:
            logs.append(Log(conn, first=["connection"]))

            def on_data(_chunk: bytes) -> None:
                conn.write(GO)
                conn.set_secure(server_ctx, handshake_timeout=200)

            conn.once("data", on_data)

        tls_errors: list[Any] = []
        async with net.create_server(on_connection) as server:
            server.on("tlsClientError", lambda *args: tls_errors.append(args))
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            async with raw:
                await raw.send_all(STARTTLS)
                assert await raw.receive_some(len(GO)) == GO
                start = trio.current_time()
                await raw.send_all(hello[:20])
                await read_until_closed(raw)
                elapsed = trio.current_time() - start
            server.close()
        assert 0.19 <= elapsed < 5
        (log,) = logs
        assert log.events == [
            "connection",
            "connect",
            ("data", STARTTLS),
            "error",
            ("close", True),
        ]
        assert_handshake_timeout(log.errors[0])
        assert tls_errors == []


async def test_handshake_timeout_of_a_client_against_a_silent_server(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        received: list[bytes] = []

        async def accept_and_never_answer() -> None:
            transport = await listener.accept()
            async with transport:
                received.append(await read_until_closed(transport))

        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(accept_and_never_answer)
            client = net.create_connection(
                port,
                ssl=client_context(certs.ca, version),
                server_hostname="localhost",
                handshake_timeout=200,
            )
            log = Log(client)
            start = trio.current_time()
            async with client:
                pass
            elapsed = trio.current_time() - start
        assert log.events == ["connect", "error", ("close", True)]
        assert_handshake_timeout(log.errors[0])
        assert 0.19 <= elapsed < 5
        assert received[0][:1] == b"\x16"


# -- 'secureConnection' and 'tlsClientError' ----------------------------------------------


async def test_secure_connection_comes_after_the_streams_secure(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx) as served:
            first = await tls_client("ssl", served.port, client_ctx)
            second = await tls_client("ssl", served.port, client_ctx)
        assert_clean(first, served, "ssl", 0)
        assert_clean(second, served, "ssl", 1)
        streams = [s.stream for s in served.sides]
        assert served.order == [
            ("secure", streams[0]),
            ("sc", streams[0]),
            ("secure", streams[1]),
            ("sc", streams[1]),
        ]
        assert served.tls_errors == []


async def test_no_secure_connection_for_set_secure_on_a_plaintext_server(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server("starttls", server_ctx) as served:
            client = await tls_client("starttls", served.port, client_ctx)
        assert_clean(client, served, "starttls")
        assert served.order == [("secure", served.sides[0].stream)]


async def test_secure_connection_listener_can_take_the_data(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """Node's ``tls.createServer(options, listener)`` pattern: the listener is
    a ``'secureConnection'`` listener that adds the ``'data'`` listener; data
    the client sent with its handshake is not lost."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        order: list[str] = []

        def on_secure_connection(conn: net.Stream) -> None:
            order.append("secureConnection")
            assert conn.secure and conn.get_protocol() == version_name(version)
            conn.on("data", lambda chunk: (order.append("data"), conn.write(chunk)))
            conn.on("end", conn.end)

        async with net.create_server(ssl=server_ctx) as server:
            server.on("secureConnection", on_secure_connection)
            await server.listen(0, "127.0.0.1")
            client = await tls_client("ssl", port_of(server), client_ctx)
            server.close()
        assert client.log.events == [
            "connect",
            "secure",
            ("data", PAYLOAD),
            "end",
            ("close", False),
        ]
        assert order[:2] == ["secureConnection", "data"]


async def test_tls_client_error_for_a_client_that_rejects_the_server_is_handled(
    certs: Certs, version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.untrusted, version)
        client_ctx = client_context(certs.ca, version)  # does not trust the server
        tls_errors: list[tuple[BaseException, net.Stream]] = []
        streams: list[net.Stream] = []
        closes: list[bool] = []

        def on_connection(conn: net.Stream) -> None:  # no 'error' listener on the stream
            streams.append(conn)
            conn.on("close", closes.append)

        with caplog.at_level(logging.DEBUG, logger="trio_netstream"):
            async with net.create_server(on_connection, ssl=server_ctx) as server:
                server.on("tlsClientError", lambda exc, stream: tls_errors.append((exc, stream)))
                server.on("secureConnection", lambda _: pytest.fail("no handshake completed"))
                await server.listen(0, "127.0.0.1")
                client = await tls_client("ssl", port_of(server), client_ctx)
                server.close()

        client_error = assert_failed(client, ["connect"])
        assert isinstance(client_error, ssl.SSLCertVerificationError)
        ((error, stream),) = tls_errors
        assert stream is streams[0]
        assert isinstance(error, ssl.SSLError)
        assert "UNKNOWN_CA" in str(error).upper() or "unknown ca" in str(error).lower()
        assert closes == [True]
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_tls_client_error_and_the_streams_own_error_listener_both_run(
    certs: Certs, version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.untrusted, version)
        client_ctx = client_context(certs.ca, version)
        with caplog.at_level(logging.DEBUG, logger="trio_netstream"):
            async with tls_server("ssl", server_ctx) as served:
                await tls_client("ssl", served.port, client_ctx)
        (side,) = served.sides
        error = assert_failed(side, ["connection", "connect"])
        assert isinstance(error, ssl.SSLError)
        assert served.tls_errors == [(error, side.stream)]
        assert served.order == []
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_without_a_tls_client_error_listener_the_failure_is_logged(
    certs: Certs, version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.untrusted, version)
        client_ctx = client_context(certs.ca, version)
        closes: list[bool] = []

        def on_connection(conn: net.Stream) -> None:  # no 'error' listener
            conn.on("close", closes.append)

        with caplog.at_level(logging.DEBUG, logger="trio_netstream"):
            async with net.create_server(on_connection, ssl=server_ctx) as server:
                await server.listen(0, "127.0.0.1")
                client = await tls_client("ssl", port_of(server), client_ctx)
                server.close()  # the block does not raise
        assert isinstance(assert_failed(client, ["connect"]), ssl.SSLCertVerificationError)
        assert closes == [True]
        errors = [
            r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "trio_netstream"
        ]
        assert len(errors) == 1
        assert "unhandled 'error'" in errors[0].getMessage()
        assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], ssl.SSLError)


async def test_a_raising_tls_client_error_listener_fails_the_server_block(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.untrusted, version)
        client_ctx = client_context(certs.ca, version)

        def boom(_exc: BaseException, _stream: net.Stream) -> None:
            raise RuntimeError("listener failed")

        with pytest.raises(RuntimeError, match="listener failed"):
            async with net.create_server(ssl=server_ctx) as server:
                server.on("tlsClientError", boom)
                await server.listen(0, "127.0.0.1")
                await tls_client("ssl", port_of(server), client_ctx)
                await trio.sleep_forever()


# -- reject_unauthorized --------------------------------------------------------------------


@pytest.mark.parametrize("server_mode", ["ssl", "starttls", "starttls_defaults"])
async def test_a_server_with_cas_requires_a_client_certificate_by_default(
    certs: Certs, version: ssl.TLSVersion, server_mode: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version, client_ca=certs.client_ca)
        client_ctx = client_context(certs.ca, version)  # no certificate
        state = context_state(server_ctx)
        async with tls_server(server_mode, server_ctx) as served:
            client = await tls_client(server_mode, served.port, client_ctx)
        (side,) = served.sides
        error = assert_failed(side, plain_prefix(server_mode, server=True))
        assert isinstance(error, ssl.SSLError)
        assert "CERTIFICATE" in str(error).upper()
        if server_mode == "ssl":
            assert served.tls_errors == [(error, side.stream)]
        else:
            assert served.tls_errors == []  # no TLS server: the stream's 'error' only
        assert client.log.events[-1] == ("close", True)
        assert "data" not in [e[0] for e in client.log.events if isinstance(e, tuple)][1:]
        assert context_state(server_ctx) == state


async def test_a_server_with_reject_unauthorized_false_lets_a_client_without_certificate_in(
    certs: Certs, version: ssl.TLSVersion, mode: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version, client_ca=certs.client_ca)
        client_ctx = client_context(certs.ca, version)
        state = context_state(server_ctx)
        async with tls_server(mode, server_ctx, tls={"reject_unauthorized": False}) as served:
            client = await tls_client(mode, served.port, client_ctx)
        server = assert_clean(client, served, mode)
        assert server.verified is not None
        verified, reason = server.verified
        assert verified is False
        assert reason is not None and reason.startswith("NO_PEER_CERTIFICATE")
        assert server.stream.get_peer_certificate() is None
        assert client.verified == (True, None)
        assert served.tls_errors == []
        assert context_state(server_ctx) == state


@pytest.mark.parametrize("reject_unauthorized", [True, False])
async def test_a_client_certificate_from_the_servers_ca_verifies(
    certs: Certs, version: ssl.TLSVersion, mode: str, reject_unauthorized: bool
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version, client_ca=certs.client_ca)
        client_ctx = client_context(certs.ca, version, cert=certs.client)
        async with tls_server(
            mode, server_ctx, tls={"reject_unauthorized": reject_unauthorized}
        ) as served:
            client = await tls_client(mode, served.port, client_ctx)
        server = assert_clean(client, served, mode)
        assert server.verified == (True, None)
        certificate = server.stream.get_peer_certificate()
        assert certificate is not None and certificate["subject"]["CN"] == "client one"
        assert client.verified == (True, None)


@pytest.mark.parametrize("reject_unauthorized", [True, False])
async def test_a_client_certificate_from_another_ca_is_refused_either_way(
    certs: Certs, version: ssl.TLSVersion, reject_unauthorized: bool
) -> None:
    """With ``reject_unauthorized=False`` a server lets in a client without
    a certificate, but OpenSSL still refuses one that does not verify."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version, client_ca=certs.client_ca)
        client_ctx = client_context(certs.ca, version, cert=certs.wrong_client)
        async with tls_server(
            "ssl", server_ctx, tls={"reject_unauthorized": reject_unauthorized}
        ) as served:
            await tls_client("ssl", served.port, client_ctx)
        (side,) = served.sides
        error = assert_failed(side, ["connection", "connect"])
        assert served.tls_errors == [(error, side.stream)]


async def test_a_client_with_reject_unauthorized_false_and_ssl_connects_to_an_untrusted_server(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.untrusted, version)
        client_ctx = client_context(certs.ca, version)
        state = context_state(client_ctx)
        async with tls_server("ssl", server_ctx) as served:
            client = await tls_client(
                "ssl", served.port, client_ctx, tls={"reject_unauthorized": False}
            )
            strict = await tls_client("ssl", served.port, client_ctx)  # the default: refused
        assert_clean(client, served, "ssl")
        assert client.verified is not None
        verified, reason = client.verified
        assert verified is False
        assert reason is not None and "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" in reason
        assert client.stream.get_peer_certificate() is not None
        assert isinstance(assert_failed(strict, ["connect"]), ssl.SSLCertVerificationError)
        assert context_state(client_ctx) == state


# -- bad TLS options are refused at the call ------------------------------------------------

BAD_OPTIONS: list[tuple[str, Any, type[Exception]]] = [
    ("alpn_protocols", "h2", TypeError),
    ("alpn_protocols", b"h2", TypeError),
    ("alpn_protocols", [b"h2"], TypeError),
    ("alpn_protocols", ["h2", 2], TypeError),
    ("alpn_protocols", [""], ValueError),
    ("alpn_protocols", ["x" * 256], ValueError),
    ("alpn_protocols", ["é"], ValueError),
    ("handshake_timeout", -1, ValueError),
    ("handshake_timeout", float("nan"), ValueError),
    ("handshake_timeout", "1", TypeError),
    ("handshake_timeout", True, TypeError),
    ("session", "x", TypeError),
    ("reject_unauthorized", 1, TypeError),
    ("reject_unauthorized", None, TypeError),
]
BAD_IDS = [f"{name}={value!r}"[:40] for name, value, _ in BAD_OPTIONS]


#: set_secure() takes None as "the stream's option".
BAD_SET_SECURE = [case for case in BAD_OPTIONS if case[1] is not None]


def says(name: str) -> str:
    """What the message of a refused option names."""
    return "(?i)alpn" if name == "alpn_protocols" else name


@pytest.mark.parametrize(("name", "value", "expected"), BAD_OPTIONS, ids=BAD_IDS)
async def test_bad_tls_options_are_refused_by_create_connection_and_stream(
    certs: Certs, name: str, value: Any, expected: type[Exception]
) -> None:
    with trio.fail_after(20):
        ctx = client_context(certs.ca, ssl.TLSVersion.TLSv1_3)
        state = context_state(ctx)
        accepted: list[net.Stream] = []
        async with net.create_server(accepted.append) as server:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            with pytest.raises(expected, match=says(name)):
                net.create_connection(port, ssl=ctx, **{name: value})
            with pytest.raises(expected, match=says(name)):
                net.create_connection(port, **{name: value})
            with pytest.raises(expected, match=says(name)):
                net.connect({"port": port, "ssl": ctx, name: value})
            with pytest.raises(expected, match=says(name)):
                net.Stream(ssl=ctx, **{name: value})
            with pytest.raises(expected, match=says(name)):
                net.Stream(**{name: value})
            a, _b = memory_stream_pair()
            with pytest.raises(expected, match=says(name)):
                net.Stream.wrap(a, ssl=ctx, **{name: value})
            await trio.sleep(0.05)
            server.close()
        assert accepted == []
        assert context_state(ctx) == state


@pytest.mark.parametrize(("name", "value", "expected"), BAD_OPTIONS, ids=BAD_IDS)
async def test_bad_tls_options_are_refused_by_create_server(
    certs: Certs, name: str, value: Any, expected: type[Exception]
) -> None:
    ctx = server_context(certs.server, ssl.TLSVersion.TLSv1_3)
    state = context_state(ctx)
    with pytest.raises(expected, match=says(name)):
        net.create_server(ssl=ctx, **{name: value})
    with pytest.raises(expected, match=says(name)):
        net.create_server(**{name: value})
    with pytest.raises(expected, match=says(name)):
        net.Server(ssl=ctx, **{name: value})
    assert context_state(ctx) == state
    await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("side", ["client", "server"])
async def test_bad_tls_options_are_refused_by_set_secure_and_nothing_changes(
    certs: Certs, version: ssl.TLSVersion, side: str
) -> None:
    with trio.fail_after(20):
        client_ctx = client_context(certs.ca, version)
        server_ctx = server_context(certs.server, version)
        states = context_state(client_ctx), context_state(server_ctx)
        a, b = memory_stream_pair()
        client, server = net.Stream.wrap(a), net.Stream.wrap(b)
        client_log, server_log = Log(client), Log(server)
        tried: list[str] = []

        def refuse_all(stream: net.Stream, ctx: ssl.SSLContext, is_server: bool) -> None:
            kwargs: dict[str, Any] = (
                {"server_side": True} if is_server else {"server_hostname": "localhost"}
            )
            for name, value, expected in BAD_SET_SECURE:
                with pytest.raises(expected, match=says(name)):
                    stream.set_secure(ctx, **kwargs, **{name: value})
                assert stream.ready_state == "open" and not stream.secure
                assert snapshot(stream) == NOTHING
                tried.append(name)

        def on_client_connect() -> None:
            if side == "client":
                refuse_all(client, client_ctx, False)
            client.write(b"plain\n")  # still plaintext

        def on_server_data(chunk: bytes) -> None:
            if chunk == b"plain\n":
                if side == "server":
                    refuse_all(server, server_ctx, True)
                server.write(b"go\n")
                server.set_secure(server_ctx, server_side=True, alpn_protocols=["h2"])

        def on_client_data(chunk: bytes) -> None:
            if chunk == b"go\n":
                client.set_secure(client_ctx, server_hostname="localhost", alpn_protocols=["h2"])

        client.on("connect", on_client_connect)
        client.on("data", on_client_data)
        client.on("secure", lambda: client.end(b"tls\n"))
        server.on("data", on_server_data)
        server.on("end", lambda: server.end(b"bye\n"))
        async with client, server:
            pass

        assert len(tried) == len(BAD_SET_SECURE)
        assert client_log.events == [
            "connect",
            ("data", b"go\n"),
            "secure",
            ("data", b"bye\n"),
            "end",
            ("close", False),
        ]
        assert server_log.events == [
            "connect",
            ("data", b"plain\n"),
            "secure",
            ("data", b"tls\n"),
            "end",
            ("close", False),
        ]
        assert client.alpn_protocol == server.alpn_protocol == "h2"
        assert (context_state(client_ctx), context_state(server_ctx)) == states


async def test_node_option_names_in_an_options_dict(certs: Certs, version: ssl.TLSVersion) -> None:
    """``ALPNProtocols``, ``rejectUnauthorized`` and ``handshakeTimeout`` in
    an options dict, as Node spells them."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.untrusted, version)
        client_ctx = client_context(certs.ca, version)
        async with tls_server("ssl", server_ctx, tls={"alpn_protocols": ["h2"]}) as served:
            client = net.connect(
                {
                    "port": served.port,
                    "host": "127.0.0.1",
                    "ssl": client_ctx,
                    "servername": "localhost",
                    "ALPNProtocols": ["h2"],
                    "rejectUnauthorized": False,
                    "handshakeTimeout": 5000,
                }
            )
            seen: list[Any] = []
            client.on("secure", lambda: (seen.append(snapshot(client)), client.end()))
            async with client:
                pass
        assert seen[0]["alpn"] == "h2"
        assert client.verify_peer() is False
