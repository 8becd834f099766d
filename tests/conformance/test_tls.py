"""TLS: from the first byte (``ssl=``) and by upgrade (``set_secure``),
certificate checks, peer certificates, close_notify, junk, pause and large
transfers (Node's test-tls-*.js). Certificates come from ``trustme``.

Node's ``tls.connect`` / ``tls.createServer`` map onto ``ssl=`` on
``create_connection`` / ``create_server``; Node's ``'secureConnect'`` is
our ``'secure'``, which follows ``'connect'``."""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trustme

import trio_netstream as net

from ._support import LOOPBACK, Tally, echo, port_of

TLS_EVENTS = ("connect", "secure", "data", "end", "drain", "timeout", "error", "close")
UTC = datetime.timezone.utc
NOT_BEFORE = datetime.datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC)
NOT_AFTER = datetime.datetime(2098, 12, 24, 23, 59, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    leaf: trustme.LeafCert
    untrusted_ca: trustme.CA
    untrusted_leaf: trustme.LeafCert

    def server_context(self, *, trusted: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (self.leaf if trusted else self.untrusted_leaf).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA(organization_name="conformance CA", organization_unit_name="net")
    untrusted_ca = trustme.CA(organization_name="nobody trusts me")
    return Pki(
        ca=ca,
        leaf=ca.issue_cert(
            "localhost",
            "127.0.0.1",
            "test.test",
            common_name="agent1",
            organization_name="Joyent",
            organization_unit_name="Node.js",
            not_before=NOT_BEFORE,
            not_after=NOT_AFTER,
        ),
        untrusted_ca=untrusted_ca,
        untrusted_leaf=untrusted_ca.issue_cert("localhost", "127.0.0.1"),
    )


async def _run(stream: net.Stream) -> None:
    async with stream:
        pass


async def test_two_tls_clients_connect_and_end(pki: Pki, record: Any) -> None:
    """From test-tls-connect-simple.js.

    Two clients connect with ``ssl=``; each ends in its ``'secure'``
    listener; the server sees two connections, is closed on the second and
    emits ``'close'`` once both are done.
    """
    server_events: list[str] = []
    with trio.fail_after(10):
        async with net.create_server(ssl=pki.server_context()) as server:
            connections = Tally()

            def handler(conn: net.Stream) -> None:
                conn.on("end", conn.end)
                connections.add()
                if connections.count == 2:
                    server.close()

            server.on("connection", handler)
            server.on("close", lambda: server_events.append("close"))
            await server.listen(0, LOOPBACK)
            clients = [
                net.create_connection(port_of(server), ssl=pki.client_context()) for _ in range(2)
            ]
            recs = [record(client, events=TLS_EVENTS) for client in clients]
            for client in clients:
                client.on("secure", client.end)
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_run, client)
    assert connections.count == 2
    assert server_events == ["close"]
    for rec in recs:
        assert rec.events == ["connect", "secure", "end", ("close", False)]


async def test_peer_certificate_fields(pki: Pki) -> None:
    """From test-tls-peer-certificate.js.

    After the handshake, ``get_peer_certificate()`` describes the server's
    certificate with Node's fields: ``subject`` / ``issuer`` as dicts,
    ``serial_number`` in upper-case hex, ``fingerprint256`` as
    colon-separated hex of the DER's SHA-256, ``valid_from`` / ``valid_to``
    in Node's date format, ``subjectaltname``. Before the handshake it is
    ``None``. (Node's ``getPeerCertificate(true)`` issuer chain,
    ``exponent`` and ``infoAccess`` are not in our SPEC.)
    """
    from cryptography import x509

    pem = pki.leaf.cert_chain_pems[0].bytes()
    cert = x509.load_pem_x509_certificate(pem)
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    serial = f"{cert.serial_number:X}"
    serial = "0" * (len(serial) % 2) + serial
    fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())

    seen: list[Any] = []
    received: list[bytes] = []
    with trio.fail_after(10):
        async with net.create_server(ssl=pki.server_context()) as server:

            def handler(conn: net.Stream) -> None:
                conn.on("data", received.append)
                conn.end("World")

            server.on("connection", handler)
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server), ssl=pki.client_context())
            seen.append(client.get_peer_certificate())
            client.on("connect", lambda: seen.append(client.get_peer_certificate()))
            client.on("secure", lambda: seen.append(client.get_peer_certificate()))
            client.on("end", client.end)
            client.end("Hello")
            await _run(client)
            server.close()
    assert seen[:2] == [None, None]
    peer = seen[2]
    assert peer["subject"] == {"CN": "agent1", "O": "Joyent", "OU": "Node.js"}
    assert peer["issuer"]["O"] == "conformance CA"
    assert peer["issuer"]["OU"] == "net"
    assert peer["serial_number"] == serial
    assert peer["fingerprint256"] == fingerprint
    assert peer["valid_from"] == "Jan  2 03:04:05 2021 GMT"
    assert peer["valid_to"] == "Dec 24 23:59:01 2098 GMT"
    assert peer["subjectaltname"] == "DNS:localhost, IP Address:127.0.0.1, DNS:test.test"
    assert b"".join(received) == b"Hello"


