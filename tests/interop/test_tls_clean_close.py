"""A peer that closes first never turns a clean close into an ``'error'``.

Issue 16: when the client closes first (curl after an HTTPS response,
smtplib after QUIT), the server's ``end()`` in its ``'end'`` listener sends
close_notify into a connection the peer has already closed; the final
``shutdown()`` could fail with ``ENOTCONN`` (or the close_notify write with
``EPIPE``, or the peer's reset come in as ``ECONNRESET`` before ``'end'``),
and the stream reported ``'error'`` then ``'close'(True)`` where Node's tls
server reports ``'end'`` then ``'close'(false)``.

Here real clients (curl, Python's smtplib over implicit TLS, ``openssl
s_client``, Node's ``tls`` and ``net``, Python sockets) close first against a
trio_netstream server on 127.0.0.1 whose ``'end'`` listener calls ``end()``.
The failure depends on timing, so each client runs :data:`SESSIONS` sessions
and *every* session must be clean: exactly ``'connect'``, (``'secure'``),
``'data'``..., ``'end'``, ``'close'(False)``, and nothing logged as an
unhandled error. Every child process is bounded by the test's deadline and is
killed (by its own handle) and reaped if the test leaves early.
"""

from __future__ import annotations

import json
import logging
import shutil
import smtplib
import socket
import ssl
import subprocess
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trustme

import trio_netstream as net

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
NODE = shutil.which("node")
CLIENT_JS = Path(__file__).resolve().parent / "node" / "close_first_client.js"

SESSIONS = 50
PARALLEL = 5  # child processes (or threads) running at a time
DEADLINE = 30  # seconds, for one client kind's SESSIONS sessions

TLS_CLEAN = ["connect", "secure", "data", "end", "close(False)"]
TCP_CLEAN = ["connect", "data", "end", "close(False)"]

BODY = b"hello from trio_netstream\n"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + BODY
)
LINE = b"hello, server\n"

NEEDS_CURL = pytest.mark.skipif(CURL is None, reason="curl is not installed")
NEEDS_OPENSSL = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
NEEDS_NODE = pytest.mark.skipif(NODE is None, reason="Node.js (the node binary) is not installed")


# -- certificates -----------------------------------------------------------------


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


# -- the server: every event of every accepted stream ---------------------------------


def describe(exc: BaseException) -> str:
    return (
        f"error({type(exc).__name__} errno={getattr(exc, 'errno', None)}"
        f" code={getattr(exc, 'code', None)})"
    )


class Session:
    """One accepted stream: its events in order (consecutive 'data' once)."""

    def __init__(self, stream: net.Stream) -> None:
        self.events: list[str] = []
        self.errors: list[BaseException] = []
        self.tracebacks: list[str] = []
        self.received = bytearray()
        self.closed = trio.Event()
        for name in ("connect", "secure", "data", "end", "error", "close"):
            stream.on(name, self._listener(name))

    def _listener(self, name: str) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            if name == "data":
                self.received += args[0]
                if self.events[-1:] != ["data"]:
                    self.events.append("data")
            elif name == "error":
                exc = args[0]
                self.errors.append(exc)
                self.tracebacks.append("".join(traceback.format_exception(exc)))
                self.events.append(describe(exc))
            elif name == "close":
                self.events.append(f"close({args[0]})")
                self.closed.set()
            else:
                self.events.append(name)

        return listener


Serve = Callable[[net.Stream], None]


@asynccontextmanager
async def closing_server(
    serve: Serve, context: ssl.SSLContext | None
) -> AsyncIterator[tuple[int, list[Session]]]:
    """A server on 127.0.0.1 that records every stream and ends in 'end'.

    Yields ``(port, sessions)``. On leaving, it waits (bounded) until every
    accepted stream has emitted 'close', then closes the server; its block
    must exit without an exception.
    """
    sessions: list[Session] = []

    def on_connection(stream: net.Stream) -> None:
        sessions.append(Session(stream))
        serve(stream)
        stream.on("end", stream.end)  # the peer closed first: we end too

    options: dict[str, Any] = {} if context is None else {"ssl": context}
    async with net.create_server(on_connection, **options) as server:
        await server.listen(0, "127.0.0.1")
        address = server.address()
        assert isinstance(address, tuple)
        yield address[1], sessions
        with trio.move_on_after(10):
            for session in sessions:
                await session.closed.wait()
        server.close()


def echo(stream: net.Stream) -> None:
    stream.on("data", stream.write)


