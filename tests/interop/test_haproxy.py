"""The PROXY protocol against a real load balancer: HAProxy (the contract's "Servers in
production", ``proxy_protocol=`` / ``proxy_trusted=`` on ``create_server``).

HAProxy runs in TCP mode in front of one of our servers, with ``send-proxy``
(v1, text) or ``send-proxy-v2`` (binary) on its server line:

* 200 concurrent clients each send 1 MiB of random bytes through it to an
  echo server and read 1 MiB back (sha256 compared); the server sees every
  client's own local port as ``remote_port``, and HAProxy as
  ``stream.proxy.peer``.
* Its health checks (``check check-send-proxy``) arrive as v2 ``LOCAL``
  headers: connections that keep the real peer's address, no
  ``'clientError'``.
* TLS passthrough: HAProxy forwards the TLS bytes behind its v2 header to a
  ``create_server(ssl=..., proxy_protocol=True)`` server.
* ``proxy_trusted``: a server that trusts only 10.0.0.0/8 refuses HAProxy
  (on 127.0.0.1) with ``'clientError'(PermissionError, info)``; one that
  trusts 127.0.0.1/32 serves it.

HAProxy is started by :func:`running_haproxy` as a child process in the
foreground (``haproxy -f CONFIG -db``) with a generated configuration on
loopback ports; it is ready once its monitor frontend answers ``/ready``;
it is stopped by its PID (SIGTERM, then SIGKILL) and reaped in a
``finally``, whatever happened. Every wait is under ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import trio_netstream as net


def _find_haproxy() -> str | None:
    found = shutil.which("haproxy")
    if found is not None:
        return found
    for candidate in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


HAPROXY = _find_haproxy()
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="the haproxy binary is not installed (apt-get install haproxy)"
)

CLIENTS = 200
PAYLOAD = 1024 * 1024  # bytes each client sends, and reads back
CHUNK = 64 * 1024
LOCALHOST = "127.0.0.1"
PROC = Path("/proc/net/tcp").exists()


# -- HAProxy ------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now (HAProxy binds it next;
    :func:`running_haproxy` retries with new ports if another process won)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def haproxy_maxconn() -> int:
    """HAProxy's maxconn: room for the 200 clients (two sockets each inside
    HAProxy), within the hard RLIMIT_NOFILE HAProxy may raise its own to."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 1000
    return max(CLIENTS + 50, min(1000, (hard - 100) // 2))


def ensure_fd_room(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to *needed* if it is lower
    (a client and a server socket per connection live in this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        top = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def haproxy_config(
    *, monitor_port: int, frontend_port: int, backend_port: int, server_options: str, retries: int
) -> str:
    maxconn = haproxy_maxconn()
    return f"""\
global
    maxconn {maxconn}

defaults
    mode tcp
    maxconn {maxconn}
    retries {retries}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout check 2s

frontend ready
    mode http
    bind {LOCALHOST}:{monitor_port}
    monitor-uri /ready

frontend fe
    bind {LOCALHOST}:{frontend_port} backlog 1024
    default_backend be

backend be
    server s1 {LOCALHOST}:{backend_port} {server_options}
"""


class HAProxy:
    """A running HAProxy: its frontend port and its output so far."""

    def __init__(self, process: trio.Process, log: Path, frontend_port: int) -> None:
        self.process = process
        self.log = log
        self.port = frontend_port

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def sockets_to(self, port: int) -> set[tuple[str, int]]:
        """HAProxy's own ends ``(host, port)`` of its TCP connections to
        127.0.0.1:*port* (Linux: its fds in /proc matched to /proc/net/tcp)."""
        inodes = set()
        fd_dir = Path(f"/proc/{self.process.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
        ends = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and remote == f"0100007F:{port:04X}":
                host_hex, port_hex = local.split(":")
                host = socket.inet_ntoa(bytes.fromhex(host_hex)[::-1])
                ends.add((host, int(port_hex, 16)))
        return ends

    def assert_running(self) -> None:
        code = self.process.poll()
        assert code is None, f"haproxy exited ({code}):\n{self.output()}"


async def _ready(port: int) -> bool:
    """Whether HAProxy's monitor frontend on *port* answers ``/ready`` with 200."""
    try:
        stream = await trio.open_tcp_stream(LOCALHOST, port)
    except OSError:
        return False
    answer = b""
    async with stream:
        try:
            await stream.send_all(b"GET /ready HTTP/1.0\r\n\r\n")
            while chunk := await stream.receive_some(4096):
                answer += chunk
        except trio.BrokenResourceError:
            return False
    return answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200")


async def _stop(process: trio.Process) -> None:
    """Stop HAProxy by its PID (SIGTERM, SIGKILL after 5 s) and reap it."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await process.wait()


@asynccontextmanager
async def running_haproxy(
    tmp_path: Path, backend_port: int, server_options: str, *, retries: int = 3
) -> AsyncIterator[HAProxy]:
    """HAProxy in TCP mode on a free loopback port, forwarding to
    127.0.0.1:*backend_port* with *server_options* on its server line;
    stopped (by PID) and reaped on the way out."""
    assert HAPROXY is not None
    for attempt in range(5):
        monitor_port, frontend_port = free_port(), free_port()
        config = tmp_path / f"haproxy-{attempt}.cfg"
        config.write_text(
            haproxy_config(
                monitor_port=monitor_port,
                frontend_port=frontend_port,
                backend_port=backend_port,
                server_options=server_options,
                retries=retries,
            )
        )
        log = tmp_path / f"haproxy-{attempt}.log"
        with log.open("wb") as output:
            process = await trio.lowlevel.open_process(
                [HAPROXY, "-f", str(config), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        try:
            with trio.fail_after(10):
                while True:  # polling: HAProxy has no readiness signal to wait on
                    if process.poll() is not None or await _ready(monitor_port):
                        break
                    await trio.sleep(0.02)
            if process.returncode is not None:
                text = log.read_text(errors="replace")
                if "cannot bind" in text.lower() or "address already in use" in text.lower():
                    continue  # another process took a port meanwhile: new ports
                raise AssertionError(f"haproxy exited ({process.returncode}):\n{text}")
            haproxy = HAProxy(process, log, frontend_port)
            yield haproxy
            haproxy.assert_running()  # it did not crash under the test
            return
        finally:
            await _stop(process)
    raise AssertionError("haproxy could not bind free ports in 5 attempts")


# -- our servers --------------------------------------------------------------------


def real_peer(stream: net.Stream) -> tuple[str, int] | None:
    """The address the accepted socket is really connected to (``None``
    once the peer reset it: HAProxy's health checks may be gone already)."""
    sock = stream.socket
    if sock is None:
        return None
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return None
    return host, port


class Seen:
    """What a server saw: each connection's addresses and header, and its
    ``'clientError'`` events."""

    def __init__(self) -> None:
        self.connections: list[dict[str, Any]] = []
        self.client_errors: list[tuple[BaseException, dict[str, Any]]] = []
        self.peak = 0
        self._changed = trio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Any) -> None:
        while not condition():
            await self._changed.wait()

    def watch(self, server: net.Server) -> None:
        @server.on("clientError")
        def on_client_error(exc: BaseException, info: dict[str, Any]) -> None:
            self.client_errors.append((exc, info))
            self.changed()

    def echo(self, server_ref: list[net.Server]) -> Any:
        """A ``'connection'`` listener: record, then echo with backpressure."""

        def on_connection(stream: net.Stream) -> None:
            self.connections.append(
                {
                    "remote": (stream.remote_address, stream.remote_port),
                    "remote_family": stream.remote_family,
                    "local_port": stream.local_port,
                    "proxy": stream.proxy,
                    "real_peer": real_peer(stream),
                    "secure_at_data": None,
                }
            )
            record = self.connections[-1]
            self.peak = max(self.peak, server_ref[0].connections)
            self.changed()

            def on_data(chunk: bytes) -> None:
                if record["secure_at_data"] is None:
                    record["secure_at_data"] = stream.secure
                if not stream.write(chunk):
                    stream.pause()

            stream.on("data", on_data)
            stream.on("drain", stream.resume)
            stream.on("end", stream.end)

        return on_connection


@asynccontextmanager
async def echo_server(seen: Seen, **options: Any) -> AsyncIterator[tuple[net.Server, int]]:
    """An echo server on 127.0.0.1 with *options*; shut down on the way out
    (every connection must have closed by itself)."""
    ref: list[net.Server] = []
    async with net.create_server(seen.echo(ref), **options) as server:
        ref.append(server)
        seen.watch(server)
        await server.listen(0, LOCALHOST)
        address = server.address()
        assert isinstance(address, tuple)
        yield server, address[1]
        destroyed = await server.shutdown(5000)
        assert destroyed == 0, f"{destroyed} connection(s) had to be destroyed"


# -- 1. 200 clients x 1 MiB through HAProxy ----------------------------------------


async def echo_client(
    port: int, local_ports: list[int], go: trio.Event, results: list[tuple[int, int]]
) -> None:
    """Connect, wait for *go*, send PAYLOAD random bytes (then EOF) while
    reading the echo until EOF; check the sha256 of what came back."""
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    async with stream:
        local_ports.append(stream.socket.getsockname()[1])
        await go.wait()
        sent, got = hashlib.sha256(), hashlib.sha256()
        received = 0

        async def send() -> None:
            for _ in range(PAYLOAD // CHUNK):
                chunk = os.urandom(CHUNK)
                sent.update(chunk)
                await stream.send_all(chunk)
            await stream.send_eof()

        async def receive() -> None:
            nonlocal received
            while chunk := await stream.receive_some(CHUNK):
                got.update(chunk)
                received += len(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
        assert received == PAYLOAD
        assert got.digest() == sent.digest(), "the echo differs from what was sent"
        results.append((received, stream.socket.getsockname()[1]))


@pytest.mark.parametrize(
    ("option", "version"),
    [pytest.param("send-proxy", 1, id="v1"), pytest.param("send-proxy-v2", 2, id="v2")],
)
async def test_200_clients_of_1_mib_through_haproxy(
    tmp_path: Path, option: str, version: int
) -> None:
    ensure_fd_room(4 * CLIENTS + 200)
    seen = Seen()
    local_ports: list[int] = []
    results: list[tuple[int, int]] = []
    go = trio.Event()
    with trio.fail_after(90):
        async with (
            echo_server(seen, proxy_protocol=True, proxy_trusted=["127.0.0.1/32"]) as (
                server,
                port,
            ),
            running_haproxy(tmp_path, port, option) as haproxy,
        ):
            start = time.monotonic()
            async with trio.open_nursery() as nursery:
                for _ in range(CLIENTS):
                    nursery.start_soon(echo_client, haproxy.port, local_ports, go, results)
                # All 200 connected, through HAProxy to the server, before any data.
                with trio.fail_after(20):
                    await seen.wait_until(
                        lambda: len(local_ports) == CLIENTS and len(seen.connections) == CLIENTS
                    )
                connected = time.monotonic()
                assert server.connections == CLIENTS
                haproxy_ends = haproxy.sockets_to(port) if PROC else None
                go.set()
            done = time.monotonic()
            haproxy.assert_running()

    print(
        f"\nhaproxy {option}: {CLIENTS} connections in {connected - start:.2f} s; "
        f"{CLIENTS} x {PAYLOAD // 1024} KiB echoed in {done - connected:.2f} s "
        f"({2 * CLIENTS * PAYLOAD / (done - connected) / 1e6:.0f} MB/s both ways)"
    )
    assert len(results) == CLIENTS
    assert seen.client_errors == []
    assert seen.peak == CLIENTS  # really concurrent
    assert len(set(local_ports)) == CLIENTS
    remotes = [record["remote"] for record in seen.connections]
    assert {address for address, _ in remotes} == {LOCALHOST}
    assert sorted(port for _, port in remotes) == sorted(local_ports)
    for record in seen.connections:
        proxy = record["proxy"]
        assert proxy.version == version
        assert proxy.command == "PROXY"
        assert proxy.source == record["remote"]
        assert proxy.destination == (LOCALHOST, haproxy.port)
        assert record["remote_family"] == "IPv4"
        assert record["local_port"] == port
        assert proxy.peer == record["real_peer"]
        assert proxy.peer[0] == LOCALHOST
        if version == 1:
            assert proxy.tlvs == {}
    if haproxy_ends is not None:
        # The real peers are HAProxy's own sockets to the server, one each
        # (not the clients': their port numbers may coincide, not the sockets).
        assert {record["proxy"].peer for record in seen.connections} == haproxy_ends
        assert len(haproxy_ends) == CLIENTS


# -- 2. health checks: LOCAL headers -----------------------------------------------


async def test_haproxy_health_checks_are_local_headers(tmp_path: Path) -> None:
    seen = Seen()
    with trio.fail_after(30):
        async with (
            echo_server(seen, proxy_protocol=True, proxy_trusted=["127.0.0.1/32"]) as (_, port),
            running_haproxy(
                tmp_path, port, "send-proxy-v2 check check-send-proxy inter 100ms"
            ) as haproxy,
        ):
            with trio.fail_after(10):
                await seen.wait_until(lambda: len(seen.connections) >= 3)
            haproxy.assert_running()
    assert seen.client_errors == []
    assert len(seen.connections) >= 3
    for record in seen.connections:
        proxy = record["proxy"]
        assert proxy.version == 2
        assert proxy.command == "LOCAL"
        assert proxy.source is None and proxy.destination is None
        # A LOCAL header keeps the real peer: the checker's own socket.
        assert record["remote"] == proxy.peer
        assert record["real_peer"] in (None, proxy.peer)
        assert record["remote"][0] == LOCALHOST
        assert record["remote_family"] == "IPv4"
        assert record["local_port"] == port
    checker_ports = [record["remote"][1] for record in seen.connections]
    assert len(set(checker_ports)) == len(checker_ports)  # a new connection per check


# -- 3. TLS passthrough -------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for ``localhost`` from a trustme CA."""
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def tls_client(
    port: int, context: ssl.SSLContext, message: bytes, out: list[dict[str, Any]]
) -> None:
    """Our own TLS client through HAProxy: handshake, send *message*, end
    once the echo came back whole."""
    stream = net.create_connection(port, LOCALHOST, ssl=context, server_hostname="localhost")
    record: dict[str, Any] = {"data": b"", "events": []}

    @stream.on("secure")
    def on_secure() -> None:
        record["local_port"] = stream.local_port
        record["authorized"] = stream.verify_peer()
        record["events"].append("secure")
        stream.write(message)

    @stream.on("data")
    def on_data(chunk: bytes) -> None:
        record["data"] += chunk
        if record["data"] == message:
            stream.end()

    stream.on("error", lambda exc: record["events"].append(("error", exc)))
    stream.on("close", lambda had_error: record["events"].append(("close", had_error)))
    async with stream:
        pass
    out.append(record)


async def test_tls_passthrough_behind_haproxy(
    tmp_path: Path, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls
    seen = Seen()
    clients: list[dict[str, Any]] = []
    messages = [f"hello {i} through haproxy\n".encode() * (i + 1) * 100 for i in range(5)]
    with trio.fail_after(30):
        async with (
            echo_server(
                seen,
                ssl=server_context,
                proxy_protocol=True,
                proxy_trusted=["127.0.0.1/32"],
                handshake_timeout=10_000,
            ) as (_, port),
            running_haproxy(tmp_path, port, "send-proxy-v2") as haproxy,
        ):
            async with trio.open_nursery() as nursery:
                for message in messages:
                    nursery.start_soon(tls_client, haproxy.port, client_context, message, clients)
            haproxy.assert_running()

    assert seen.client_errors == []
    assert len(clients) == len(messages) == len(seen.connections)
    assert sorted(client["data"] for client in clients) == sorted(messages)
    for client in clients:
        assert client["events"] == ["secure", ("close", False)]
        assert client["authorized"] is True
    assert sorted(record["remote"] for record in seen.connections) == sorted(
        (LOCALHOST, client["local_port"]) for client in clients
    )
    for record in seen.connections:
        assert record["secure_at_data"] is True
        assert record["proxy"].version == 2
        assert record["proxy"].source == record["remote"]
        assert record["proxy"].peer == record["real_peer"]


# -- 4. proxy_trusted ---------------------------------------------------------------


async def plain_client(port: int, message: bytes) -> bytes:
    """Send *message* through HAProxy, half-close, read until EOF (a reset
    counts as EOF); what came back."""
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    answer = b""
    async with stream:
        try:
            await stream.send_all(message)
            await stream.send_eof()
            while chunk := await stream.receive_some(4096):
                answer += chunk
        except trio.BrokenResourceError:
            pass
    return answer


@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
async def test_untrusted_haproxy_is_refused(tmp_path: Path, option: str) -> None:
    seen = Seen()
    answers: list[bytes] = []
    count = 5
    with trio.fail_after(30):
        async with (
            echo_server(seen, proxy_protocol=True, proxy_trusted=["10.0.0.0/8"]) as (_, port),
            # retries 0: HAProxy must not retry a refused connection, one
            # 'clientError' per client.
            running_haproxy(tmp_path, port, option, retries=0) as haproxy,
        ):

            async def one(i: int) -> None:
                answers.append(await plain_client(haproxy.port, b"hello %d\n" % i))

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(one, i)
            with trio.fail_after(5):
                await seen.wait_until(lambda: len(seen.client_errors) >= count)
            haproxy.assert_running()

    assert answers == [b""] * count
    assert seen.connections == []
    assert len(seen.client_errors) == count
    for exc, info in seen.client_errors:
        assert isinstance(exc, PermissionError), repr(exc)
        assert "127.0.0.1" in str(exc)
        # Nothing was read: the info names the real peer, HAProxy.
        assert info["remote_address"] == LOCALHOST
        assert info["remote_family"] == "IPv4"
        assert info["local_address"] == LOCALHOST
        assert info["local_port"] == port


@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
async def test_trusted_haproxy_is_served(tmp_path: Path, option: str) -> None:
    seen = Seen()
    answers: list[bytes] = []
    count = 5
    with trio.fail_after(30):
        async with (
            echo_server(seen, proxy_protocol=True, proxy_trusted=["127.0.0.1/32"]) as (_, port),
            running_haproxy(tmp_path, port, option, retries=0) as haproxy,
        ):

            async def one(i: int) -> None:
                answers.append(await plain_client(haproxy.port, b"hello %d\n" % i))

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(one, i)
            haproxy.assert_running()

    assert sorted(answers) == [b"hello %d\n" % i for i in range(count)]
    assert seen.client_errors == []
    assert len(seen.connections) == count
    for record in seen.connections:
        assert record["proxy"].version == (1 if option == "send-proxy" else 2)
        assert record["remote"][0] == LOCALHOST
