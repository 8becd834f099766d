"""Hostile input (issue 6): every attack gets the documented error and changes
nothing else.

What ``tests/test_tls.py``, ``tests/test_validation.py`` and
``tests/interop/test_openssl.py`` already cover is not repeated here; this
file adds the client side of STARTTLS injection, plaintext pipelined behind
STARTTLS while the server's listener holds the socket, junk of every kind
before a handshake (to our server and from a fake server to our client) with
its Node error code, server-initiated renegotiation and mid-stream plaintext
from ``openssl s_server``, client certificates that are expired or from the
wrong CA as seen by our server, a 1 GiB write queued to a peer that never
reads (no copy, freed by ``destroy()``), and every kind of bad argument on a
live loopback connection.

Peers are real loopback sockets: raw Trio sockets or ``trio.SSLStream``
where the peer must be an attacker, ``openssl s_server`` where it must be an
independent TLS implementation. Certificates come from ``trustme``. Every
test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import array
import gc
import math
import random
import re
import shutil
import ssl
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from netstream_testing import NETWORK_LIMIT, Certs, GiB, KiB, MiB, port_of, read_to_eof, rss
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net
from trio_netstream import StreamStateError

OPENSSL = shutil.which("openssl")
TLS_EVENTS = ("connect", "secure", "data", "end", "drain", "timeout", "error", "close")


# -- helpers ---------------------------------------------------------------------------


class Log:
    """Every event of one stream, in order.

    Consecutive ``'data'`` chunks are joined into one ``("data", payload)``
    entry, so sequences do not depend on how the kernel or TLS records split
    the bytes. ``'error'`` is recorded as ``"error"``; the exception goes to
    :attr:`errors`.
    """

    def __init__(self, stream: net.Stream, *, first: Iterable[Any] = ()) -> None:
        self.events: list[Any] = list(first)
        self.errors: list[BaseException] = []
        emitter: Any = stream
        for name in TLS_EVENTS:
            emitter.on(name, self._listener(name))

    def _listener(self, name: str) -> Callable[..., None]:
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

    def error(self) -> BaseException:
        (error,) = self.errors
        return error


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    return request.param  # type: ignore[no-any-return]


def server_context(
    certs: Certs, version: ssl.TLSVersion, *, client_ca: trustme.CA | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = version
    certs.server.configure_cert(ctx)
    if client_ca is not None:
        client_ca.configure_trust(ctx)  # SPEC: a server context holding CAs requests a cert
    return ctx


def client_context(
    certs: Certs, version: ssl.TLSVersion, *, cert: trustme.LeafCert | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = version
    certs.ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def code_of(error: BaseException) -> Any:
    return getattr(error, "code", None)


async def receive_until(stream: trio.abc.ReceiveStream, buffer: bytearray, needle: bytes) -> None:
    while needle not in buffer:
        chunk = await stream.receive_some()
        assert chunk, f"connection closed before {needle!r}: {bytes(buffer)!r}"
        buffer += chunk


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    """What the other side sends (an alert, maybe) until it closes (EOF or reset)."""
    received = bytearray()
    try:
        while chunk := await stream.receive_some():
            received += chunk
    except trio.BrokenResourceError:
        pass  # a reset is a closed connection too
    return bytes(received)


def client_hello(ctx: ssl.SSLContext) -> bytes:
    """The bytes of a real ClientHello for *ctx*."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def sslv2_client_hello(version: int) -> bytes:
    """An SSLv2-format CLIENT-HELLO (2-byte header with the high bit set)."""
    ciphers = bytes.fromhex("0700c0050080030080010080060040040080020080")
    challenge = bytes(range(16))
    body = (
        b"\x01"
        + struct.pack(">HHHH", version, len(ciphers), 0, len(challenge))
        + ciphers
        + challenge
    )
    return struct.pack(">H", 0x8000 | len(body)) + body


async def serve_good_client(port: int, certs: Certs, version: ssl.TLSVersion) -> Log:
    """A well-behaved TLS client that sends a line, ends, and reads the echo."""
    client = net.create_connection(
        port, ssl=client_context(certs, version), server_hostname="localhost"
    )
    log = Log(client)
    client.on("secure", lambda: client.end(b"good client\n"))
    async with client:
        pass
    return log