def http(stream: net.Stream) -> None:
    """Answers one HTTP request in 'data'; the 'end' listener ends."""
    request = bytearray()

    def on_data(chunk: bytes) -> None:
        answered = b"\r\n\r\n" in request
        request.extend(chunk)
        if not answered and b"\r\n\r\n" in request:
            stream.write(HTTP_RESPONSE)

    stream.on("data", on_data)


def smtp(stream: net.Stream) -> None:
    """A minimal SMTP server: 220 after the handshake, EHLO 250, QUIT 221."""
    pending = bytearray()

    def on_data(chunk: bytes) -> None:
        pending.extend(chunk)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                stream.write(b"250-localhost Hello\r\n250 HELP\r\n")
            elif verb == b"QUIT":
                stream.write(b"221 Bye\r\n")  # no end(): the 'end' listener ends
            else:
                stream.write(b"502 Command not implemented\r\n")

    stream.on("secure", lambda: stream.write(b"220 localhost ESMTP test\r\n"))
    stream.on("data", on_data)


# -- checking -----------------------------------------------------------------------


def report(sessions: list[Session], clean: list[str]) -> str:
    """How many sessions were not clean, each distinct sequence with its
    count, and the traceback of the first error of each kind."""
    sequences = Counter(tuple(session.events) for session in sessions)
    lines = [f"{len(sessions)} sessions, {sum(s.events != clean for s in sessions)} not clean:"]
    for sequence, count in sequences.most_common():
        mark = "  " if list(sequence) == clean else "!!"
        lines.append(f"{mark} {count:3d} x {list(sequence)}")
    shown: set[str] = set()
    for session in sessions:
        for exc, text in zip(session.errors, session.tracebacks, strict=True):
            kind = describe(exc)
            if kind not in shown:
                shown.add(kind)
                lines.append(f"first {kind}: {exc}\n{text}")
    return "\n".join(lines)


def assert_all_clean(
    sessions: list[Session], clean: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    summary = report(sessions, clean)
    assert len(sessions) == SESSIONS, summary
    assert all(session.events == clean for session in sessions), summary
    logged = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("trio_netstream") and record.levelno >= logging.WARNING
    ]
    assert logged == [], summary


