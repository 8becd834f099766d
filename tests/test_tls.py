"""TLS: STARTTLS upgrades (``set_secure``), TLS from the first byte (``ssl=``),
peer verification and certificate fields, close_notify half-close, large
transfers, and handshake failures that must end in one ``'error'`` then
``'close'(True)``.

Certificates come from ``trustme``. Every TLS test runs twice, with both
contexts pinned to TLS 1.2 and then to TLS 1.3. The peers are real loopback
sockets (TCP on 127.0.0.1, one UNIX path), or ``memory_stream_pair()`` wrapped
with ``Stream.wrap`` on both sides where determinism (or the autojump clock)
is needed. Raw Trio peers (a plain socket or ``trio.SSLStream``) are used
where the test needs a peer the library cannot be (an attacker, a peer that
vanishes, an independent TLS implementation of close_notify). Every test body
runs under ``trio.fail_after(20)`` so a hang fails instead of blocking.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import random
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trustme
from cryptography import x509
from netstream_testing import read_to_eof
from trio.testing import memory_stream_pair, wait_all_tasks_blocked

import trio_netstream as net
from trio_netstream import StreamStateError

KiB = 1024
MiB = 1024 * KiB

ORG = "trio_netstream tests"
UTC = datetime.timezone.utc
SERVER_NOT_BEFORE = datetime.datetime(2020, 3, 5, 7, 8, 9, tzinfo=UTC)
SERVER_NOT_AFTER = datetime.datetime(2099, 11, 23, 14, 5, 6, tzinfo=UTC)

TLS_EVENTS = ("connect", "secure", "data", "end", "drain", "timeout", "error", "close")


# -- helpers ------------------------------------------------------------------------


class Log:
    """Every event of one stream, in order.

    Consecutive ``'data'`` chunks are joined into one ``("data", payload)``
    entry (just ``"data"`` when *keep_data* is false), so sequences do not
    depend on how the kernel or TLS records split the bytes. ``'error'`` is
    recorded as ``"error"``; the exception goes to :attr:`errors`.
    """

    def __init__(
        self,
        stream: net.Stream,
        *,
        first: Iterable[Any] = (),
        keep_data: bool = True,
        names: Iterable[str] = TLS_EVENTS,
    ) -> None:
        self.events: list[Any] = list(first)
        self.errors: list[BaseException] = []
        self.keep_data = keep_data
        emitter: Any = stream  # one listener for every event name
        for name in names:
            emitter.on(name, self._listener(name))

    def _listener(self, name: str) -> Any:
        def listener(*args: Any) -> None:
            if name == "data":
                self._data(args[0])
            elif name == "error":
                self.errors.append(args[0])
                self.events.append("error")
            else:
                self.events.append((name, *args) if args else name)

        return listener

    def _data(self, chunk: Any) -> None:
        last = self.events[-1] if self.events else None
        if not self.keep_data:
            if last != "data":
                self.events.append("data")
        elif isinstance(last, tuple) and last[0] == "data":
            self.events[-1] = ("data", last[1] + chunk)
        else:
            self.events.append(("data", chunk))


@dataclass(frozen=True)
class Certs:
    ca: trustme.CA
    server: trustme.LeafCert  # localhost, 127.0.0.1, ::1; fixed validity dates
    expired: trustme.LeafCert
    other_ca: trustme.CA  # trusts nothing the server presents
    client_ca: trustme.CA
    client: trustme.LeafCert  # from client_ca
    wrong_client: trustme.LeafCert  # from other_ca


@pytest.fixture(scope="session")
def certs() -> Certs:
    ca = trustme.CA(organization_name=ORG, organization_unit_name="server CA")
    other_ca = trustme.CA(organization_name="somebody else", organization_unit_name="other CA")
    client_ca = trustme.CA(organization_name=ORG, organization_unit_name="client CA")
    return Certs(
        ca=ca,
        server=ca.issue_cert(
            "localhost",
            "127.0.0.1",
            "::1",
            common_name="localhost",
            organization_name=ORG,
            organization_unit_name="server",
            not_before=SERVER_NOT_BEFORE,
            not_after=SERVER_NOT_AFTER,
        ),
        expired=ca.issue_cert(
            "localhost",
            "127.0.0.1",
            not_before=datetime.datetime(2001, 1, 1, tzinfo=UTC),
            not_after=datetime.datetime(2002, 1, 1, tzinfo=UTC),
        ),
        other_ca=other_ca,
        client_ca=client_ca,
        client=client_ca.issue_cert(
            "client.example",
            common_name="client one",
            organization_name=ORG,
            organization_unit_name="client",
        ),
        wrong_client=other_ca.issue_cert("client.example", common_name="impostor"),
    )


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    return request.param  # type: ignore[no-any-return]


def server_context(
    cert: trustme.LeafCert, version: ssl.TLSVersion, *, client_ca: trustme.CA | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = version
    cert.configure_cert(ctx)
    if client_ca is not None:
        client_ca.configure_trust(ctx)  # a server context holding CAs requests a client cert
    return ctx


def client_context(
    trust: trustme.CA, version: ssl.TLSVersion | None, *, cert: trustme.LeafCert | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    trust.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def der_of(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode("ascii"))


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


def port_of(server: net.Server) -> int:
    address = server.address()
    assert isinstance(address, tuple)
    return int(address[1])


def assert_server_certificate(fields: dict[str, Any] | None, cert: trustme.LeafCert) -> None:
    """The fields of ``certs.server`` as Node's ``getPeerCertificate()`` gives them."""
    assert fields is not None
    der = der_of(cert)
    parsed = x509.load_der_x509_certificate(der)
    assert fields["subject"] == {"CN": "localhost", "O": ORG, "OU": "server"}
    assert fields["issuer"] == {"O": ORG, "OU": "server CA"}
    # Node's (OpenSSL's) date format; the day is space-padded.
    assert fields["valid_from"] == "Mar  5 07:08:09 2020 GMT"
    assert fields["valid_to"] == "Nov 23 14:05:06 2099 GMT"
    serial = fields["serial_number"]
    assert re.fullmatch(r"[0-9A-F]+", serial), serial
    assert int(serial, 16) == parsed.serial_number
    assert fields["fingerprint256"] == colon_hex(hashlib.sha256(der).digest())
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fields["fingerprint256"])
    alt = fields["subjectaltname"].split(", ")
    assert alt[:2] == ["DNS:localhost", "IP Address:127.0.0.1"]
    assert len(alt) == 3 and alt[2].startswith("IP Address:")
    assert ipaddress.ip_address(alt[2].removeprefix("IP Address:")) == ipaddress.ip_address("::1")