def echo_recorder(logs: list[Log]) -> Callable[[net.Stream], None]:
    def on_connection(conn: net.Stream) -> None:
        logs.append(Log(conn, first=["connection"]))
        conn.on("data", conn.write)
        conn.on("end", conn.end)

    return on_connection


GOOD_SESSION = [
    "connection",
    "connect",
    "secure",
    ("data", b"good client\n"),
    "end",
    ("close", False),
]


# -- 1. STARTTLS injection ---------------------------------------------------------------


async def test_server_starttls_plaintext_pipelined_behind_the_command_is_tls_input(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """CVE-2011-0411: the attacker pipelines plaintext behind STARTTLS in its
    own packet while the server's async 'data' listener still holds the socket
    (so those bytes are unread when set_secure() is called). They go to TLS:
    the handshake fails with one 'error', never as 'data' after 'secure'."""
    with trio.fail_after(NETWORK_LIMIT):
        server_ctx = server_context(certs, version)
        logs: list[Log] = []
        command_seen, injected = trio.Event(), trio.Event()

        def on_connection(conn: net.Stream) -> None:
            logs.append(Log(conn, first=["connection"]))

            async def on_data(chunk: bytes) -> None:
                if chunk == b"STARTTLS\r\n":
                    command_seen.set()
                    await injected.wait()  # the injection is in our socket now
                    conn.write(b"220 go ahead\r\n")
                    conn.set_secure(server_ctx)

            conn.on("data", on_data)

        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            async with raw:
                await raw.send_all(b"STARTTLS\r\n")
                await command_seen.wait()
                await raw.send_all(b"INJECTED\r\n")  # loopback: readable when this returns
                injected.set()
                answer = await read_until_closed(raw)
            server.close()

        assert answer.startswith(b"220 go ahead\r\n")  # plaintext before the handshake
        (log,) = logs
        assert log.events == [
            "connection",
            "connect",
            ("data", b"STARTTLS\r\n"),
            "error",
            ("close", True),
        ]
        error = log.error()
        assert isinstance(error, ssl.SSLError)
        assert code_of(error) == "ERR_SSL_WRONG_VERSION_NUMBER"


async def test_client_starttls_injection_in_the_go_ahead_packet_is_plaintext_before_secure(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """A fake server puts plaintext behind its '220 go ahead' in the same
    packet. The client read it before calling set_secure(): it is delivered
    as plaintext 'data' before 'secure'; after 'secure' only the real TLS data
    comes."""
    with trio.fail_after(NETWORK_LIMIT):
        server_ctx = server_context(certs, version)
        received_over_tls: list[bytes] = []

        async def fake_server(listener: trio.SocketListener) -> None:
            transport = await listener.accept()
            async with transport:
                await transport.send_all(b"220 ready\r\n")
                await receive_until(transport, bytearray(), b"STARTTLS\r\n")
                await transport.send_all(b"220 go ahead\r\nINJECTED\r\n")  # one packet
                tls = trio.SSLStream(transport, server_ctx, server_side=True)
                await tls.do_handshake()
                await tls.send_all(b"REAL\r\n")
                received_over_tls.append(await read_to_eof(tls))  # until close_notify
                await tls.aclose()

        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(fake_server, listener)
            client = net.create_connection(listener.socket.getsockname()[1])
            log = Log(client)
            plain, tls_data = bytearray(), bytearray()
            state = {"upgraded": False, "secure": False}

            def on_data(chunk: bytes) -> None:
                if state["secure"]:
                    tls_data.extend(chunk)
                    if tls_data == b"REAL\r\n":
                        client.end(b"QUIT\r\n")
                    return
                plain.extend(chunk)
                if plain == b"220 ready\r\n":
                    client.write(b"STARTTLS\r\n")
                elif b"220 go ahead\r\n" in plain and not state["upgraded"]:
                    state["upgraded"] = True
                    client.set_secure(client_context(certs, version), server_hostname="localhost")

            client.on("data", on_data)
            client.on("secure", lambda: state.update(secure=True))
            async with client:
                pass

        assert log.events == [
            "connect",
            ("data", b"220 ready\r\n220 go ahead\r\nINJECTED\r\n"),
            "secure",
            ("data", b"REAL\r\n"),
            "end",
            ("close", False),
        ]
        assert received_over_tls == [b"QUIT\r\n"]


async def test_client_starttls_plaintext_after_the_upgrade_fails_the_handshake(
    certs: Certs, version: ssl.TLSVersion
) -> None:
    """A fake server answers our ClientHello with plaintext: one 'error' with
    Node's code, 'close'(True); no 'secure', the plaintext is never 'data',
    and nothing the client queued for TLS leaves in plaintext."""
    with trio.fail_after(NETWORK_LIMIT):
        seen_by_server: list[bytes] = []

        async def fake_server(listener: trio.SocketListener) -> None:
            transport = await listener.accept()
            async with transport:
                buffer = bytearray()
                await transport.send_all(b"220 ready\r\n")
                await receive_until(transport, buffer, b"STARTTLS\r\n")
                await transport.send_all(b"220 go ahead\r\n")
                await receive_until(transport, buffer, b"\x16\x03")  # the ClientHello begins
                await transport.send_all(b"INJECTED\r\n")
                seen_by_server.append(bytes(buffer) + await read_until_closed(transport))

        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(fake_server, listener)
            client = net.create_connection(listener.socket.getsockname()[1])
            log = Log(client)
            plain = bytearray()

            def on_data(chunk: bytes) -> None:
                plain.extend(chunk)
                if plain == b"220 ready\r\n":
                    client.write(b"STARTTLS\r\n")
                elif plain == b"220 ready\r\n220 go ahead\r\n":
                    client.set_secure(client_context(certs, version), server_hostname="localhost")
                    client.write(b"SECRET")  # after set_secure(): only ever encrypted

            client.on("data", on_data)
            async with client:
                pass

        assert log.events == [
            "connect",
            ("data", b"220 ready\r\n220 go ahead\r\n"),
            "error",
            ("close", True),
        ]
        error = log.error()
        assert isinstance(error, ssl.SSLError)
        assert code_of(error) == "ERR_SSL_WRONG_VERSION_NUMBER"
        (sent,) = seen_by_server
        assert sent.startswith(b"STARTTLS\r\n\x16\x03")
        assert b"SECRET" not in sent


# -- 2. junk before a TLS handshake ----------------------------------------------------------

# case -> (bytes the fake client sends, then FIN?, expected error type, expected code)
JUNK_TO_SERVER: dict[str, tuple[bytes | None, bool, type[Exception], str]] = {
    "random_bytes": (
        random.Random(1).randbytes(512),
        False,
        ssl.SSLError,
        "ERR_SSL_WRONG_VERSION_NUMBER",
    ),
    "http_request": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        False,
        ssl.SSLError,
        "ERR_SSL_HTTP_REQUEST",
    ),
    "oversized_record": (
        b"\x16\x03\x01\xff\xff" + bytes(16),
        False,
        ssl.SSLError,
        "ERR_SSL_PACKET_LENGTH_TOO_LONG",
    ),
    "sslv2_client_hello": (
        sslv2_client_hello(0x0002),
        False,
        ssl.SSLError,
        "ERR_SSL_UNKNOWN_PROTOCOL",
    ),
    "sslv2_format_tls1_0_hello": (
        sslv2_client_hello(0x0301),
        False,
        ssl.SSLError,
        "ERR_SSL_UNSUPPORTED_PROTOCOL",
    ),
    # None: the first half of a real ClientHello, then FIN (still reading).
    "truncated_client_hello": (None, True, ConnectionResetError, "ECONNRESET"),
}


@pytest.mark.parametrize("case", list(JUNK_TO_SERVER))
async def test_junk_before_the_handshake_fails_that_stream_only(
    certs: Certs, version: ssl.TLSVersion, case: str
) -> None:
    """Junk sent to a TLS server: one 'error' (Node's code) and 'close'(True)
    on that server-side stream, no 'secure', no 'data'; the server goes on
    accepting and serves a good TLS client afterwards."""
    junk, fin, error_type, code = JUNK_TO_SERVER[case]
    if junk is None:
        hello = client_hello(client_context(certs, version))
        junk = hello[: len(hello) // 2]
    with trio.fail_after(NETWORK_LIMIT):
        logs: list[Log] = []
        async with net.create_server(
            echo_recorder(logs), ssl=server_context(certs, version)
        ) as server:
            await server.listen(0, "127.0.0.1")
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            async with raw:
                await raw.send_all(junk)
                if fin:
                    await raw.send_eof()
                # Without FIN the server must fail on the bytes alone.
                await read_until_closed(raw)
            good = await serve_good_client(port_of(server), certs, version)
            server.close()

        bad_log, good_log = logs
        assert bad_log.events == ["connection", "connect", "error", ("close", True)]
        error = bad_log.error()
        assert isinstance(error, error_type), repr(error)
        assert code_of(error) == code
        assert good_log.events == GOOD_SESSION
        assert good.events == [
            "connect",
            "secure",
            ("data", b"good client\n"),
            "end",
            ("close", False),
        ]


async def server_first_flight(
    transport: trio.SocketStream, received: bytearray, ctx: ssl.SSLContext
) -> bytes:
    """What a real TLS server answers to the ClientHello (read whole)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(bytes(received))
    while True:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        flight = outgoing.read()
        if flight:
            return flight
        chunk = await transport.receive_some()
        assert chunk, "the client closed before its ClientHello was complete"
        received += chunk
        incoming.write(chunk)


# case -> (read the ClientHello first?, what to send (None: half a real
# ServerHello record, then FIN), expected error type, expected code)
JUNK_TO_CLIENT: dict[str, tuple[bool, bytes | None, type[Exception], str]] = {
    "random_bytes": (
        True,
        random.Random(2).randbytes(512),
        ssl.SSLError,
        "ERR_SSL_WRONG_VERSION_NUMBER",
    ),
    "http_response": (
        True,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        ssl.SSLError,
        "ERR_SSL_WRONG_VERSION_NUMBER",
    ),
    "smtp_banner_at_once": (
        False,
        b"220 mail.example ESMTP\r\n",
        ssl.SSLError,
        "ERR_SSL_WRONG_VERSION_NUMBER",
    ),
    "oversized_record": (
        True,
        b"\x16\x03\x03\xff\xff" + bytes(16),
        ssl.SSLError,
        "ERR_SSL_PACKET_LENGTH_TOO_LONG",
    ),
    "truncated_server_hello": (True, None, ConnectionResetError, "ECONNRESET"),
}


@pytest.mark.parametrize("case", list(JUNK_TO_CLIENT))
async def test_junk_from_a_fake_server_fails_our_tls_client(
    certs: Certs, version: ssl.TLSVersion, case: str
) -> None:
    """A fake TLS server answers with junk (and keeps the connection open):
    our client gets one 'error' (Node's code), then 'close'(True); no
    'secure', no 'data', and the data it queued is never sent."""
    read_first, junk, error_type, code = JUNK_TO_CLIENT[case]
    with trio.fail_after(NETWORK_LIMIT):
        seen_by_server: list[bytes] = []

        async def fake_server(listener: trio.SocketListener) -> None:
            transport = await listener.accept()
            async with transport:
                buffer = bytearray()
                if read_first:
                    await receive_until(transport, buffer, b"\x16\x03")
                if junk is None:
                    ctx = server_context(certs, version)
                    flight = await server_first_flight(transport, buffer, ctx)
                    await transport.send_all(flight[:20])  # inside the first record
                    await transport.send_eof()
                else:
                    await transport.send_all(junk)
                seen_by_server.append(bytes(buffer) + await read_until_closed(transport))

        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(fake_server, listener)
            client = net.create_connection(
                listener.socket.getsockname()[1],
                ssl=client_context(certs, version),
                server_hostname="localhost",
            )
            log = Log(client)
            client.on("connect", lambda: client.write(b"SECRET"))  # queued for TLS
            async with client:
                pass

        assert log.events == ["connect", "error", ("close", True)]
        error = log.error()
        assert isinstance(error, error_type), repr(error)
        assert code_of(error) == code
        assert client.verify_peer() is False
        assert client.get_peer_certificate() is None
        (sent,) = seen_by_server
        assert sent.startswith(b"\x16\x03")  # a ClientHello, nothing else in the clear
        assert b"SECRET" not in sent


# -- 3. renegotiation and mid-stream plaintext from openssl s_server -------------------------


class OpenSSLProcess:
    """One running ``openssl`` process: its stdin and its output so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.out = bytearray()
        self.exited = trio.Event()
        self._changed = trio.Event()

    def text(self) -> str:
        return self.out.decode(errors="replace")

    async def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(data)

    async def wait_for(self, pattern: bytes) -> re.Match[bytes]:
        """Wait until *pattern* (a regex) matches stdout + stderr."""
        while (found := re.search(pattern, self.out)) is None:
            assert not self.exited.is_set(), f"openssl exited early:\n{self.text()}"
            await self._changed.wait()
        return found

    async def _pump(self, stream: trio.abc.ReceiveStream) -> None:
        async with stream:
            async for chunk in stream:
                self.out += chunk
                self._changed.set()
                self._changed = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        process = self.process
        assert process.stdout is not None and process.stderr is not None
        try:
            async with trio.open_nursery() as pumps:
                pumps.start_soon(self._pump, process.stdout)
                pumps.start_soon(self._pump, process.stderr)
                task_status.started()
                await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                assert process.stdin is not None
                await process.stdin.aclose()
            self.exited.set()
            self._changed.set()


async def start_openssl(nursery: trio.Nursery, *args: str) -> OpenSSLProcess:
    """``openssl *args*``, killed and reaped when *nursery* is cancelled."""
    assert OPENSSL is not None
    process = await trio.lowlevel.open_process(
        [OPENSSL, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peer = OpenSSLProcess(process)
    await nursery.start(peer.run)
    return peer


@pytest.fixture
def pem_files(certs: Certs, tmp_path: Path) -> dict[str, str]:
    files = {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}
    certs.server.private_key_pem.write_to_path(files["key"])
    for i, pem in enumerate(certs.server.cert_chain_pems):
        pem.write_to_path(files["cert"], append=i > 0)
    return files


# s_server's stdin commands: "r" renegotiates (sends HelloRequest); "P" writes
# clear text straight onto the TCP connection, in the middle of the TLS stream.
S_SERVER_COMMANDS = {
    "renegotiate": (b"r\n", "ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE"),
    "plaintext_mid_stream": (b"P\n", "ERR_SSL_WRONG_VERSION_NUMBER"),
}


@pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
@pytest.mark.parametrize("command", list(S_SERVER_COMMANDS))
async def test_server_initiated_renegotiation_and_mid_stream_plaintext_are_refused(
    certs: Certs, pem_files: dict[str, str], command: str
) -> None:
    """A TLS 1.2 server (openssl s_server) asks our client to renegotiate, or
    writes plaintext into the TLS stream. Our client never starts a second
    handshake (it answers the HelloRequest with a no_renegotiation alert, so
    s_server gives up with a fatal alert); both ways our side gets one
    'error' with Node's code and 'close'(True), and every byte exchanged
    before arrived intact on both sides."""
    typed, code = S_SERVER_COMMANDS[command]
    before = b"server data before the attack: " + bytes(range(32, 127)) + b"\n"
    with trio.fail_after(NETWORK_LIMIT):
        async with trio.open_nursery() as nursery:
            peer = await start_openssl(
                nursery,
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-cert",
                pem_files["cert"],
                "-key",
                pem_files["key"],
                "-naccept",
                "1",
                "-tls1_2",
                "-msg",
            )
            found = await peer.wait_for(rb"ACCEPT 127\.0\.0\.1:(\d+)\n")
            client = net.create_connection(
                int(found.group(1)),
                ssl=client_context(certs, ssl.TLSVersion.TLSv1_2),
                server_hostname="localhost",
            )
            log = Log(client)
            got_before = trio.Event()
            received = bytearray()

            def on_data(chunk: bytes) -> None:
                received.extend(chunk)
                if received == before:
                    got_before.set()

            client.on("secure", lambda: client.write(b"client data before the attack\n"))
            client.on("data", on_data)
            async with client:
                await peer.wait_for(rb"client data before the attack\n")
                await peer.send(before)  # typed lines go to the client over TLS
                await got_before.wait()
                await peer.send(typed)
            await peer.exited.wait()  # -naccept 1: it exits after our connection

    assert log.events == ["connect", "secure", ("data", before), "error", ("close", True)]
    error = log.error()
    assert isinstance(error, ssl.SSLError)
    assert code_of(error) == code
    text = peer.text()
    # One handshake only: s_server saw a single ClientHello from us.
    assert len(re.findall(r"^<<< .*ClientHello$", text, re.MULTILINE)) == 1, text
    if command == "renegotiate":
        assert ">>> TLS 1.2, Handshake [length 0004], HelloRequest" in text
        assert "<<< TLS 1.2, Alert [length 0002], warning no_renegotiation" in text


# -- 4. client certificates our server must reject ----------------------------------------

# case -> (client certificate, code our server reports, alert code our client gets)
BAD_CLIENT_CERTS = {
    "wrong_ca": (
        "wrong_ca_client",
        "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA",
    ),
    "expired": ("expired_client", "CERT_HAS_EXPIRED", "ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED"),
}


@pytest.mark.parametrize("case", list(BAD_CLIENT_CERTS))
async def test_server_rejects_a_bad_client_certificate_with_its_code(
    certs: Certs, version: ssl.TLSVersion, case: str
) -> None:
    """A server whose context holds CAs requests a client certificate; one from
    the wrong CA, or an expired one, fails that stream's handshake with
    ``ssl.SSLCertVerificationError`` and OpenSSL's (Node's) code, then
    'close'(True); nothing the client sent is delivered. The client gets the
    server's alert; the server goes on serving a good client."""
    cert_name, server_code, client_code = BAD_CLIENT_CERTS[case]
    with trio.fail_after(NETWORK_LIMIT):
        logs: list[Log] = []
        server_ctx = server_context(certs, version, client_ca=certs.client_ca)
        async with net.create_server(echo_recorder(logs), ssl=server_ctx) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(
                port_of(server),
                ssl=client_context(certs, version, cert=getattr(certs, cert_name)),
                server_hostname="localhost",
            )
            log = Log(client)
            client.on("secure", lambda: client.write(b"let me in"))
            async with client:
                pass
            good = net.create_connection(
                port_of(server),
                ssl=client_context(certs, version, cert=certs.client),
                server_hostname="localhost",
            )
            good_log = Log(good)
            good.on("secure", lambda: good.end(b"good client\n"))
            async with good:
                pass
            server.close()

        bad_server_log, good_server_log = logs
        assert bad_server_log.events == ["connection", "connect", "error", ("close", True)]
        error = bad_server_log.error()
        assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
        assert code_of(error) == server_code
        assert good_server_log.events == GOOD_SESSION
        assert good_log.events == [
            "connect",
            "secure",
            ("data", b"good client\n"),
            "end",
            ("close", False),
        ]
        # TLS 1.2: the server checks the certificate inside the client's
        # handshake. TLS 1.3: the client's handshake is complete ('secure')
        # before the server has looked at it; the alert comes after.
        prefix = ["connect"] if version is ssl.TLSVersion.TLSv1_2 else ["connect", "secure"]
        assert log.events == [*prefix, "error", ("close", True)]
        client_error = log.error()
        if isinstance(client_error, ConnectionResetError):
            # TLS 1.3 only: our 'let me in' may reach the closed socket, whose
            # reset can overtake the alert (a TCP race, not a choice).
            assert version is ssl.TLSVersion.TLSv1_3
            assert code_of(client_error) == "ECONNRESET"
        else:
            assert isinstance(client_error, ssl.SSLError), repr(client_error)
            assert code_of(client_error) == client_code


# -- 5. a 1 GiB write to a peer that never reads ------------------------------------------------


#: RSS noise allowed on top of what the test itself allocates.
RSS_MARGIN = 32 * MiB
#: What the kernel's socket buffers (both ends, loopback) can hold at most.
KERNEL_BUFFERS = 64 * MiB


@pytest.mark.slow
@pytest.mark.parametrize(
    "queue", ["empty", "full"], ids=["into_an_idle_stream", "behind_backpressure"]
)
async def test_a_1_gib_write_to_a_peer_that_never_reads_is_held_once_and_freed_by_destroy(
    record: Any, queue: str
) -> None:
    """write() returns False once the queued bytes reach high_water_mark, long
    before 1 GiB; the 1 GiB bytes object is queued, not copied (RSS grows by
    nothing beyond what the test allocated); write_queue_size reports it;
    destroy() drops it ('close' follows, the object is released, RSS back)."""
    with trio.fail_after(NETWORK_LIMIT):
        peers: list[trio.SocketStream] = []
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listener:
            client = net.create_connection(listener.socket.getsockname()[1])
            rec = record(client)
            connected = trio.Event()
            client.on("connect", connected.set)
            try:
                async with client:
                    peers.append(await listener.accept())  # never read
                    await connected.wait()
                    filled = 0
                    if queue == "full":
                        piece = b"." * (4 * KiB)  # one object, reused
                        while client.write(piece):
                            filled += len(piece)
                            assert filled < KERNEL_BUFFERS, "write() never said False"
                        filled += len(piece)
                        mark = client.high_water_mark
                        assert mark <= client.write_queue_size < mark + len(piece)
                    queued_before = client.write_queue_size
                    gc.collect()
                    baseline = rss()
                    big = b"\xab" * GiB  # touches every page: RSS + 1 GiB
                    with_big = rss()
                    refs = sys.getrefcount(big)
                    assert client.write(big) is False
                    assert client.write(b"!") is False
                    at_call = client.write_queue_size
                    if queue == "full":  # queued behind the others, as it is
                        assert at_call == queued_before + GiB + 1
                    else:  # the kernel took what fits at once, the rest is queued
                        assert GiB + 1 - KERNEL_BUFFERS < at_call <= GiB + 1
                    await wait_all_tasks_blocked()  # the writer runs, then waits
                    queued = client.write_queue_size
                    grown = rss() - with_big
                    held = sys.getrefcount(big) - refs
                    print(
                        f"\n[1 GiB write, {queue} queue] write() said False after {filled} B "
                        f"(queue {queued_before} B); object {(with_big - baseline) / MiB:.0f} MiB; "
                        f"RSS growth after write(): {grown / MiB:.1f} MiB; "
                        f"write_queue_size {at_call} at the call, {queued} later; "
                        f"extra refs {held}"
                    )
                    # The peer never reads: only the kernel's buffers take any of it.
                    assert GiB + 1 - KERNEL_BUFFERS < queued <= at_call
                    assert client.bytes_written == filled + GiB + 1
                    assert held >= 1  # the stream holds the object itself (or a view of it)
                    assert grown < RSS_MARGIN  # ... and no second copy of it
                    client.destroy()
                    assert client.write_queue_size == 0
            finally:
                for peer in peers:
                    await peer.aclose()
        gc.collect()
        assert sys.getrefcount(big) == refs  # released by destroy()
        del big
        assert rss() - baseline < RSS_MARGIN
        assert rec.events == ["connect", ("close", False)]


# -- 6. bad arguments on a live loopback connection -----------------------------------------


def _released_view() -> memoryview:
    view = memoryview(b"gone")
    view.release()
    return view


# id -> (the bad call, expected exception type)
BAD_CALLS: dict[str, tuple[Callable[[net.Stream], Any], type[Exception]]] = {
    "write-int": (lambda s: s.write(42), TypeError),
    "write-None": (lambda s: s.write(None), TypeError),
    "write-list": (lambda s: s.write([b"x"]), TypeError),
    "write-dict": (lambda s: s.write({"x": 1}), TypeError),
    "write-float": (lambda s: s.write(1.5), TypeError),
    "write-bool": (lambda s: s.write(True), TypeError),
    "write-tuple": (lambda s: s.write((b"x",)), TypeError),
    "write-array": (lambda s: s.write(array.array("B", b"x")), TypeError),
    "write-released-memoryview": (lambda s: s.write(_released_view()), ValueError),
    "write-str-bogus-encoding": (lambda s: s.write("x", "bogus"), ValueError),
    "write-str-encoding-int": (lambda s: s.write("x", 5), TypeError),
    "write-bytes-bogus-encoding": (lambda s: s.write(b"x", "bogus"), ValueError),
    "write-bytes-encoding-int": (lambda s: s.write(b"x", 5), TypeError),
    "write-unencodable-ascii": (lambda s: s.write("caf\u00e9", "ascii"), ValueError),
    "write-bad-hex": (lambda s: s.write("zz", "hex"), ValueError),
    "end-int": (lambda s: s.end(42), TypeError),
    "end-str-bogus-encoding": (lambda s: s.end("x", "bogus"), ValueError),
    "set_encoding-bogus": (lambda s: s.set_encoding("bogus"), ValueError),
    "set_encoding-int": (lambda s: s.set_encoding(5), TypeError),
    "set_timeout-negative": (lambda s: s.set_timeout(-1), ValueError),
    "set_timeout-nan": (lambda s: s.set_timeout(math.nan), ValueError),
    "set_timeout-inf": (lambda s: s.set_timeout(math.inf), ValueError),
    "set_timeout-minus-inf": (lambda s: s.set_timeout(-math.inf), ValueError),
    "set_timeout-bool": (lambda s: s.set_timeout(True), TypeError),
    "set_timeout-str": (lambda s: s.set_timeout("10"), TypeError),
    "set_timeout-None": (lambda s: s.set_timeout(None), TypeError),
    "set_timeout-bad-callback": (lambda s: s.set_timeout(10, "cb"), TypeError),
    "set_no_delay-str": (lambda s: s.set_no_delay("yes"), TypeError),
    "set_keep_alive-negative": (lambda s: s.set_keep_alive(True, -1), ValueError),
    "destroy-non-exception": (lambda s: s.destroy("boom"), TypeError),
    "set_secure-not-a-context": (lambda s: s.set_secure("context"), TypeError),
    "connect-while-open": (lambda s: s.connect(9), StreamStateError),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_bad_call_on_a_live_tcp_stream_raises_and_changes_nothing(
    record: Any, case: str
) -> None:
    """On a connected loopback stream each bad call raises its documented
    exception at the call and changes nothing: no event, same state and
    counters, and the peer receives exactly the valid bytes, byte for byte."""
    call, error_type = BAD_CALLS[case]
    with trio.fail_after(NETWORK_LIMIT):
        received: list[bytes] = []

        async def peer(listener: trio.SocketListener) -> None:
            transport = await listener.accept()
            async with transport:
                received.append(await read_to_eof(transport))

        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(peer, listener)
            client = net.create_connection(listener.socket.getsockname()[1])
            rec = record(client)
            connected = trio.Event()
            client.on("connect", connected.set)
            async with client:
                await connected.wait()
                assert client.write(b"before|") is True
                snapshot = (
                    client.ready_state,
                    client.bytes_written,
                    client.write_queue_size,
                    client.encoding,
                    client.timeout,
                    client.is_paused,
                    client.listener_count("timeout"),
                )
                with pytest.raises(error_type):
                    call(client)
                await wait_all_tasks_blocked()
                assert rec.events == ["connect"]
                assert (
                    client.ready_state,
                    client.bytes_written,
                    client.write_queue_size,
                    client.encoding,
                    client.timeout,
                    client.is_paused,
                    client.listener_count("timeout"),
                ) == snapshot
                client.end(b"after")

        assert received == [b"before|after"]
        assert rec.events == ["connect", "end", ("close", False)]
        assert client.bytes_written == len(b"before|after")
