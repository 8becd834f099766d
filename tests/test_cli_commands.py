"""The command line as a user runs it: ``echo``, ``connect``, ``demo --tls``.

Every command runs as a real child process (``python -m trio_netstream``);
peers are the CLI itself, raw Trio sockets, or a ``trio_netstream`` server in
this process. Exit codes (documented in ``--help``): 0 success and SIGTERM,
1 network or protocol error, 2 usage, 3 TLS or certificate error, 130 SIGINT.
Every test runs under ``trio.fail_after`` and reaps every child it started.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import trio_netstream as net
from trio_netstream._cli import demo, main, throwaway_certificates

LIMIT = 30  # seconds; every test body runs under trio.fail_after(LIMIT)
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
CONNECTION_LINE = re.compile(r"^\[pid (\d+)\] #(\d+) (.*)$")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_netstream", *args]


class Child:
    """A running CLI process whose stdout is read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = bytearray()

    async def line(self) -> str:
        """The next stdout line (AssertionError at EOF)."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some()
            assert chunk, f"stdout ended; lines so far: {self.lines}"
            self._buffer += chunk
        raw, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        self.lines.append(raw.decode())
        return self.lines[-1]

    async def rest(self) -> list[str]:
        """Every remaining stdout line, up to EOF."""
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.receive_some():
            self._buffer += chunk
        tail = bytes(self._buffer).decode()
        self._buffer.clear()
        self.lines.extend(tail.splitlines())
        return self.lines

    async def stop(self, signum: int = signal.SIGTERM) -> tuple[int, list[str], str]:
        """Send *signum*; return the exit code, every stdout line and stderr."""
        self.process.send_signal(signum)
        lines = await self.rest()
        code = await self.process.wait()
        assert self.process.stderr is not None
        err = b""
        while chunk := await self.process.stderr.receive_some():
            err += chunk
        return code, lines, err.decode()


@asynccontextmanager
async def running(*args: str, stdin: int = subprocess.DEVNULL) -> AsyncIterator[Child]:
    """Start ``trio-netstream *args``; on the way out SIGTERM it (SIGKILL
    after 10 s) and reap it, so no child (nor an echo worker) is left.
    ``stdin=subprocess.PIPE`` keeps its stdin open until then."""
    process = await trio.lowlevel.open_process(
        cli(*args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield Child(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


@asynccontextmanager
async def echo_server(*args: str) -> AsyncIterator[tuple[Child, str, int]]:
    """``echo --port 0 *args``, once listening: the child, its host and port."""
    async with running("echo", "--port", "0", *args) as child:
        first = await child.line()
        match = re.fullmatch(r"listening on (\S+):(\d+) \(pid (\d+)(, workers [\d, ]+)?\)", first)
        assert match, first
        yield child, match[1], int(match[2])


async def run_connect(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        cli("connect", *args), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )


def connections(lines: list[str]) -> dict[tuple[int, int], list[str]]:
    """The echo server's event lines per (pid, connection number)."""
    per: dict[tuple[int, int], list[str]] = {}
    for line in lines:
        match = CONNECTION_LINE.match(line)
        if match:
            per.setdefault((int(match[1]), int(match[2])), []).append(match[3])
    return per


def echoed(events: list[str]) -> bytes:
    """The bytes of the ``data b'...'`` lines (the kernel may split them)."""
    data = b""
    for event in events:
        if event.startswith("data "):
            literal = event[len("data ") :]
            assert literal.startswith("b'") or literal.startswith('b"'), event
            data += eval(literal)
    return data


def without_data(events: list[str]) -> list[str]:
    return [event for event in events if not event.startswith("data ")]