async def test_starttls_on_both_ends_of_a_plain_connection(pki: Pki, record: Any) -> None:
    """From test-tls-starttls-server.js.

    A plain server upgrades each accepted stream with
    ``set_secure(context)`` (server side by default for an accepted
    stream); the plain client upgrades with ``set_secure(...,
    server_hostname="test.test")``. Both get ``'secure'``, end there and
    close cleanly; the client verified the name it asked for. (Node's SNI
    callback and OCSP request are not part of our API.)
    """
    server_recs: list[Any] = []
    verified: list[bool] = []
    with trio.fail_after(10):
        async with net.create_server() as server:

            def handler(conn: net.Stream) -> None:
                server_recs.append(record(conn, events=TLS_EVENTS))
                conn.set_secure(pki.server_context())
                conn.on("secure", conn.end)

            server.on("connection", handler)
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client, events=TLS_EVENTS)
            client.on(
                "connect",
                lambda: client.set_secure(pki.client_context(), server_hostname="test.test"),
            )

            def on_secure() -> None:
                verified.append(client.verify_peer())
                client.end()

            client.on("secure", on_secure)
            await _run(client)
            server.close()
    assert verified == [True]
    assert rec.events == ["connect", "secure", "end", ("close", False)]
    assert [r.events for r in server_recs] == [["connect", "secure", "end", ("close", False)]]