async def in_batches(once: Callable[[], Awaitable[Any]], count: int = SESSIONS) -> list[Any]:
    """Run ``once()`` *count* times, :data:`PARALLEL` at a time; its results."""
    results: list[Any] = []

    async def worker(runs: int) -> None:
        for _ in range(runs):
            results.append(await once())

    async with trio.open_nursery() as nursery:
        for i in range(PARALLEL):
            nursery.start_soon(worker, count // PARALLEL + (i < count % PARALLEL))
    return results


async def run_child(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run one child process to its end (killed and reaped if cancelled)."""
    return await trio.run_process(
        argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )


# -- the clients ----------------------------------------------------------------------


async def curl_sessions(port: int, certs: SimpleNamespace) -> list[str]:
    """SESSIONS HTTPS requests by curl; the problems curl had (none, normally)."""
    assert CURL is not None
    argv = [
        CURL,
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        certs.ca,
        "--resolve",
        f"localhost:{port}:127.0.0.1",
        f"https://localhost:{port}/",
    ]
    results = await in_batches(lambda: run_child(argv))
    return [
        f"curl exited {r.returncode}: {r.stdout!r} {r.stderr!r}"
        for r in results
        if r.returncode != 0 or r.stdout != BODY
    ]


def smtp_once(port: int, ca: str) -> tuple[int, int]:
    """EHLO, then QUIT; smtplib then closes its socket (no close_notify)."""
    context = ssl.create_default_context(cafile=ca)
    # The constructor connects and raises unless the greeting is a 220.
    with smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=10) as client:
        ehlo = client.ehlo("client.test")[0]
        quit_code = client.quit()[0]  # QUIT, 221, then the socket is closed
    return ehlo, quit_code


async def smtplib_sessions(port: int, certs: SimpleNamespace) -> list[str]:
    async def once() -> tuple[int, int]:
        return await trio.to_thread.run_sync(smtp_once, port, certs.ca)

    results = await in_batches(once)
    return [f"smtplib replies {r}" for r in results if r != (250, 221)]


async def s_client_once(port: int, certs: SimpleNamespace) -> str | None:
    """``openssl s_client`` sends a line, waits for its echo, then its stdin
    closes and it closes the connection (close_notify, FIN)."""
    assert OPENSSL is not None
    argv = [
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        certs.ca,
        "-verify_return_error",
        "-servername",
        "localhost",
    ]
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    out = bytearray()
    try:
        await process.stdin.send_all(LINE)
        while LINE not in out:
            chunk = await process.stdout.receive_some()
            if not chunk:
                break
            out += chunk
        await process.stdin.aclose()  # EOF on stdin: s_client closes first
        while chunk := await process.stdout.receive_some():
            out += chunk
        err = bytearray()
        while chunk := await process.stderr.receive_some():
            err += chunk
        returncode = await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            for pipe in (process.stdin, process.stdout, process.stderr):
                await pipe.aclose()
            await process.wait()
    if returncode != 0 or LINE not in out:
        return f"s_client exited {returncode}: {bytes(out[-200:])!r} {bytes(err)!r}"
    return None


async def s_client_sessions(port: int, certs: SimpleNamespace) -> list[str]:
    results = await in_batches(lambda: s_client_once(port, certs))
    return [r for r in results if r is not None]


async def node_sessions(kind: str, how: str, port: int, ca: str = "") -> list[str]:
    """One Node process runs SESSIONS sessions one after the other."""
    assert NODE is not None
    argv = [NODE, str(CLIENT_JS), kind, str(port), str(SESSIONS), how]
    if ca:
        argv.append(ca)
    result = await run_child(argv)
    assert result.returncode == 0, (result.stdout, result.stderr)
    sessions = json.loads(result.stdout.splitlines()[-1])["sessions"]
    assert len(sessions) == SESSIONS
    first = "secureConnect" if kind == "tls" else "connect"
    expected = (
        [first, "data", "end", "close(false)"] if how == "end" else [first, "data", "close(false)"]
    )
    return [f"node client: {s}" for s in sessions if s["events"] != expected]


def python_socket_once(port: int) -> bytes:
    """Sends a line, reads its echo, closes the socket (the FIN goes first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(LINE)
        received = b""
        while LINE not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received


async def python_socket_sessions(port: int) -> list[str]:
    async def once() -> bytes:
        return await trio.to_thread.run_sync(python_socket_once, port)

    results = await in_batches(once)
    return [f"python socket received {r!r}" for r in results if r != LINE]


# -- the tests -------------------------------------------------------------------------

Clients = Callable[[int, SimpleNamespace], Awaitable[list[str]]]

TLS_CLIENTS: dict[str, tuple[Serve, Clients]] = {
    "curl": (http, curl_sessions),
    "smtplib": (smtp, smtplib_sessions),
    "s_client": (echo, s_client_sessions),
    "node-tls-end": (echo, lambda port, certs: node_sessions("tls", "end", port, certs.ca)),
    "node-tls-destroy": (
        echo,
        lambda port, certs: node_sessions("tls", "destroy", port, certs.ca),
    ),
}


@pytest.mark.parametrize(
    "client",
    [
        pytest.param("curl", marks=[NEEDS_CURL]),
        pytest.param("smtplib"),
        pytest.param("s_client", marks=[NEEDS_OPENSSL]),
        pytest.param("node-tls-end", marks=[NEEDS_NODE]),
        pytest.param("node-tls-destroy", marks=[NEEDS_NODE]),
    ],
)
async def test_tls_peer_closing_first_is_a_clean_close(
    client: str, certs: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_netstream")
    serve, run_clients = TLS_CLIENTS[client]
    with trio.fail_after(DEADLINE):
        async with closing_server(serve, server_context(certs)) as (port, sessions):
            client_problems = await run_clients(port, certs)
    assert_all_clean(sessions, TLS_CLEAN, caplog)
    assert client_problems == []


TCP_CLIENTS: dict[str, Callable[[int], Awaitable[list[str]]]] = {
    "node-net-end": lambda port: node_sessions("tcp", "end", port),
    "node-net-destroy": lambda port: node_sessions("tcp", "destroy", port),
    "python-socket": python_socket_sessions,
}


@pytest.mark.parametrize(
    "client",
    [
        pytest.param("node-net-end", marks=[NEEDS_NODE]),
        pytest.param("node-net-destroy", marks=[NEEDS_NODE]),
        pytest.param("python-socket"),
    ],
)
async def test_tcp_peer_closing_first_is_a_clean_close(
    client: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_netstream")
    with trio.fail_after(DEADLINE):
        async with closing_server(echo, None) as (port, sessions):
            client_problems = await TCP_CLIENTS[client](port)
    assert_all_clean(sessions, TCP_CLEAN, caplog)
    assert client_problems == []