def free_port() -> int:
    """A loopback port nobody listens on (bound then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """trustme files: a CA, a server cert for localhost/127.0.0.1, a CA that
    did not issue it, a cert for another name, and a file that is no PEM."""
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    wrong_name = ca.issue_cert("example.org")
    files = {
        "ca": directory / "ca.pem",
        "other_ca": directory / "other_ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
        "wrong_name_cert": directory / "wrong.pem",
        "wrong_name_key": directory / "wrong.key",
        "garbage": directory / "garbage.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    other_ca.cert_pem.write_to_path(str(files["other_ca"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    wrong_name.private_key_pem.write_to_path(str(files["wrong_name_key"]))
    files["wrong_name_cert"].write_bytes(
        b"".join(blob.bytes() for blob in wrong_name.cert_chain_pems)
    )
    files["garbage"].write_text("this is not a certificate\n")
    return {name: str(path) for name, path in files.items()}


@asynccontextmanager
async def raw_server(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """A raw Trio TCP server on 127.0.0.1 running *handler* per connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await handler(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        yield port
        nursery.cancel_scope.cancel()


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


# -- echo + connect -----------------------------------------------------------------


async def test_connect_pipes_stdin_to_the_echo_server_and_its_answer_to_stdout() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server() as (child, host, port):
            assert host == "127.0.0.1"
            result = await run_connect(host, str(port), stdin=b"ping\r\npong\r\n")
            assert (result.returncode, result.stderr) == (0, b"")
            assert result.stdout == b"hello\r\nping\r\npong\r\ngoodbye\r\n"
            code, lines, err = await child.stop(signal.SIGTERM)
    assert (code, err) == (0, "")
    per = connections(lines)
    assert list(per) == [(child.process.pid, 1)]
    events = per[(child.process.pid, 1)]
    assert re.fullmatch(r"connection from 127\.0\.0\.1:\d+", events[0])
    assert without_data(events[1:]) == ["connect", "end", "close(False)"]
    assert echoed(events) == b"ping\r\npong\r\n"


async def test_connect_half_closes_at_stdin_eof_and_still_reads_the_answer() -> None:
    # The raw peer answers only after it has read the client's FIN.
    seen: list[bytes] = []

    async def shout_after_eof(stream: trio.SocketStream) -> None:
        data = await receive_all(stream)
        seen.append(data)
        await stream.send_all(b"you said: " + data.upper())

    with trio.fail_after(LIMIT):
        async with raw_server(shout_after_eof) as port:
            result = await run_connect("127.0.0.1", str(port), stdin=b"half-close me\n")
    assert (result.returncode, result.stderr) == (0, b"")
    assert seen == [b"half-close me\n"]
    assert result.stdout == b"you said: HALF-CLOSE ME\n"


async def test_connect_half_closes_against_a_trio_netstream_server() -> None:
    events: list[Any] = []

    def on_connection(stream: net.Stream) -> None:
        received: list[bytes] = []
        stream.on("data", received.append)

        def on_end() -> None:
            events.append(("end", stream.ready_state))
            stream.end(b"%d bytes\n" % len(b"".join(received)))

        stream.on("end", on_end)
        stream.on("close", lambda had_error: events.append(("close", had_error)))

    with trio.fail_after(LIMIT):
        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            result = await run_connect("127.0.0.1", str(address[1]), stdin=b"x" * 100_000)
            server.close()
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"100000 bytes\n"
    assert events == [("end", "writeOnly"), ("close", False)]


async def test_connect_exits_when_the_server_closes_while_stdin_stays_open() -> None:
    async def say_bye(stream: trio.SocketStream) -> None:
        await stream.send_all(b"bye\n")

    with trio.fail_after(LIMIT):
        async with raw_server(say_bye) as port:
            process = await trio.lowlevel.open_process(
                cli("connect", "127.0.0.1", str(port)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None and process.stderr is not None
                out = await receive_all(process.stdout)
                code = await process.wait()
                err = await receive_all(process.stderr)
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                    for pipe in (process.stdin, process.stdout, process.stderr):
                        if pipe is not None:
                            await pipe.aclose()
    assert (code, out, err) == (0, b"bye\n", b"")


async def test_connect_stops_quietly_when_its_stdout_reader_goes_away() -> None:
    # `connect ... | head -c 1`: no traceback, exit code 0; the server sees the end.
    sent: list[int] = []

    async def flood(stream: trio.SocketStream) -> None:
        try:
            for _ in range(1024):  # at most 64 MiB
                await stream.send_all(b"x" * 65536)
                sent.append(65536)
        except trio.BrokenResourceError:
            pass

    with trio.fail_after(LIMIT):
        async with raw_server(flood) as port:
            process = await trio.lowlevel.open_process(
                cli("connect", "127.0.0.1", str(port)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None and process.stderr is not None
                assert await process.stdout.receive_some(1)
                await process.stdout.aclose()  # the reader goes away
                code = await process.wait()
                err = await receive_all(process.stderr)
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                    for pipe in (process.stdin, process.stdout, process.stderr):
                        if pipe is not None:
                            await pipe.aclose()
    assert (code, err) == (0, b"")
    assert sum(sent) < 1024 * 65536  # the flood was cut short


async def test_connect_decodes_output_with_encoding() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server() as (_, host, port):
            result = await run_connect(host, str(port), "--encoding", "hex", stdin=b"\xff\x00")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == (b"hello\r\n\xff\x00goodbye\r\n").hex().encode()


async def test_connect_to_a_refused_port_exits_1_with_the_reason() -> None:
    port = free_port()
    with trio.fail_after(LIMIT):
        result = await run_connect("127.0.0.1", str(port), stdin=b"lost\n")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode() == (
        f"trio-netstream: connection refused: 127.0.0.1:{port} (ECONNREFUSED)\n"
    )


async def test_interrupting_connect_exits_130() -> None:
    with trio.fail_after(LIMIT):
        async with (
            echo_server() as (_, host, port),
            # stdin stays open: the client is still connected when interrupted.
            running("connect", host, str(port), stdin=subprocess.PIPE) as client,
        ):
            assert client.process.stdout is not None
            greeting = await client.process.stdout.receive_some()
            # Connected: the greeting came (the server's goodbye may come with it).
            assert greeting.startswith(b"hello\r\n")
            code, _, err = await client.stop(signal.SIGINT)
    assert (code, err) == (130, "")


async def test_echo_stops_with_130_on_sigint() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server() as (child, _, _):
            code, lines, err = await child.stop(signal.SIGINT)
    assert (code, err) == (130, "")
    assert len(lines) == 1


# -- TLS --------------------------------------------------------------------------


async def test_connect_tls_to_echo_tls_with_ca_file(pki: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--tls-cert", pki["cert"], "--tls-key", pki["key"]) as (
            child,
            host,
            port,
        ):
            result = await run_connect(
                host, str(port), "--tls", "--ca-file", pki["ca"], "-v", stdin=b"ping\r\n"
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == b"hello\r\nping\r\ngoodbye\r\n"
            code, lines, err = await child.stop()
    assert result.stderr.decode().splitlines() == [
        f"trio-netstream: connected to 127.0.0.1:{port}",
        "trio-netstream: secure: peer verified",
        "trio-netstream: end",
        "trio-netstream: closed (had_error=False)",
    ]
    assert (code, err) == (0, "")
    (events,) = connections(lines).values()
    assert without_data(events[1:]) == ["connect", "secure", "end", "close(False)"]
    assert echoed(events) == b"ping\r\n"


async def test_connect_tls_insecure_accepts_an_unknown_ca(pki: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--tls-cert", pki["cert"], "--tls-key", pki["key"]) as (
            _,
            host,
            port,
        ):
            result = await run_connect(host, str(port), "--tls", "--insecure", stdin=b"x")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"hello\r\nxgoodbye\r\n"


@pytest.mark.parametrize(
    ("cert", "ca", "host", "code"),
    [
        ("cert", None, "127.0.0.1", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),  # system CAs only
        ("cert", "other_ca", "127.0.0.1", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),
        ("wrong_name_cert", "ca", "localhost", "ERR_TLS_CERT_ALTNAME_INVALID"),
        # Node gives IP address mismatches the same code as host name mismatches.
        ("wrong_name_cert", "ca", "127.0.0.1", "ERR_TLS_CERT_ALTNAME_INVALID"),
    ],
)
async def test_connect_tls_to_an_unverifiable_server_exits_3(
    pki: dict[str, str], cert: str, ca: str | None, host: str, code: str
) -> None:
    key = cert.replace("cert", "key")
    trust = [] if ca is None else ["--ca-file", pki[ca]]
    with trio.fail_after(LIMIT):
        async with echo_server("--tls-cert", pki[cert], "--tls-key", pki[key]) as (
            child,
            _,
            port,
        ):
            result = await run_connect(host, str(port), "--tls", *trust, stdin=b"secret\n")
            server_code, lines, _ = await child.stop()
    assert result.returncode == 3
    assert result.stdout == b""
    err = result.stderr.decode()
    assert err.startswith(f"trio-netstream: certificate verification failed: {host}:{port}: ")
    assert err.endswith(f" ({code})\n")
    assert err.count("\n") == 1
    # The server never got the secret: its one connection failed.
    assert server_code == 0
    (events,) = connections(lines).values()
    assert events[1] == "connect"
    assert events[2].startswith("error SSLError: ")
    assert events[3:] == ["close(True)"]


async def test_connect_tls_to_a_plaintext_server_exits_3() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server() as (_, host, port):
            result = await run_connect(host, str(port), "--tls", stdin=b"x")
    assert result.returncode == 3
    assert result.stderr.decode().startswith(
        f"trio-netstream: TLS handshake failed: 127.0.0.1:{port}: "
    )


async def test_bad_certificate_files_exit_3(pki: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        echo = await trio.run_process(
            cli("echo", "--port", "0", "--tls-cert", pki["garbage"], "--tls-key", pki["key"]),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        connect = await run_connect(
            "127.0.0.1", str(free_port()), "--tls", "--ca-file", pki["garbage"]
        )
        missing = await run_connect(
            "127.0.0.1", str(free_port()), "--tls", "--ca-file", pki["garbage"] + ".missing"
        )
    assert (echo.returncode, echo.stdout) == (3, b"")
    assert echo.stderr.decode().startswith(
        f"trio-netstream: cannot load certificate and key: {pki['garbage']} / {pki['key']}: "
    )
    assert connect.returncode == 3
    assert connect.stderr.decode().startswith(
        f"trio-netstream: cannot load CA file: {pki['garbage']}: "
    )
    assert missing.returncode == 3
    assert missing.stderr.decode() == (
        f"trio-netstream: cannot load CA file: {pki['garbage']}.missing: "
        "No such file or directory\n"
    )


def _load_smtp_example() -> Any:
    spec = importlib.util.spec_from_file_location("starttls_smtp", EXAMPLES / "starttls_smtp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_connect_starttls_speaks_smtp_then_relays_over_tls(pki: dict[str, str]) -> None:
    smtp = _load_smtp_example()
    context = smtp.server_context(pki["cert"], pki["key"])
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(smtp.serve, context)
            _, port = server.address()
            result = await run_connect(
                "127.0.0.1",
                str(port),
                "--starttls",
                "--ca-file",
                pki["ca"],
                "-v",
                stdin=b"EHLO me.example\r\nQUIT\r\n",
            )
            server.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        b"220 localhost ESMTP trio_netstream\r\n"
        b"250-localhost Hello [127.0.0.1]\r\n250-STARTTLS\r\n250 HELP\r\n"
        b"220 Ready to start TLS\r\n"
        # over TLS now: STARTTLS is no longer offered
        b"250-localhost Hello me.example\r\n250 HELP\r\n"
        b"221 Bye\r\n"
    )
    assert result.stderr.decode().splitlines() == [
        f"trio-netstream: connected to 127.0.0.1:{port}",
        "trio-netstream: > EHLO [127.0.0.1]",
        "trio-netstream: > STARTTLS",
        "trio-netstream: secure: peer verified",
        "trio-netstream: end",
        "trio-netstream: closed (had_error=False)",
    ]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([b"554 no service here\r\n"], "expected 220 to greeting, got '554 no service here'"),
        (
            [b"220-first\r\n220 ready\r\n", b"502 no EHLO\r\n"],
            "expected 250 to EHLO, got '502 no EHLO'",
        ),
        (
            [b"220 ready\r\n", b"250 ok\r\n", b"454 TLS not available\r\n"],
            "expected 220 to STARTTLS, got '454 TLS not available'",
        ),
        (
            [b"220 ready\r\n", b"250 ok\r\n", b"220 go ahead\r\n250 injected\r\n"],
            "the server sent plaintext after its 220 reply",
        ),
    ],
)
async def test_connect_starttls_refuses_a_server_that_breaks_the_dialogue(
    script: list[bytes], message: str
) -> None:
    received: list[bytes] = []

    async def smtp_peer(stream: trio.SocketStream) -> None:
        await stream.send_all(script[0])
        for reply in script[1:]:
            line = b""
            while not line.endswith(b"\n"):
                chunk = await stream.receive_some()
                if not chunk:
                    return
                line += chunk
            received.append(line)
            await stream.send_all(reply)
        await receive_all(stream)

    with trio.fail_after(LIMIT):
        async with raw_server(smtp_peer) as port:
            result = await run_connect("127.0.0.1", str(port), "--starttls", stdin=b"secret\n")
    assert result.returncode == 1
    assert result.stderr.decode() == f"trio-netstream: STARTTLS: {message}: 127.0.0.1:{port}\n"
    assert received == [b"EHLO [127.0.0.1]\r\n", b"STARTTLS\r\n"][: len(script) - 1]
    assert b"".join(script).startswith(result.stdout)


# -- workers and UNIX sockets -------------------------------------------------------


async def test_echo_workers_share_one_port_and_stop_together() -> None:
    count = 24

    async def one_client(port: int, replies: list[bytes]) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"ping\r\n")
            await stream.send_eof()
            replies.append(await receive_all(stream))

    with trio.fail_after(LIMIT):
        async with echo_server("--workers", "2") as (child, _, port):
            first = child.lines[0]
            match = re.search(r"\(pid (\d+), workers (\d+), (\d+)\)$", first)
            assert match, first
            assert int(match[1]) == child.process.pid
            workers = {int(match[2]), int(match[3])}
            replies: list[bytes] = []
            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(one_client, port, replies)
            code, lines, err = await child.stop(signal.SIGTERM)
    assert (code, err) == (0, "")
    assert replies == [b"hello\r\nping\r\ngoodbye\r\n"] * count
    per = connections(lines)
    assert len(per) == count
    assert {pid for pid, _ in per} == workers  # both workers served
    for events in per.values():
        assert without_data(events[1:]) == ["connect", "end", "close(False)"]
        assert echoed(events) == b"ping\r\n"
    for pid in workers:  # reaped: no worker outlives the command
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_echo_workers_serve_tls_and_stop_when_one_dies(pki: dict[str, str]) -> None:
    tls = ["--tls-cert", pki["cert"], "--tls-key", pki["key"]]
    with trio.fail_after(LIMIT):
        async with echo_server("--workers", "2", *tls) as (child, host, port):
            match = re.search(r"workers (\d+), (\d+)\)$", child.lines[0])
            assert match, child.lines[0]
            workers = {int(match[1]), int(match[2])}
            result = await run_connect(
                host, str(port), "--tls", "--ca-file", pki["ca"], stdin=b"ping\r\n"
            )
            assert (result.returncode, result.stderr) == (0, b"")
            assert result.stdout == b"hello\r\nping\r\ngoodbye\r\n"
            while not (line := await child.line()).endswith(" close(False)"):
                pass
            line_match = CONNECTION_LINE.match(line)
            assert line_match
            survivor = int(line_match[1])  # served the connection; the other one dies
            (victim,) = workers - {survivor}
            os.kill(victim, signal.SIGKILL)
            lines = await child.rest()
            code = await child.process.wait()
            assert child.process.stderr is not None
            err = (await receive_all(child.process.stderr)).decode()
    assert code == 1
    assert err == f"trio-netstream: echo worker {victim} exited (exit code -9)\n"
    (events,) = connections(lines).values()
    assert without_data(events[1:]) == ["connect", "secure", "end", "close(False)"]
    with pytest.raises(ProcessLookupError):  # the survivor was stopped and reaped
        os.kill(survivor, 0)


async def test_echo_and_connect_over_a_unix_socket(unix_path: str) -> None:
    with trio.fail_after(LIMIT):
        async with running("echo", "--unix", unix_path) as child:
            pid = child.process.pid
            assert await child.line() == f"listening on {unix_path} (pid {pid})"
            result = await run_connect("--unix", unix_path, stdin=b"over unix\n")
            code, lines, err = await child.stop()
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"hello\r\nover unix\ngoodbye\r\n"
    assert (code, err) == (0, "")
    events = connections(lines)[(pid, 1)]
    assert events[0] == "connection from unix socket"
    assert without_data(events[1:]) == ["connect", "end", "close(False)"]
    assert not await trio.Path(unix_path).exists()  # the server removed its socket file


async def test_connect_to_a_missing_unix_socket_exits_1(unix_path: str) -> None:
    with trio.fail_after(LIMIT):
        result = await run_connect("--unix", unix_path)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"trio-netstream: no such file or directory: {unix_path} (ENOENT)\n"
    )


# -- demo --tls ---------------------------------------------------------------------


def _side(lines: list[str], side: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in lines
        if line.startswith(side + " ") and "bytes_read=" not in line
    ]


def _check_tls_transcript(lines: list[str]) -> None:
    server, conn, client = _side(lines, "server"), _side(lines, "conn"), _side(lines, "client")

    def without_data(events: list[str]) -> list[str]:
        return [event for event in events if not event.startswith("data(")]

    assert server[0].startswith("listening(('127.0.0.1', ")
    assert server[1].startswith("connection('127.0.0.1:")
    assert server[2:] == ["close()"]
    assert without_data(conn) == ["connect()", "secure()", "end()", "close(False)"]
    assert without_data(client) == [
        "connect()",
        "secure()",
        "verify_peer() -> True",
        "end()",
        "close(False)",
    ]
    text = "".join(eval(line[5:-1]) for line in client if line.startswith("data("))
    assert text == "hello\r\nping\r\npong\r\ngoodbye\r\n"
    echoed = "".join(eval(line[5:-1]) for line in conn if line.startswith("data("))
    assert echoed == "ping\r\npong\r\n"
    assert lines[-2] == "client bytes_read=28 bytes_written=12"


async def test_demo_tls_transcript_shows_secure_events() -> None:
    lines: list[str] = []
    with trio.fail_after(LIMIT):
        await demo(out=lines.append, tls=True)
    _check_tls_transcript(lines)


async def test_demo_tls_command() -> None:
    with trio.fail_after(LIMIT):
        result = await trio.run_process(
            cli("demo", "--tls"), capture_stdout=True, capture_stderr=True, check=False
        )
    assert (result.returncode, result.stderr) == (0, b"")
    _check_tls_transcript(result.stdout.decode().splitlines())


async def test_throwaway_certificates_without_trustme_verify() -> None:
    # The fallback made with `cryptography` (used when trustme is missing).
    certificates = throwaway_certificates(use_trustme=False)
    events: list[Any] = []
    with trio.fail_after(LIMIT):
        async with net.create_server(
            lambda stream: stream.end(b"ok"), ssl=certificates.server_context()
        ) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            for host in ("127.0.0.1", "localhost"):
                client = net.create_connection(
                    address[1], "127.0.0.1", ssl=certificates.client_context(), server_hostname=host
                )

                @client.on("secure")
                def secure(client: net.Stream = client) -> None:
                    events.append(("secure", client.verify_peer()))

                client.on("data", lambda data: events.append(("data", data)))
                client.on("close", lambda had_error: events.append(("close", had_error)))
                async with client:
                    client.end()
            server.close()
    assert events == [("secure", True), ("data", b"ok"), ("close", False)] * 2


# -- usage errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["connect"],
        ["connect", "127.0.0.1"],
        ["connect", "127.0.0.1", "0"],
        ["connect", "127.0.0.1", "http"],
        ["connect", "127.0.0.1", "80", "--unix", "/tmp/x"],
        ["connect", "127.0.0.1", "80", "--tls", "--starttls"],
        ["connect", "127.0.0.1", "80", "--ca-file", "ca.pem"],
        ["connect", "127.0.0.1", "80", "--tls", "--insecure", "--ca-file", "ca.pem"],
        ["connect", "127.0.0.1", "80", "--encoding", "klingon"],
        ["echo", "--workers", "0"],
        ["echo", "--unix", "/tmp/x", "--workers", "2"],
        ["echo", "--tls-key", "key.pem"],
        ["echo", "--port", "65536"],
        ["demo", "--port", "-1"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"trio-netstream {argv[0]}: error: " in err


@pytest.mark.parametrize("command", ["echo", "connect", "demo"])
def test_help_documents_the_exit_codes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for line in ("0    success", "1    network", "2    usage", "3    TLS", "130  interrupted"):
        assert line in out


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("trio-netstream")
    result = subprocess.run(
        [str(script), "connect", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: trio-netstream connect (HOST PORT | --unix PATH)")


def test_ca_file_is_checked_before_connecting(
    pki: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # In process; port 9 (discard) is never contacted: the CA file fails first.
    assert main(["connect", "127.0.0.1", "9", "--tls", "--ca-file", pki["garbage"]]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"trio-netstream: cannot load CA file: {pki['garbage']}: ")