async def test_client_reject_unauthorized(pki: Pki, record: Any) -> None:
    """From test-tls-client-reject.js.

    Against an echo server whose certificate the client does not trust:
    with ``reject_unauthorized=False`` the handshake completes,
    ``verify_peer()`` is ``False``, ``authorization_error`` says why, and
    ``"ok"`` is echoed; by default the handshake fails with
    ``ssl.SSLCertVerificationError`` (``'error'`` then ``'close'(True)``,
    no data). Against a server whose CA the client trusts,
    ``verify_peer()`` is ``True`` and ``"ok"`` is echoed.
    """
    server_errors: list[BaseException] = []

    def handler(conn: net.Stream) -> None:
        echo(conn)
        conn.on("error", server_errors.append)

    checks: list[Any] = []

    async def attempt(port: int, context: ssl.SSLContext, reject: bool, message: str) -> Any:
        client = net.create_connection(port)
        rec = record(client, events=TLS_EVENTS)

        def on_connect() -> None:
            client.set_secure(context, server_hostname="localhost", reject_unauthorized=reject)
            client.end(message)  # written after set_secure(): encrypted

        client.on("connect", on_connect)
        client.on(
            "secure", lambda: checks.append((client.verify_peer(), client.authorization_error))
        )
        client.on("error", lambda err: None)
        await _run(client)
        return rec

    plain = ssl.create_default_context()  # trusts the system CAs, not ours
    with trio.fail_after(10):
        async with net.create_server(handler, ssl=pki.server_context(trusted=False)) as untrusted:
            await untrusted.listen(0, LOOPBACK)
            unauthorized = await attempt(port_of(untrusted), plain, False, "ok")
            rejected = await attempt(port_of(untrusted), plain, True, "ng")
            untrusted.close()
        async with net.create_server(handler, ssl=pki.server_context()) as trusted:
            await trusted.listen(0, LOOPBACK)
            authorized = await attempt(port_of(trusted), pki.client_context(), True, "ok")
            trusted.close()

    assert unauthorized.events == ["connect", "secure", "data", "end", ("close", False)]
    assert unauthorized.data == b"ok"
    assert checks[0][0] is False
    assert isinstance(checks[0][1], str) and checks[0][1]

    assert [event[0] if isinstance(event, tuple) else event for event in rejected.events] == [
        "connect",
        "error",
        "close",
    ]
    error = rejected.events[1][1]
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert rejected.events[2] == ("close", True)
    assert rejected.chunks == []

    assert authorized.events == ["connect", "secure", "data", "end", ("close", False)]
    assert authorized.data == b"ok"
    assert checks[1] == (True, None)
    assert len(checks) == 2
    assert len(server_errors) == 1  # the rejected handshake, on the server side


async def test_tls_on_a_stream_connected_later(pki: Pki, record: Any) -> None:
    """From test-tls-on-empty-socket.js.

    TLS is configured on a stream before it has a connection
    (``Stream(ssl=...)``); ``connect()`` is called afterwards. The server's
    ``"hello"`` arrives decrypted, after ``'secure'``; the client destroys
    the stream at ``'end'``.
    """
    with trio.fail_after(10):
        async with net.create_server(ssl=pki.server_context()) as server:
            server.on("connection", lambda conn: conn.end("hello"))
            await server.listen(0, LOOPBACK)
            stream = net.Stream(ssl=pki.client_context(), server_hostname="localhost")
            rec = record(stream, events=TLS_EVENTS)
            stream.on("end", stream.destroy)
            stream.connect(port_of(server))
            await _run(stream)
            server.close()
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert rec.data == b"hello"


async def test_set_encoding_over_tls(pki: Pki) -> None:
    """From test-tls-set-encoding.js.

    With ``set_encoding("utf8")`` a TLS client gets ``str`` chunks equal to
    what the server sent, and ``ready_state`` is ``"closed"`` in its
    ``'close'`` listener.
    """
    message = "hello world\n"
    chunks: list[Any] = []
    states: list[str] = []
    with trio.fail_after(10):
        async with net.create_server(ssl=pki.server_context()) as server:
            connections = Tally()
            server.on("connection", connections.add)
            server.on("connection", lambda conn: conn.end(message))
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server), ssl=pki.client_context())
            client.set_encoding("utf8")
            client.on("data", chunks.append)
            client.on("end", client.end)
            client.on("close", lambda had_error: states.append(client.ready_state))
            await _run(client)
            server.close()
    assert connections.count == 1
    assert all(isinstance(chunk, str) for chunk in chunks)
    assert "".join(chunks) == message
    assert states == ["closed"]


