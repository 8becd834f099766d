"""The production TLS options against real peers: ALPN, session resumption
and the handshake timeout (SPEC "TLS in production").

* ALPN with Node's ``tls`` both ways (``node/tls_peer.js``), with ``openssl
  s_client -alpn`` / ``s_server -alpn``, and with ``curl --http2`` /
  ``--http1.1`` (curl picks HTTP/2 only when ALPN says ``h2``).
* Session resumption against ``openssl s_server -www``, TLS 1.3 and 1.2: the
  page s_server sends back says ``New, ...`` or ``Reused, ...`` for the
  connection it was served on, so the server confirms what
  ``is_session_reused()`` reports.
* ``handshake_timeout``: a raw socket that sends the first bytes of a real
  ClientHello and stops cannot hold a server connection; nothing leaks.

Every child process runs on 127.0.0.1 under the test's ``trio.fail_after``
deadline; it is started by :func:`start_child` in the test's nursery and
killed (by its own handle) and reaped if the test leaves early. Certificates
come from ``trustme``, written to temporary files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trustme

import trio_netstream as net

NODE = shutil.which("node")
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
TLS_PEER_JS = Path(__file__).resolve().parent / "node" / "tls_peer.js"

NEEDS_NODE = pytest.mark.skipif(NODE is None, reason="Node.js (the node binary) is not installed")
NEEDS_OPENSSL = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
NEEDS_CURL = pytest.mark.skipif(CURL is None, reason="curl is not installed")

TLS_EVENTS = ("connect", "secure", "data", "end", "error", "close")
LINE = b"hello over alpn\n"


# -- certificates and contexts ------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A trustme CA and a certificate for ``localhost`` and 127.0.0.1, as PEM files."""
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    files = SimpleNamespace(
        ca=str(directory / "ca.pem"),
        cert=str(directory / "cert.pem"),
        key=str(directory / "key.pem"),
    )
    ca.cert_pem.write_to_path(files.ca)
    leaf.private_key_pem.write_to_path(files.key)
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(files.cert, append=i > 0)
    return files


def server_context(certs: SimpleNamespace) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    return context


def client_context(certs: SimpleNamespace) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs.ca)


# -- child processes ------------------------------------------------------------------