def assert_failure(log: Log, prefix: list[Any]) -> BaseException:
    """Exactly one ``'error'`` (an ``ssl.SSLError``, or ``ConnectionResetError``
    with code ``"ECONNRESET"``) then ``'close'(True)``; returns the error."""
    assert log.events == [*prefix, "error", ("close", True)]
    (error,) = log.errors
    if isinstance(error, ConnectionResetError):
        assert error.code == "ECONNRESET"  # type: ignore[attr-defined]
    else:
        assert isinstance(error, ssl.SSLError), repr(error)
    return error


def client_hello(ctx: ssl.SSLContext) -> bytes:
    """The bytes of a real ClientHello for *ctx*."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def drain_raw_until_closed(stream: trio.abc.ReceiveStream) -> None:
    """Read whatever the server sends (an alert, maybe) until it closes."""
    try:
        await read_to_eof(stream)
    except trio.BrokenResourceError:
        pass  # the server's close came as a reset: also "closed"


def echo_handler(logs: list[Log], **log_options: Any) -> Any:
    """A connection listener that records the stream, echoes, and ends on 'end'."""

    def on_connection(conn: net.Stream) -> None:
        logs.append(Log(conn, first=["connection"], **log_options))
        conn.on("data", conn.write)
        conn.on("end", conn.end)

    return on_connection


# -- STARTTLS: the seed's test-net-tls scenario -------------------------------------------


async def test_starttls_after_plaintext_exchange_seed_scenario(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        client_ctx = client_context(certs.ca, version)
        message = b"over TLS: " + bytes(range(256)) * 32  # under high_water_mark: no 'drain'
        server_logs: list[Log] = []
        server_seen: dict[str, Any] = {}
        client_seen: dict[str, Any] = {}

        def on_connection(conn: net.Stream) -> None:
            server_logs.append(Log(conn, first=["connection"]))
            state: dict[str, Any] = {"secure": False, "buffer": b""}

            def on_data(chunk: bytes) -> None:
                if state["secure"]:
                    conn.write(chunk)  # echo over TLS
                    return
                state["buffer"] += chunk
                if state["buffer"] == b"hello\r\n":
                    with pytest.raises(ValueError):
                        conn.set_secure()  # server side needs a context: nothing changes
                    conn.write(b"ok\r\n")  # written before set_secure(): plaintext
                    conn.set_secure(server_ctx)  # server_side by default: it was accepted

            def on_secure() -> None:
                state["secure"] = True
                server_seen["verify_peer"] = conn.verify_peer()
                server_seen["certificate"] = conn.get_peer_certificate()

            conn.on("data", on_data)
            conn.on("secure", on_secure)
            conn.on("end", conn.end)

        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(port_of(server))
            client_log = Log(client)
            state: dict[str, Any] = {"secure": False, "plain": b"", "tls": b""}

            def on_connect() -> None:
                client_seen["before"] = (
                    client.verify_peer(),
                    client.get_peer_certificate(),
                    client.authorization_error,
                )
                client.write(b"hello\r\n")

            def on_data(chunk: bytes) -> None:
                if not state["secure"]:
                    state["plain"] += chunk
                    if state["plain"] == b"ok\r\n":
                        client.set_secure(client_ctx, server_hostname="localhost")
                    return
                state["tls"] += chunk
                if len(state["tls"]) == len(message):
                    client.end()

            def on_secure() -> None:
                state["secure"] = True
                client_seen["verify_peer"] = client.verify_peer()
                client_seen["authorization_error"] = client.authorization_error
                client_seen["certificate"] = client.get_peer_certificate()
                client.write(message)

            client.on("connect", on_connect)
            client.on("data", on_data)
            client.on("secure", on_secure)
            async with client:
                pass
            server.close()

        assert client_log.events == [
            "connect",
            ("data", b"ok\r\n"),
            "secure",
            ("data", message),
            "end",
            ("close", False),
        ]
        (server_log,) = server_logs
        assert server_log.events == [
            "connection",
            "connect",
            ("data", b"hello\r\n"),
            "secure",
            ("data", message),
            "end",
            ("close", False),
        ]
        assert client_seen["before"] == (False, None, None)
        assert client_seen["verify_peer"] is True
        assert client_seen["authorization_error"] is None
        assert_server_certificate(client_seen["certificate"], certs.server)
        # The client sent no certificate (the server's context holds no CA).
        assert server_seen == {"verify_peer": False, "certificate": None}
        assert client.ready_state == "closed"
        assert client.bytes_written == len(b"hello\r\n") + len(message)
        assert client.bytes_read == len(b"ok\r\n") + len(message)


# -- TLS from the first byte ------------------------------------------------------------


@pytest.mark.parametrize("where", ["tcp", "unix"])
async def test_tls_from_first_byte(
    certs: Certs, version: ssl.TLSVersion, where: str, unix_path: str
) -> None:
    with trio.fail_after(20):
        server_logs: list[Log] = []
        async with net.create_server(
            echo_handler(server_logs), ssl=server_context(certs.server, version)
        ) as server:
            if where == "tcp":
                await server.listen(0, "127.0.0.1")
                target: tuple[Any, ...] = (port_of(server),)
            else:
                await server.listen(unix_path)
                target = (unix_path,)
            client = net.create_connection(
                *target, ssl=client_context(certs.ca, version), server_hostname="localhost"
            )
            log = Log(client)
            seen: list[Any] = []

            def on_connect() -> None:
                seen.append(
                    (client.ready_state, client.verify_peer(), client.get_peer_certificate())
                )
                client.write(b"queued before the handshake, ")  # must go out encrypted

            def on_secure() -> None:
                seen.append((client.verify_peer(), client.get_peer_certificate() is not None))
                client.end(b"and after it")

            client.on("connect", on_connect)
            client.on("secure", on_secure)
            async with client:
                pass
            server.close()

        assert log.events == [
            "connect",
            "secure",
            ("data", b"queued before the handshake, and after it"),
            "end",
            ("close", False),
        ]
        assert server_logs[0].events == [
            "connection",
            "connect",
            "secure",
            ("data", b"queued before the handshake, and after it"),
            "end",
            ("close", False),
        ]
        assert seen == [("open", False, None), (True, True)]


async def test_ssl_true_uses_a_default_context_that_rejects_trustme_ca(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_logs: list[Log] = []
        async with net.create_server(
            echo_handler(server_logs), ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(port_of(server), ssl=True, server_hostname="localhost")
            log = Log(client)
            async with client:
                pass
            server.close()

        error = assert_failure(log, ["connect"])
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert error.code == "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"  # type: ignore[attr-defined]
        assert_failure(server_logs[0], ["connection", "connect"])


async def test_no_peer_certificate_before_handshake(certs: Certs, version: ssl.TLSVersion) -> None:
    with trio.fail_after(20):
        fresh = net.Stream()
        assert (fresh.verify_peer(), fresh.get_peer_certificate()) == (False, None)
        assert fresh.authorization_error is None

        before: list[Any] = []
        after: list[Any] = []

        def look(stream: net.Stream, into: list[Any]) -> Any:
            return lambda: into.append((stream.verify_peer(), stream.get_peer_certificate()))

        def on_connection(conn: net.Stream) -> None:
            conn.on("connect", look(conn, before))
            conn.on("secure", look(conn, after))
            conn.on("end", conn.end)

        async with net.create_server(
            on_connection, ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server), ssl=client_context(certs.ca, version), server_hostname="localhost"
            )
            client.on("connect", look(client, before))
            client.on("secure", look(client, after))
            client.on("secure", client.end)
            async with client:
                pass
            server.close()

        assert sorted(before, key=repr) == [(False, None), (False, None)]
        # After the handshake the client has the server's certificate; the
        # server has none (the client presented none).
        assert sorted((verified, cert is None) for verified, cert in after) == [
            (False, True),
            (True, False),
        ]


# -- verification ---------------------------------------------------------------------------

# case -> (server cert, CA the client trusts, server_hostname, acceptable Node codes)
BAD_SERVER_CASES = {
    "untrusted_ca": (
        "server",
        "other_ca",
        "localhost",
        {"UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"},
    ),
    "hostname_mismatch": ("server", "ca", "wrong.example", {"ERR_TLS_CERT_ALTNAME_INVALID"}),
    "expired": ("expired", "ca", "localhost", {"CERT_HAS_EXPIRED"}),
}


@pytest.mark.parametrize("case", list(BAD_SERVER_CASES))
async def test_default_rejects_an_unverified_server(
    certs: Certs, version: ssl.TLSVersion, case: str
) -> None:
    cert_name, trust_name, hostname, codes = BAD_SERVER_CASES[case]
    with trio.fail_after(20):
        server_logs: list[Log] = []
        async with net.create_server(
            echo_handler(server_logs), ssl=server_context(getattr(certs, cert_name), version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server),
                ssl=client_context(getattr(certs, trust_name), version),
                server_hostname=hostname,
            )
            log = Log(client)
            client.on("connect", lambda: client.write(b"must never be sent"))
            async with client:
                pass
            server.close()

        error = assert_failure(log, ["connect"])
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert error.code in codes  # type: ignore[attr-defined]
        assert client.verify_peer() is False
        assert_failure(server_logs[0], ["connection", "connect"])


@pytest.mark.parametrize("case", list(BAD_SERVER_CASES))
async def test_reject_unauthorized_false_completes_the_handshake(
    certs: Certs, version: ssl.TLSVersion, case: str
) -> None:
    cert_name, trust_name, hostname, codes = BAD_SERVER_CASES[case]
    served: trustme.LeafCert = getattr(certs, cert_name)
    with trio.fail_after(20):
        server_logs: list[Log] = []
        async with net.create_server(
            echo_handler(server_logs), ssl=server_context(served, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(port_of(server))  # plaintext, then STARTTLS
            log = Log(client)
            seen: dict[str, Any] = {}

            def on_connect() -> None:
                client.set_secure(
                    client_context(getattr(certs, trust_name), version),
                    server_hostname=hostname,
                    reject_unauthorized=False,
                )

            def on_secure() -> None:
                seen["verify_peer"] = client.verify_peer()
                seen["authorization_error"] = client.authorization_error
                seen["certificate"] = client.get_peer_certificate()
                client.end(b"talking anyway")

            client.on("connect", on_connect)
            client.on("secure", on_secure)
            async with client:
                pass
            server.close()

        assert log.events == [
            "connect",
            "secure",
            ("data", b"talking anyway"),
            "end",
            ("close", False),
        ]
        assert server_logs[0].events == [
            "connection",
            "connect",
            "secure",
            ("data", b"talking anyway"),
            "end",
            ("close", False),
        ]
        assert seen["verify_peer"] is False
        reason = seen["authorization_error"]
        assert isinstance(reason, str)
        assert any(code in reason for code in codes), reason
        if case == "hostname_mismatch":
            assert "ALTNAME" in reason
        fields = seen["certificate"]
        assert fields is not None
        assert fields["fingerprint256"] == colon_hex(hashlib.sha256(der_of(served)).digest())
        if cert_name == "server":
            assert_server_certificate(fields, certs.server)
        else:
            assert fields["valid_to"] == "Jan  1 00:00:00 2002 GMT"


async def test_reject_unauthorized_false_with_a_valid_certificate_still_verifies(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """verify_peer() says whether the certificate verified, whatever
    reject_unauthorized was: a good certificate verifies (Node: authorized)."""
    with trio.fail_after(20):
        server_logs: list[Log] = []
        async with net.create_server(
            echo_handler(server_logs), ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(port_of(server))
            log = Log(client)
            seen: list[Any] = []

            def on_connect() -> None:
                client.set_secure(
                    client_context(certs.ca, version),
                    server_hostname="localhost",
                    reject_unauthorized=False,
                )

            def on_secure() -> None:
                seen.append((client.verify_peer(), client.authorization_error))
                client.end(b"fine")

            client.on("connect", on_connect)
            client.on("secure", on_secure)
            async with client:
                pass
            server.close()

        assert log.events == ["connect", "secure", ("data", b"fine"), "end", ("close", False)]
        assert seen == [(True, None)]


async def test_client_certificate_from_the_trusted_ca(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_seen: dict[str, Any] = {}
        server_logs: list[Log] = []

        def on_connection(conn: net.Stream) -> None:
            echo_handler(server_logs)(conn)

            def on_secure() -> None:
                server_seen["verify_peer"] = conn.verify_peer()
                server_seen["certificate"] = conn.get_peer_certificate()

            conn.on("secure", on_secure)

        server_ctx = server_context(certs.server, version, client_ca=certs.client_ca)
        async with net.create_server(on_connection, ssl=server_ctx) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server),
                ssl=client_context(certs.ca, version, cert=certs.client),
                server_hostname="localhost",
            )
            log = Log(client)
            client_verified: list[bool] = []

            def on_secure() -> None:
                client_verified.append(client.verify_peer())
                client.end(b"it's me")

            client.on("secure", on_secure)
            async with client:
                pass
            server.close()

        assert log.events == ["connect", "secure", ("data", b"it's me"), "end", ("close", False)]
        assert server_logs[0].events == [
            "connection",
            "connect",
            "secure",
            ("data", b"it's me"),
            "end",
            ("close", False),
        ]
        assert client_verified == [True]
        assert server_seen["verify_peer"] is True
        fields = server_seen["certificate"]
        assert fields is not None
        assert fields["subject"] == {"CN": "client one", "O": ORG, "OU": "client"}
        assert fields["issuer"] == {"O": ORG, "OU": "client CA"}
        assert fields["fingerprint256"] == colon_hex(hashlib.sha256(der_of(certs.client)).digest())
        assert fields["subjectaltname"] == "DNS:client.example"


async def test_client_certificate_from_the_wrong_ca_fails(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_logs: list[Log] = []
        server_ctx = server_context(certs.server, version, client_ca=certs.client_ca)
        async with net.create_server(echo_handler(server_logs), ssl=server_ctx) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server),
                ssl=client_context(certs.ca, version, cert=certs.wrong_client),
                server_hostname="localhost",
            )
            log = Log(client)
            client.on("secure", lambda: client.write(b"let me in"))
            async with client:
                pass
            server.close()

        # The server checks the client's certificate in its handshake: it fails there.
        server_error = assert_failure(server_logs[0], ["connection", "connect"])
        assert isinstance(server_error, ssl.SSLError)
        # With TLS 1.3 the client's handshake is complete before the server has
        # looked at its certificate, so the client may see 'secure' first; it
        # never gets data.
        if version is ssl.TLSVersion.TLSv1_2:
            assert_failure(log, ["connect"])
        else:
            prefix = log.events[:-2]
            assert prefix in (["connect"], ["connect", "secure"])
            assert_failure(log, prefix)


# -- half-close over TLS --------------------------------------------------------------------


async def test_end_flushes_then_sends_close_notify_and_reading_goes_on(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """An independent peer (``trio.SSLStream``, which reports a FIN without
    close_notify as an error) checks that ``end()`` sends every queued byte
    and then close_notify, and answers after it: we still read the answer."""
    with trio.fail_after(20):
        payload = random.Random(7).randbytes(256 * KiB)
        reply = b"got your close_notify; here is more"
        received: list[bytes] = []
        server_ctx = server_context(certs.server, version)

        async def peer(listener: trio.SocketListener) -> None:
            transport = await listener.accept()
            tls = trio.SSLStream(transport, server_ctx, server_side=True)
            try:
                # receive_some() returns b"" only on close_notify (a bare FIN
                # raises BrokenResourceError).
                received.append(await read_to_eof(tls))
                await tls.send_all(reply)
            finally:
                await tls.aclose()  # our close_notify, then the socket closes

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        (listener,) = listeners
        port = listener.socket.getsockname()[1]
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(peer, listener)
            client = net.create_connection(
                port, ssl=client_context(certs.ca, version), server_hostname="localhost"
            )
            log = Log(client)
            states: list[str] = []

            def on_secure() -> None:
                client.write(payload[: 100 * KiB])
                client.end(payload[100 * KiB :])
                states.append(client.ready_state)

            client.on("secure", on_secure)
            client.on("end", lambda: states.append(client.ready_state))
            async with client:
                pass

        assert received == [payload]
        assert log.events == ["connect", "secure", ("data", reply), "end", ("close", False)]
        assert states == ["readOnly", "closed"]
        assert client.bytes_written == len(payload)
        assert client.bytes_read == len(reply)


async def test_peer_close_notify_is_end_and_we_can_still_send(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_logs: list[Log] = []
        states: dict[str, str] = {}

        def on_connection(conn: net.Stream) -> None:
            server_logs.append(Log(conn, first=["connection"]))
            conn.on("secure", lambda: conn.end(b"server speaks first and ends"))
            conn.on("end", lambda: states.setdefault("server_at_end", conn.ready_state))

        async with net.create_server(
            on_connection, ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server), ssl=client_context(certs.ca, version), server_hostname="localhost"
            )
            log = Log(client)

            def on_end() -> None:
                states["client_at_end"] = client.ready_state
                client.write(b"client answers ")
                client.end(b"after the server's end")

            client.on("end", on_end)
            async with client:
                pass
            server.close()

        assert log.events == [
            "connect",
            "secure",
            ("data", b"server speaks first and ends"),
            "end",
            ("close", False),
        ]
        assert server_logs[0].events == [
            "connection",
            "connect",
            "secure",
            ("data", b"client answers after the server's end"),
            "end",
            ("close", False),
        ]
        assert states == {"client_at_end": "writeOnly", "server_at_end": "closed"}


# -- volume and flow control ----------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.count = 0

    def __call__(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.count += len(chunk)


async def pump(
    stream: net.Stream, payload: bytes, ready: trio.Event, stats: dict[str, int]
) -> None:
    """Write *payload* in 64 KiB pieces, waiting for 'drain' whenever write()
    returns False; then end()."""
    await ready.wait()
    drained = [trio.Event()]

    def on_drain() -> None:
        stats["drains"] += 1
        drained[0].set()

    stream.on("drain", on_drain)
    view = memoryview(payload)
    for offset in range(0, len(payload), 64 * KiB):
        drained[0] = trio.Event()
        if not stream.write(view[offset : offset + 64 * KiB]):
            stats["falses"] += 1
            await drained[0].wait()
    stream.end()


async def test_16_mib_each_way_at_once(certs: Certs, version: ssl.TLSVersion) -> None:
    with trio.fail_after(20):
        total = 16 * MiB
        upload = random.Random(1).randbytes(total)
        download = random.Random(2).randbytes(total)
        server_sink, client_sink = Sink(), Sink()
        server_streams: list[net.Stream] = []
        server_logs: list[Log] = []
        server_secure, client_secure = trio.Event(), trio.Event()
        quiet = ("connect", "secure", "end", "error", "close")

        def on_connection(conn: net.Stream) -> None:
            server_streams.append(conn)
            server_logs.append(Log(conn, first=["connection"], keep_data=False, names=quiet))
            conn.on("data", server_sink)
            conn.on("secure", server_secure.set)

        up_stats = {"falses": 0, "drains": 0}
        down_stats = {"falses": 0, "drains": 0}

        async def serve_download() -> None:
            await server_secure.wait()
            await pump(server_streams[0], download, server_secure, down_stats)

        async with net.create_server(
            on_connection, ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server), ssl=client_context(certs.ca, version), server_hostname="localhost"
            )
            log = Log(client, keep_data=False, names=quiet)
            client.on("data", client_sink)
            client.on("secure", client_secure.set)
            async with client, trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upload, client_secure, up_stats)
                nursery.start_soon(serve_download)
            server.close()

        assert server_sink.count == total
        assert server_sink.digest.hexdigest() == hashlib.sha256(upload).hexdigest()
        assert client_sink.count == total
        assert client_sink.digest.hexdigest() == hashlib.sha256(download).hexdigest()
        assert log.events == ["connect", "secure", "end", ("close", False)]
        assert server_logs[0].events == ["connection", "connect", "secure", "end", ("close", False)]
        # Backpressure happened, and each False was followed by one 'drain'.
        assert up_stats["falses"] > 0 and up_stats["drains"] == up_stats["falses"]
        assert down_stats["falses"] > 0 and down_stats["drains"] == down_stats["falses"]
        # Application bytes, not TLS records.
        assert client.bytes_written == client.bytes_read == total
        assert server_streams[0].bytes_read == server_streams[0].bytes_written == total


async def test_write_pause_resume_encoding_and_byte_counts_over_tls(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        text = "héllo wörld €"
        server_streams: list[net.Stream] = []
        server_logs: list[Log] = []

        def on_connection(conn: net.Stream) -> None:
            server_streams.append(conn)
            server_logs.append(Log(conn, first=["connection"]))

            def on_secure() -> None:
                conn.write("héllo ")
                conn.write(b"w\xc3\xb6rld ")
                conn.write(b"\xe2\x82")  # '€' split across two writes
                conn.write(b"\xac")
                conn.end()

            conn.on("secure", on_secure)

        async with net.create_server(
            on_connection, ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server), ssl=client_context(certs.ca, version), server_hostname="localhost"
            )
            client.set_encoding("utf8")
            log = Log(client)
            paused = trio.Event()
            results: list[bool] = []

            def on_secure() -> None:
                client.pause()
                results.append(client.write("ping ✓"))
                results.append(client.write("68656c6c6f", "hex"))
                results.append(client.write(bytearray(b"\x00\xff")))
                paused.set()

            client.on("secure", on_secure)
            client.on("end", client.end)
            async with client:
                await paused.wait()
                # Let the server's bytes reach our socket; none may come out while paused.
                await server_streams[0].drain()
                await wait_all_tasks_blocked(cushion=0.05)
                assert log.events == ["connect", "secure"]
                client.resume()
            server.close()

        assert results == [True, True, True]
        assert log.events == ["connect", "secure", ("data", text), "end", ("close", False)]
        assert all(
            isinstance(event[1], str)
            for event in log.events
            if isinstance(event, tuple) and event[0] == "data"
        )
        sent = "ping ✓".encode() + b"hello" + b"\x00\xff"
        assert server_logs[0].events == [
            "connection",
            "connect",
            "secure",
            ("data", sent),
            "end",
            ("close", False),
        ]
        assert client.bytes_read == server_streams[0].bytes_written == len(text.encode())
        assert client.bytes_written == server_streams[0].bytes_read == len(sent)


async def test_idle_timeout_over_tls_on_memory_streams(
    certs: Certs, version: ssl.TLSVersion, autojump_clock: Any
) -> None:
    with trio.fail_after(20):
        a, b = memory_stream_pair()
        client, server = net.Stream.wrap(a), net.Stream.wrap(b)
        client_log, server_log = Log(client), Log(server)
        client.on(
            "connect",
            lambda: client.set_secure(
                client_context(certs.ca, version), server_hostname="localhost"
            ),
        )
        server.on(
            "connect",
            lambda: server.set_secure(server_context(certs.server, version), server_side=True),
        )
        client.on("secure", lambda: client.set_timeout(5000))
        client.on("timeout", lambda: client.end(b"idle, bye"))
        server.on("end", server.end)
        async with client, server:
            pass

        assert client_log.events == ["connect", "secure", "timeout", "end", ("close", False)]
        assert server_log.events == [
            "connect",
            "secure",
            ("data", b"idle, bye"),
            "end",
            ("close", False),
        ]
        assert client.bytes_written == server.bytes_read == len(b"idle, bye")


# -- plaintext injection behind STARTTLS (CVE-2011-0411 class) ----------------------------


@pytest.mark.parametrize("then", ["junk_instead_of_hello", "junk_before_hello"])
async def test_injection_sent_after_starttls_never_comes_out_as_tls_data(
    certs: Certs, version: ssl.TLSVersion, then: str
) -> None:
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        server_logs: list[Log] = []
        upgraded = trio.Event()

        def on_connection(conn: net.Stream) -> None:
            server_logs.append(Log(conn, first=["connection"]))
            buffer = bytearray()

            def on_data(chunk: bytes) -> None:
                buffer.extend(chunk)
                if not upgraded.is_set() and b"STARTTLS\r\n" in buffer:
                    conn.set_secure(server_ctx)
                    upgraded.set()

            conn.on("data", on_data)

        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            async with raw:
                await raw.send_all(b"STARTTLS\r\n")
                await upgraded.wait()  # the server called set_secure(): now inject
                await raw.send_all(b"INJECTED\r\n")
                if then == "junk_before_hello":
                    tls = trio.SSLStream(
                        raw, client_context(certs.ca, version), server_hostname="localhost"
                    )
                    with pytest.raises(trio.BrokenResourceError):
                        await tls.do_handshake()
                else:
                    await drain_raw_until_closed(raw)
            server.close()

        (log,) = server_logs
        error = assert_failure(log, ["connection", "connect", ("data", b"STARTTLS\r\n")])
        assert isinstance(error, ssl.SSLError)


async def test_injection_in_the_starttls_packet_is_plaintext_before_secure(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """Bytes read before set_secure() are plaintext: they come out before
    'secure', never after it."""
    with trio.fail_after(20):
        server_ctx = server_context(certs.server, version)
        server_logs: list[Log] = []
        upgraded = trio.Event()

        def on_connection(conn: net.Stream) -> None:
            server_logs.append(Log(conn, first=["connection"]))
            state = {"secure": False}
            buffer = bytearray()

            def on_data(chunk: bytes) -> None:
                buffer.extend(chunk)
                if not upgraded.is_set() and b"STARTTLS\r\n" in buffer:
                    conn.set_secure(server_ctx)
                    upgraded.set()
                elif state["secure"] and buffer.endswith(b"AFTER\r\n"):
                    conn.end(b"OK\r\n")

            def on_secure() -> None:
                state["secure"] = True
                buffer.clear()

            conn.on("data", on_data)
            conn.on("secure", on_secure)

        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            async with raw:
                await raw.send_all(b"STARTTLS\r\nINJECTED\r\n")  # one send
                await upgraded.wait()
                tls = trio.SSLStream(
                    raw, client_context(certs.ca, version), server_hostname="localhost"
                )
                await tls.do_handshake()
                await tls.send_all(b"AFTER\r\n")
                answer = await read_to_eof(tls)
                await tls.aclose()
            server.close()

        assert answer == b"OK\r\n"
        (log,) = server_logs
        assert log.events == [
            "connection",
            "connect",
            ("data", b"STARTTLS\r\nINJECTED\r\n"),
            "secure",
            ("data", b"AFTER\r\n"),
            "end",
            ("close", False),
        ]


# -- handshake failures -----------------------------------------------------------------------


async def test_plaintext_request_to_a_tls_server_is_a_server_side_error(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        server_logs: list[Log] = []
        async with net.create_server(
            echo_handler(server_logs), ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            async with raw:
                await raw.send_all(b"GET / HTTP/1.0\r\n\r\n")
                await drain_raw_until_closed(raw)
            server.close()

        error = assert_failure(server_logs[0], ["connection", "connect"])
        assert isinstance(error, ssl.SSLError)


@pytest.mark.parametrize("sent", ["nothing", "half_a_client_hello"])
async def test_client_vanishing_mid_handshake_is_econnreset_on_the_server(
    certs: Certs, version: ssl.TLSVersion, sent: str
) -> None:
    with trio.fail_after(20):
        server_logs: list[Log] = []
        hello = client_hello(client_context(certs.ca, version))
        async with net.create_server(
            echo_handler(server_logs), ssl=server_context(certs.server, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            async with raw:
                if sent == "half_a_client_hello":
                    await raw.send_all(hello[: len(hello) // 2])
            server.close()

        error = assert_failure(server_logs[0], ["connection", "connect"])
        assert isinstance(error, ConnectionResetError)


async def test_server_vanishing_mid_handshake_is_econnreset_on_the_client(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):

        async def vanish(listener: trio.SocketListener) -> None:
            transport = await listener.accept()
            async with transport:
                await transport.receive_some(5)  # the start of the ClientHello, then gone

        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(vanish, listener)
            client = net.create_connection(
                port, ssl=client_context(certs.ca, version), server_hostname="localhost"
            )
            log = Log(client)
            async with client:
                pass

        error = assert_failure(log, ["connect"])
        assert isinstance(error, ConnectionResetError)


# -- set_secure() misuse --------------------------------------------------------------------


async def test_set_secure_bad_arguments_change_nothing(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(20):
        client_ctx = client_context(certs.ca, version)
        server_ctx = server_context(certs.server, version)
        a, b = memory_stream_pair()
        client, server = net.Stream.wrap(a), net.Stream.wrap(b)
        client_log, server_log = Log(client), Log(server)
        checked: list[str] = []

        def unchanged(stream: net.Stream) -> None:
            assert stream.ready_state == "open"
            assert stream.verify_peer() is False
            assert stream.get_peer_certificate() is None

        def on_client_connect() -> None:
            bad_calls: list[tuple[Any, type[Exception]]] = [
                (lambda: client.set_secure("not a context"), TypeError),  # type: ignore[arg-type]
                (lambda: client.set_secure(object()), TypeError),  # type: ignore[arg-type]
                (lambda: client.set_secure(client_ctx, server_side="x"), TypeError),  # type: ignore[arg-type]
                (lambda: client.set_secure(server_side=True), ValueError),
                (lambda: client.set_secure(None, server_side=True), ValueError),
            ]
            for call, expected in bad_calls:
                with pytest.raises(expected):
                    call()
                unchanged(client)
                checked.append(expected.__name__)
            client.write(b"plain\n")  # still plaintext: no upgrade was recorded

        def on_server_data(chunk: bytes) -> None:
            if chunk == b"plain\n":
                server.write(b"go\n")
                server.set_secure(server_ctx, server_side=True)
                with pytest.raises(StreamStateError):
                    server.set_secure(server_ctx, server_side=True)
                checked.append("server twice")

        def on_client_data(chunk: bytes) -> None:
            if chunk == b"go\n":
                client.set_secure(client_ctx, server_hostname="localhost")
                with pytest.raises(StreamStateError):
                    client.set_secure(client_ctx, server_hostname="localhost")
                checked.append("client twice")

        def on_client_secure() -> None:
            client.write(b"tls\n")
            client.end()

        client.on("connect", on_client_connect)
        client.on("data", on_client_data)
        client.on("secure", on_client_secure)
        server.on("data", on_server_data)
        server.on("end", lambda: server.end(b"bye\n"))
        async with client, server:
            pass

        assert checked == [
            "TypeError",
            "TypeError",
            "TypeError",
            "ValueError",
            "ValueError",
            "server twice",
            "client twice",
        ]
        # The refused second calls did not disturb the first upgrade.
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


async def test_set_secure_on_a_closed_stream_raises(certs: Certs) -> None:
    with trio.fail_after(20):
        ctx = client_context(certs.ca, None)
        never_connected = net.Stream()
        with pytest.raises(StreamStateError):
            never_connected.set_secure(ctx)
        assert never_connected.ready_state == "closed"
        assert never_connected.verify_peer() is False

        a, b = memory_stream_pair()
        stream, peer = net.Stream.wrap(a), net.Stream.wrap(b)
        log = Log(stream)
        stream.on("connect", stream.end)
        peer.on("end", peer.end)
        async with stream, peer:
            pass
        assert log.events == ["connect", "end", ("close", False)]
        with pytest.raises(StreamStateError):
            stream.set_secure(ctx)
        assert stream.ready_state == "closed"
        assert (stream.verify_peer(), stream.get_peer_certificate()) == (False, None)
        assert log.events == ["connect", "end", ("close", False)]