async def test_close_notify_without_tcp_shutdown_gives_end(pki: Pki, record: Any) -> None:
    """From test-tls-close-notify.js.

    The server (a raw ``trio.SSLStream``) sends close_notify but keeps the
    TCP connection open: the client still emits ``'end'``; it destroys the
    stream there, which closes cleanly.
    """
    listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
    listener = listeners[0]
    port = listener.socket.getsockname()[1]

    async def serve_one() -> None:
        tcp = await listener.accept()
        tls = trio.SSLStream(tcp, pki.server_context(), server_side=True)
        try:
            await tls.do_handshake()
            await tls.unwrap()  # sends close_notify, then waits for the peer's
        except trio.BrokenResourceError:
            pass  # the client destroyed the connection instead of answering
        finally:
            await tcp.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            client = net.create_connection(port, ssl=pki.client_context())
            rec = record(client, events=TLS_EVENTS)
            client.on("end", client.destroy)
            await _run(client)
    await listener.aclose()
    assert rec.events == ["connect", "secure", "end", ("close", False)]


async def test_junk_from_a_plain_client_closes_the_connection(pki: Pki, record: Any) -> None:
    """From test-tls-junk-closes-server.js.

    A plain client sends non-TLS bytes to a TLS server: the server drops
    the connection and the client sees ``'end'``. Difference: Node's TLS
    server emits no ``'secureConnection'``; ours is a ``net`` server with
    ``ssl=``, so its ``'connection'`` listener runs at accept, and the
    accepted stream reports the failed handshake as ``'error'``
    (``ssl.SSLError``) then ``'close'(True)``, never ``'secure'``.
    """
    server_recs: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(ssl=pki.server_context()) as server:
            server.on(
                "connection",
                lambda conn: server_recs.append(
                    record(conn, events=("connect", "secure", "data", "end", "error", "close"))
                ),
            )
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client, events=TLS_EVENTS)
            client.on("connect", lambda: client.write("blah\nblah\nblah\n"))
            client.on("end", client.end)
            await _run(client)
            server.close()
    assert [event for event in rec.events if event != "data"] == [
        "connect",
        "end",
        ("close", False),
    ]
    assert len(server_recs) == 1
    events = server_recs[0].events
    assert [event[0] if isinstance(event, tuple) else event for event in events] == [
        "connect",
        "error",
        "close",
    ]
    assert isinstance(events[1][1], ssl.SSLError)
    assert events[2] == ("close", True)


async def test_pause_while_writing_over_tls(pki: Pki) -> None:
    """From test-tls-pause.js.

    A paused TLS client writes 1 MiB chunks until ``write()`` returns
    ``False``, then resumes; no ``'data'`` arrives before the resume, and
    the echo server returns every byte.
    """
    size = 1024 * 1024
    state = {"sent": 0, "received": 0, "resumed": False}
    with trio.fail_after(5):
        async with net.create_server(echo, ssl=pki.server_context()) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server), ssl=pki.client_context())

            def on_secure() -> None:
                client.pause()
                for _ in range(100):  # at most 100 MiB, as Node's guard
                    more = client.write(bytes(size))
                    state["sent"] += size
                    if not more:
                        break
                state["resumed"] = True
                client.resume()

            def on_data(chunk: bytes) -> None:
                assert state["resumed"]
                state["received"] += len(chunk)
                if state["received"] >= state["sent"]:
                    client.end()

            client.on("secure", on_secure)
            client.on("data", on_data)
            await _run(client)
            server.close()
    assert state["sent"] > 0
    assert state["received"] == state["sent"]


async def test_large_end_over_tls_arrives_whole(pki: Pki, record: Any) -> None:
    """From test-tls-client-destroy-soon.js.

    The server ends with 2 MiB (Node's ``end(big)`` + ``destroySoon()``; our
    ``end()`` flushes before close_notify): the client reads every byte
    before ``'end'``.
    """
    big = b"Y" * (2 * 1024 * 1024)
    counts: list[int] = []
    with trio.fail_after(10):
        async with net.create_server(ssl=pki.server_context()) as server:
            server.on("connection", lambda conn: conn.end(big))
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server), ssl=pki.client_context())
            rec = record(client, events=TLS_EVENTS)
            client.on("end", lambda: counts.append(len(rec.data)))
            client.on("end", client.end)
            await _run(client)
            server.close()
    assert counts == [len(big)]
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert rec.data == big