class Child:
    """One running program: its stdin, and its output so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.out = bytearray()
        self.err = bytearray()
        self.exited = trio.Event()
        self._changed = trio.Event()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def text(self) -> str:
        return self.out.decode(errors="replace")

    def errors(self) -> str:
        return self.err.decode(errors="replace")

    async def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(data)

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def wait_for(self, needle: bytes, *, stderr: bool = False) -> None:
        """Wait until *needle* appears in stdout (or stderr)."""
        buffer = self.err if stderr else self.out
        while needle not in buffer:
            if self.exited.is_set():
                raise AssertionError(
                    f"{self.process.args!r} exited ({self.returncode}) before printing"
                    f" {needle!r}\nstdout: {self.text()}\nstderr: {self.errors()}"
                )
            await self._changed.wait()

    async def json_line(self, key: str) -> dict[str, Any]:
        """The first JSON line of stdout that has *key* (Node's reports)."""
        while True:
            for line in self.text().splitlines():
                if line.startswith("{"):
                    message: dict[str, Any] = json.loads(line)
                    assert "watchdog" not in message, message
                    if key in message:
                        return message
            if self.exited.is_set():
                raise AssertionError(
                    f"node exited ({self.returncode}) without a {key!r} line\n"
                    f"stdout: {self.text()}\nstderr: {self.errors()}"
                )
            await self._changed.wait()

    async def wait(self) -> int:
        """Wait until the process has exited and all its output was read."""
        await self.exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def _pump(self, stream: trio.abc.ReceiveStream, buffer: bytearray) -> None:
        async with stream:
            async for chunk in stream:
                buffer += chunk
                self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        process = self.process
        assert process.stdout is not None and process.stderr is not None
        try:
            async with trio.open_nursery() as pumps:
                pumps.start_soon(self._pump, process.stdout, self.out)
                pumps.start_soon(self._pump, process.stderr, self.err)
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
            self._wake()


async def start_child(nursery: trio.Nursery, *argv: str | None) -> Child:
    """Start *argv* with piped stdio; it is killed when *nursery* is cancelled."""
    assert all(arg is not None for arg in argv)
    process = await trio.lowlevel.open_process(
        [str(arg) for arg in argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child = Child(process)
    await nursery.start(child.run)
    return child


async def s_server(nursery: trio.Nursery, certs: SimpleNamespace, *more: str) -> tuple[Child, int]:
    """``openssl s_server`` on 127.0.0.1, on a port the kernel picks; and that port."""
    child = await start_child(
        nursery,
        OPENSSL,
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-cert",
        certs.cert,
        "-key",
        certs.key,
        *more,
    )
    await child.wait_for(b"ACCEPT 127.0.0.1:")
    await child.wait_for(b"\n")
    found = re.search(r"ACCEPT 127\.0\.0\.1:(\d+)", child.text())
    assert found is not None, child.text()
    return child, int(found.group(1))


# -- our TLS server ----------------------------------------------------------------


class Accepted:
    """What a TLS server saw: each stream's events and its negotiated values."""

    def __init__(self, record: Any) -> None:
        self.record = record
        self.recs: list[Any] = []
        self.streams: list[net.Stream] = []
        self.secured: list[dict[str, Any]] = []
        self.client_errors: list[tuple[BaseException, net.Stream]] = []
        self.closed: list[trio.Event] = []

    def watch(self, stream: net.Stream) -> None:
        self.recs.append(self.record(stream, events=TLS_EVENTS))
        self.streams.append(stream)
        closed = trio.Event()
        self.closed.append(closed)
        stream.on("close", lambda had_error: closed.set())

    def on_secure_connection(self, stream: net.Stream) -> None:
        self.secured.append(
            {
                "alpn_protocol": stream.alpn_protocol,
                "protocol": stream.get_protocol(),
                "servername": stream.servername,
            }
        )

    async def all_closed(self) -> None:
        for closed in self.closed:
            await closed.wait()


def tls_server(
    accepted: Accepted, serve: Any, context: ssl.SSLContext, **options: Any
) -> net.Server:
    """A ``create_server(ssl=...)`` server whose streams *accepted* records;
    *serve* (a connection listener) answers; every stream ends when its peer does."""

    def on_connection(stream: net.Stream) -> None:
        accepted.watch(stream)
        serve(stream)
        stream.on("end", stream.end)

    server = net.create_server(on_connection, ssl=context, **options)
    server.on("secureConnection", accepted.on_secure_connection)
    server.on("tlsClientError", lambda exc, stream: accepted.client_errors.append((exc, stream)))
    return server


def echo(stream: net.Stream) -> None:
    stream.on("data", stream.write)


async def listening_port(server: net.Server) -> int:
    await server.listen(0, "127.0.0.1")
    address = server.address()
    assert isinstance(address, tuple)
    return address[1]


# -- 1. ALPN with Node's tls module, both ways ------------------------------------------


@NEEDS_NODE
async def test_alpn_node_client_against_our_server(certs: SimpleNamespace, record: Any) -> None:
    accepted = Accepted(record)
    with trio.fail_after(15):
        async with (
            trio.open_nursery() as nursery,
            tls_server(
                accepted, echo, server_context(certs), alpn_protocols=["h2", "http/1.1"]
            ) as server,
        ):
            port = await listening_port(server)
            node = await start_child(
                nursery, NODE, TLS_PEER_JS, "client", str(port), certs.ca, "http/1.1,h2"
            )
            secure = await node.json_line("secureConnect")
            report = await node.json_line("events")
            assert await node.wait() == 0, node.errors()
            await accepted.all_closed()
            server.close()

    print("node client printed:", secure)
    # The server's preference wins (Node's own servers choose the same way).
    assert secure["alpnProtocol"] == "h2"
    assert secure["authorized"] is True
    assert report["events"] == ["secureConnect", "data", "end", "close(false)"], report
    assert report["received"] == LINE.decode()
    assert accepted.secured == [
        {"alpn_protocol": "h2", "protocol": secure["protocol"], "servername": "localhost"}
    ]
    [rec] = accepted.recs
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert accepted.client_errors == []


@NEEDS_NODE
async def test_alpn_our_client_against_node_server(certs: SimpleNamespace, record: Any) -> None:
    seen: dict[str, Any] = {}
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            node = await start_child(
                nursery, NODE, TLS_PEER_JS, "server", certs.cert, certs.key, "h2,http/1.1"
            )
            port = (await node.json_line("listening"))["listening"]
            stream = net.create_connection(
                port,
                "127.0.0.1",
                ssl=client_context(certs),
                server_hostname="localhost",
                alpn_protocols=["http/1.1", "h2"],
            )
            rec = record(stream, events=TLS_EVENTS)

            @stream.on("secure")
            def on_secure() -> None:
                seen["alpn_protocol"] = stream.alpn_protocol
                seen["protocol"] = stream.get_protocol()
                seen["servername"] = stream.servername
                stream.write(LINE)

            @stream.on("data")
            def on_data(chunk: bytes) -> None:
                if rec.data == LINE:
                    stream.end()

            async with stream:
                pass
            node_secure = await node.json_line("secureConnection")
            report = await node.json_line("events")
            assert await node.wait() == 0, node.errors()

    print("node server printed:", node_secure)
    assert seen == {
        "alpn_protocol": "h2",
        "protocol": node_secure["protocol"],
        "servername": "localhost",
    }
    assert node_secure["alpnProtocol"] == "h2"
    assert node_secure["servername"] == "localhost"
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert report["events"] == ["secureConnection", "data", "end", "close(false)"], report


# -- 2. ALPN with openssl s_client and s_server --------------------------------------


@NEEDS_OPENSSL
@pytest.mark.parametrize(
    ("offered", "printed", "ours"),
    [
        pytest.param("h2,http/1.1", "ALPN protocol: h2", "h2", id="h2"),
        pytest.param("http/1.1", "ALPN protocol: http/1.1", "http/1.1", id="http1.1"),
        pytest.param("spdy/3", "No ALPN negotiated", None, id="no-overlap"),
    ],
)
async def test_alpn_s_client_against_our_server(
    certs: SimpleNamespace, record: Any, offered: str, printed: str, ours: str | None
) -> None:
    accepted = Accepted(record)
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            tls_server(
                accepted, echo, server_context(certs), alpn_protocols=["h2", "http/1.1"]
            ) as server,
        ):
            port = await listening_port(server)
            peer = await start_child(
                nursery,
                OPENSSL,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                certs.ca,
                "-verify_return_error",
                "-servername",
                "localhost",
                "-alpn",
                offered,
            )
            await peer.wait_for(b"Verify return code:")
            await peer.send(LINE)
            await peer.wait_for(b"\n" + LINE)  # the echo: the connection works
            await peer.close_stdin()  # s_client closes the connection and exits
            assert await peer.wait() == 0, peer.errors()
            await accepted.all_closed()
            server.close()

    alpn_lines = [line for line in peer.text().splitlines() if "ALPN" in line]
    print("s_client printed:", alpn_lines)
    assert alpn_lines == [printed]
    assert [s["alpn_protocol"] for s in accepted.secured] == [ours]
    [rec] = accepted.recs
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]


@NEEDS_OPENSSL
async def test_alpn_our_client_against_s_server(certs: SimpleNamespace, record: Any) -> None:
    seen: dict[str, Any] = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer, port = await s_server(nursery, certs, "-alpn", "h2", "-rev", "-naccept", "1")
            stream = net.create_connection(
                port,
                "127.0.0.1",
                ssl=client_context(certs),
                server_hostname="localhost",
                alpn_protocols=["h2"],
            )
            rec = record(stream, events=TLS_EVENTS)

            @stream.on("secure")
            def on_secure() -> None:
                seen["alpn_protocol"] = stream.alpn_protocol
                stream.write(b"hello\n")

            @stream.on("data")
            def on_data(chunk: bytes) -> None:
                if rec.data == b"olleh\n":
                    stream.end()

            async with stream:
                pass
            assert await peer.wait() == 0, peer.errors()  # -naccept 1: it exits

    alpn_lines = [line for line in peer.text().splitlines() if "ALPN" in line]
    print("s_server printed:", alpn_lines)
    assert seen == {"alpn_protocol": "h2"}
    assert alpn_lines == [
        "ALPN protocols advertised by the client: h2",
        "ALPN protocols selected: h2",
    ]
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert rec.data == b"olleh\n"


# -- 2b. the context's own ALPN list (set_alpn_protocols) is left as it was ------------
#
# The library sets its alpn_protocols on the caller's (shared) SSLContext only
# around wrap_bio (client) or each handshake step (server), and promises to
# leave the context as it was (_tls.Choices). A context that has its own
# list, set with SSLContext.set_alpn_protocols(), must still offer (choose)
# it afterwards, when the option is not given.

CONTEXT_ALPN_BUG = (
    "library bug: after a connection made with alpn_protocols=, the SSLContext's own"
    " ALPN list (set_alpn_protocols) is wiped: _tls.make_transport (client) and"
    " _tls.Choices.applied (server) restore it with set_alpn_protocols([]), so later"
    " connections with that context and no alpn_protocols offer (choose) no ALPN"
)


async def client_alpn(port: int, context: ssl.SSLContext, **options: Any) -> str | None:
    """Connect to ``s_server -rev``, say a line, end; the ALPN protocol agreed."""
    seen: dict[str, Any] = {}
    stream = net.create_connection(
        port, "127.0.0.1", ssl=context, server_hostname="localhost", **options
    )

    @stream.on("secure")
    def on_secure() -> None:
        seen["alpn_protocol"] = stream.alpn_protocol
        stream.end(b"x\n")

    async with stream:
        pass
    return seen["alpn_protocol"]


@NEEDS_OPENSSL
@pytest.mark.xfail(strict=True, reason=CONTEXT_ALPN_BUG)
async def test_client_context_keeps_its_own_alpn_list(certs: SimpleNamespace) -> None:
    context = client_context(certs)
    context.set_alpn_protocols(["h2"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer, port = await s_server(
                nursery, certs, "-alpn", "h2,http/1.1", "-rev", "-naccept", "3"
            )
            got = [
                await client_alpn(port, context),  # the context's own list
                await client_alpn(port, context, alpn_protocols=["http/1.1"]),
                await client_alpn(port, context),  # the context's own list, again
            ]
            assert await peer.wait() == 0, peer.errors()

    print("s_server printed:", [line for line in peer.text().splitlines() if "ALPN" in line])
    assert got == ["h2", "http/1.1", "h2"]


async def s_client_alpn(nursery: trio.Nursery, port: int, certs: SimpleNamespace) -> str:
    """``openssl s_client -alpn h2,http/1.1``: its ALPN line."""
    peer = await start_child(
        nursery,
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        certs.ca,
        "-servername",
        "localhost",
        "-alpn",
        "h2,http/1.1",
    )
    await peer.wait_for(b"Verify return code:")
    await peer.close_stdin()
    assert await peer.wait() == 0, peer.errors()
    [line] = [line for line in peer.text().splitlines() if "ALPN" in line]
    return line


@NEEDS_OPENSSL
@pytest.mark.xfail(strict=True, reason=CONTEXT_ALPN_BUG)
async def test_server_context_keeps_its_own_alpn_list(certs: SimpleNamespace, record: Any) -> None:
    context = server_context(certs)
    context.set_alpn_protocols(["http/1.1"])  # the context's own choice
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            tls_server(Accepted(record), echo, context) as plain,
            tls_server(Accepted(record), echo, context, alpn_protocols=["h2"]) as with_h2,
        ):
            plain_port = await listening_port(plain)
            h2_port = await listening_port(with_h2)
            lines = [
                await s_client_alpn(nursery, plain_port, certs),
                await s_client_alpn(nursery, h2_port, certs),
                await s_client_alpn(nursery, plain_port, certs),
            ]
            plain.close()
            with_h2.close()

    print("s_client printed:", lines)
    assert lines == ["ALPN protocol: http/1.1", "ALPN protocol: h2", "ALPN protocol: http/1.1"]


# -- 3. curl: --http2 takes h2 only if ALPN agreed on it ---------------------------------

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The smallest complete HTTP/2 answer: the server's SETTINGS (empty), the
# ACK of the client's SETTINGS (which curl sends right behind its preface),
# and on stream 1 a HEADERS frame (END_STREAM | END_HEADERS) holding only
# ":status: 200" (HPACK static table index 8, 0x88). With it, curl finishes
# its request normally (exit 0), so the test needs no tolerance for a
# half-answered request.
HTTP2_RESPONSE = (
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # SETTINGS, no parameters
    b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"  # SETTINGS ACK
    b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x88"  # HEADERS :status 200, END_STREAM
)
HTTP1_BODY = b"hello over http/1.1\n"
HTTP1_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    b"Content-Length: " + str(len(HTTP1_BODY)).encode() + b"\r\nConnection: close\r\n\r\n"
) + HTTP1_BODY


def http_by_alpn(stream: net.Stream) -> None:
    """Answers HTTP/2 or HTTP/1.1, whichever ALPN chose, once the request came."""
    request = bytearray()
    answered = False

    def on_data(chunk: bytes) -> None:
        nonlocal answered
        request.extend(chunk)
        if answered:
            return
        if stream.alpn_protocol == "h2":
            # The client preface, then at least a frame header (its SETTINGS).
            if request.startswith(HTTP2_PREFACE) and len(request) >= len(HTTP2_PREFACE) + 9:
                answered = True
                stream.write(HTTP2_RESPONSE)
        elif b"\r\n\r\n" in request:
            answered = True
            stream.end(HTTP1_RESPONSE)

    stream.on("data", on_data)


@NEEDS_CURL
@pytest.mark.parametrize(
    ("flag", "alpn", "status_line"),
    [
        pytest.param("--http2", "h2", "< HTTP/2 200", id="http2"),
        pytest.param("--http1.1", "http/1.1", "< HTTP/1.1 200 OK", id="http1.1"),
    ],
)
async def test_alpn_curl_against_our_server(
    certs: SimpleNamespace, record: Any, flag: str, alpn: str, status_line: str
) -> None:
    accepted = Accepted(record)
    with trio.fail_after(15):
        async with (
            trio.open_nursery() as nursery,
            tls_server(
                accepted, http_by_alpn, server_context(certs), alpn_protocols=["h2", "http/1.1"]
            ) as server,
        ):
            port = await listening_port(server)
            curl = await start_child(
                nursery,
                CURL,
                "-sS",
                "-v",
                flag,
                "--max-time",
                "5",
                "--cacert",
                certs.ca,
                "--resolve",
                f"localhost:{port}:127.0.0.1",
                f"https://localhost:{port}/",
            )
            returncode = await curl.wait()
            await accepted.all_closed()
            server.close()

    verbose = curl.errors()
    alpn_lines = [line for line in verbose.splitlines() if "ALPN" in line]
    print("curl printed:", alpn_lines)
    assert returncode == 0, verbose
    # curl 7.88 says "ALPN: server accepted h2"; older ones
    # "ALPN, server accepted to use h2".
    assert any(
        re.search(rf"ALPN[:,] server accepted (to use )?{re.escape(alpn)}$", line)
        for line in alpn_lines
    ), verbose
    assert status_line in [line.rstrip() for line in verbose.splitlines()], verbose
    assert [s["alpn_protocol"] for s in accepted.secured] == [alpn]
    assert accepted.secured[0]["servername"] == "localhost"
    [rec] = accepted.recs
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    if alpn == "h2":
        assert rec.data.startswith(HTTP2_PREFACE)
    else:
        assert rec.data.startswith(b"GET / HTTP/1.1\r\n")
        assert curl.out == HTTP1_BODY


# -- 4. session resumption against openssl s_server -www --------------------------------

VERSIONS = [pytest.param("-tls1_3", id="TLSv1.3"), pytest.param("-tls1_2", id="TLSv1.2")]


async def www_page(
    port: int, context: ssl.SSLContext, record: Any, session: ssl.SSLSession | None
) -> tuple[str, dict[str, Any]]:
    """GET / from ``s_server -www`` with *context* (resuming *session*);
    the page, and what the stream said about its session."""
    seen: dict[str, Any] = {}
    stream = net.create_connection(
        port, "127.0.0.1", ssl=context, server_hostname="localhost", session=session
    )
    rec = record(stream, events=TLS_EVENTS)

    @stream.on("secure")
    def on_secure() -> None:
        seen["reused_at_secure"] = stream.is_session_reused()
        seen["protocol"] = stream.get_protocol()
        stream.write(b"GET / HTTP/1.0\r\n\r\n")

    @stream.on("end")
    def on_end() -> None:
        # The whole page came (s_server ends after it): a TLS 1.3 server's
        # tickets came before it, so this session can be resumed.
        seen["session"] = stream.get_session()
        seen["reused"] = stream.is_session_reused()
        stream.end()  # close_notify back (allow_half_open is the default)

    async with stream:
        pass
    seen["events"] = rec.events
    return rec.data.decode(errors="replace"), seen


def session_line(page: str) -> str:
    found = re.search(r"^(New|Reused), TLSv1\.[23], Cipher is \S+$", page, re.MULTILINE)
    assert found is not None, page
    return found.group(0)


@NEEDS_OPENSSL
@pytest.mark.parametrize("version", VERSIONS)
async def test_session_resumption_against_s_server(
    certs: SimpleNamespace, record: Any, version: str
) -> None:
    expected = "TLSv1.3" if version == "-tls1_3" else "TLSv1.2"
    context = client_context(certs)  # one context for both: a session is the context's
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer, port = await s_server(nursery, certs, "-www", "-naccept", "2", version)
            first_page, first = await www_page(port, context, record, None)
            assert isinstance(first["session"], ssl.SSLSession)
            second_page, second = await www_page(port, context, record, first["session"])
            assert await peer.wait() == 0, peer.errors()  # -naccept 2: it exits

    lines = [session_line(first_page), session_line(second_page)]
    print("s_server -www pages:", lines)
    assert lines[0].startswith(f"New, {expected}, Cipher is ")
    assert lines[1].startswith(f"Reused, {expected}, Cipher is ")
    assert first["protocol"] == second["protocol"] == expected
    assert (first["reused_at_secure"], first["reused"]) == (False, False)
    assert (second["reused_at_secure"], second["reused"]) == (True, True)
    for seen in (first, second):
        assert seen["events"] == ["connect", "secure", "data", "end", ("close", False)]
    if expected == "TLSv1.2":
        # Same session: same ID (TLS 1.3 tickets give each connection a new one).
        assert second["session"].id == first["session"].id


# -- 5. handshake_timeout against a peer that stops halfway through its ClientHello ------

HANDSHAKE_TIMEOUT_MS = 300
STALLED_PEERS = 20
AT_ONCE = 5


def client_hello_start(size: int = 40) -> bytes:
    """The first *size* bytes of a real ClientHello (OpenSSL's, via MemoryBIO)."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(
        ssl.MemoryBIO(), outgoing, server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and hello[5] == 0x01  # a handshake record, a ClientHello
    assert len(hello) > size
    return hello[:size]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def stalled_peer(port: int, first_bytes: bytes) -> tuple[float, str]:
    """Connect, send *first_bytes*, then only read: how long until the server
    closed the connection, and how (``"eof"``/``"reset"``, or what it sent)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        await sock.connect(("127.0.0.1", port))
        started = trio.current_time()
        if first_bytes:
            await sock.send(first_bytes)
        received = b""
        try:
            while chunk := await sock.recv(4096):
                received += chunk
            how = "eof"
        except ConnectionResetError:
            how = "reset"
        elapsed = trio.current_time() - started
    return elapsed, how if not received else f"{how} after {received!r}"


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(client_hello_start(), id="40-bytes-of-a-ClientHello"),
        pytest.param(b"", id="nothing"),
    ],
)
async def test_handshake_timeout_closes_stalled_clients_without_leaks(
    certs: SimpleNamespace, record: Any, first_bytes: bytes
) -> None:
    accepted = Accepted(record)
    results: list[tuple[float, str]] = []
    with trio.fail_after(20):
        async with tls_server(
            accepted, echo, server_context(certs), handshake_timeout=HANDSHAKE_TIMEOUT_MS
        ) as server:
            port = await listening_port(server)
            baseline = open_fds()

            async def worker(count: int) -> None:
                for _ in range(count):
                    results.append(await stalled_peer(port, first_bytes))

            async with trio.open_nursery() as nursery:
                for _ in range(AT_ONCE):
                    nursery.start_soon(worker, STALLED_PEERS // AT_ONCE)
            await accepted.all_closed()
            # The streams' sockets are closed by the time they emit 'close'
            # (give the loop a few turns, no more).
            for _ in range(10):
                if open_fds() == baseline:
                    break
                await trio.sleep(0.01)
            after = open_fds()
            server.close()

    print("raw peers saw:", sorted({how for _, how in results}), "after", sorted(results)[::19])
    assert after == baseline, f"{after - baseline} file descriptors leaked"
    assert len(results) == len(accepted.recs) == STALLED_PEERS
    limit = HANDSHAKE_TIMEOUT_MS / 1000
    for elapsed, how in results:
        assert how in ("eof", "reset"), how
        assert limit * 0.9 <= elapsed < limit + 2, elapsed
    assert len(accepted.client_errors) == STALLED_PEERS
    assert accepted.secured == []
    # 'tlsClientError'(exc, stream) once per stream, with the exception that
    # stream's own 'error' carried; then the stream's 'close'(True).
    errors = {id(stream): exc for exc, stream in accepted.client_errors}
    assert sorted(errors) == sorted(id(stream) for stream in accepted.streams)
    for stream, rec in zip(accepted.streams, accepted.recs, strict=True):
        exc = errors[id(stream)]
        assert isinstance(exc, TimeoutError), repr(exc)
        assert getattr(exc, "code", None) == "ERR_TLS_HANDSHAKE_TIMEOUT", repr(exc)
        assert rec.events == ["connect", ("error", exc), ("close", True)], rec.events


async def test_client_handshake_timeout_against_a_silent_server(record: Any) -> None:
    """Our client against a TCP server that accepts and never answers."""
    with trio.fail_after(10):
        listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            await listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            stream = net.create_connection(
                port,
                "127.0.0.1",
                ssl=ssl.create_default_context(),
                server_hostname="localhost",
                handshake_timeout=HANDSHAKE_TIMEOUT_MS,
            )
            rec = record(stream, events=TLS_EVENTS)
            stream.on("error", lambda exc: None)  # handled: recorded by rec
            started = trio.current_time()
            async with stream:
                pass
            elapsed = trio.current_time() - started
            peer, _ = await listener.accept()
            with peer:
                hello = await peer.recv(65536)
                rest = b""
                while chunk := await peer.recv(65536):  # our side closed
                    rest += chunk

    assert hello[:1] == b"\x16"  # the ClientHello came, and nothing answered it
    assert rec.events[:2] == ["connect", ("error", rec.events[1][1])], rec.events
    exc = rec.events[1][1]
    assert isinstance(exc, TimeoutError)
    assert getattr(exc, "code", None) == "ERR_TLS_HANDSHAKE_TIMEOUT"
    assert rec.events[2:] == [("close", True)]
    assert HANDSHAKE_TIMEOUT_MS / 1000 * 0.9 <= elapsed < 3
