"""The example programs in ``docs/examples/``, each against real clients.

Every example is imported from its file (as a reader would run it from
there) and served in the test's nursery, or run as a script in a child
process that the test stops by its PID. The clients are the real thing
where one exists: ``smtplib`` for the STARTTLS server, ``curl`` and
``urllib`` for the file server; raw Trio sockets elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trustme
from netstream_testing import MiB, Tally, open_fds, port_of, read_to_eof

import trio_netstream as net

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
LIMIT = 30  # seconds: real clients, and a 64 MiB transfer
LISTENING = re.compile(rb"(?:listening on|serving \S+ on) \('127\.0\.0\.1', (\d+)\)")
CURL = shutil.which("curl")


def example(name: str) -> ModuleType:
    """``docs/examples/<name>.py``, imported from its file."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def script(name: str, *args: str) -> AsyncIterator[tuple[trio.Process, int]]:
    """``python docs/examples/<name>.py --port 0 *args``, once it listens: the
    process and its port. Stopped with SIGTERM (by its PID) at the end."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--port", "0", *args],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        log = b""
        while not (found := LISTENING.search(log)):
            chunk = await process.stderr.receive_some()
            assert chunk, f"{name}.py exited: {log.decode()}"
            log += chunk
        yield process, int(found[1])
    finally:
        with trio.CancelScope(shield=True):
            process.send_signal(signal.SIGTERM)
            await process.wait()
            await process.stderr.aclose()
    assert process.returncode == -signal.SIGTERM


async def receive_until(stream: trio.abc.ReceiveStream, buffer: bytearray, needle: bytes) -> None:
    while needle not in buffer:
        chunk = await stream.receive_some()
        assert chunk, f"closed before {needle!r}: {bytes(buffer)!r}"
        buffer += chunk


# -- starttls_smtp.py: smtplib with starttls() -----------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The example's server context for localhost, and a client context trusting it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    with leaf.private_key_and_cert_chain_pem.tempfile() as pem:
        server = example("starttls_smtp").server_context(pem)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def send_mail(port: int, context: ssl.SSLContext, messages: list[bytes]) -> list[Any]:
    """What smtplib does: EHLO, STARTTLS, EHLO, a sendmail() per message, QUIT."""
    replies: list[Any] = []
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=20) as smtp:
        replies.append(smtp.ehlo())
        assert smtp.has_extn("starttls")
        replies.append(smtp.starttls(context=context))
        replies.append(smtp.ehlo())
        assert not smtp.has_extn("starttls")
        for number, body in enumerate(messages):
            replies.append(smtp.sendmail("me@example.com", [f"you{number}@example.com"], body))
        replies.append(smtp.quit())
    return replies


async def test_smtplib_sends_twenty_messages_over_starttls(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    smtp = example("starttls_smtp")
    server_context, client_context = tls
    # CRLF lines as smtplib sends them; lines that start with "." are
    # dot-stuffed on the way and must come back unstuffed; a long line.
    messages = [
        (
            f"Subject: message {number}\r\n\r\nline one of {number}\r\n"
            f".a line with a dot\r\n..two dots\r\n.\r\n{'x' * 900}\r\nend\r\n"
        ).encode()
        for number in range(20)
    ]
    inbox: list[Any] = []
    fds = open_fds()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(smtp.serve, server_context, inbox=inbox))
            replies = await trio.to_thread.run_sync(
                send_mail, port_of(server), client_context, messages
            )
            server.close()
    assert [(message.sender, message.recipients) for message in inbox] == [
        ("<me@example.com>", [f"<you{number}@example.com>"]) for number in range(20)
    ]
    assert [message.body for message in inbox] == messages
    assert replies[1] == (220, b"Ready to start TLS")
    assert replies[3:-1] == [{}] * 20  # sendmail(): no recipient refused
    assert replies[-1] == (221, b"Bye")
    assert open_fds() == fds


async def test_smtp_plaintext_behind_starttls_is_dropped(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A man in the middle appends a command to STARTTLS in the same packet:
    the server never reads it, before or after the handshake."""
    smtp = example("starttls_smtp")
    server_context, client_context = tls
    inbox: list[Any] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(smtp.serve, server_context, inbox=inbox))
            raw = await trio.open_tcp_stream("127.0.0.1", port_of(server))
            plain = bytearray()
            await receive_until(raw, plain, b"\r\n")
            await raw.send_all(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
            await receive_until(raw, plain, b"220 Ready to start TLS\r\n")
            secure = trio.SSLStream(raw, client_context, server_hostname="localhost")
            async with secure:
                await secure.send_all(b"NOOP\r\nQUIT\r\n")
                replies = await read_to_eof(secure)
            server.close()
    assert plain == b"220 localhost ESMTP trio_netstream\r\n220 Ready to start TLS\r\n"
    assert replies == b"250 NOOP\r\n221 Bye\r\n"  # nothing answered the injected line


# -- chat_server.py: three clients --------------------------------------------------------


class ChatClient:
    """A raw socket client of the chat: the lines it received."""

    def __init__(self, name: str, stream: trio.SocketStream) -> None:
        self.name = name
        self.stream = stream
        self.buffer = bytearray()

    async def lines(self, count: int) -> list[bytes]:
        """The next *count* lines received."""
        while self.buffer.count(b"\n") < count:
            chunk = await self.stream.receive_some()
            assert chunk, f"{self.name}: closed with {bytes(self.buffer)!r}"
            self.buffer += chunk
        *lines, rest = self.buffer.split(b"\n", count)
        self.buffer = bytearray(rest)
        return [line + b"\n" for line in lines]


async def test_chat_lines_reach_every_other_client_once_in_order() -> None:
    chat = example("chat_server")
    count = 50
    fds = open_fds()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(chat.serve)
            joined = Tally()
            server.on("connection", joined.add)
            clients = [
                ChatClient(name, await trio.open_tcp_stream("127.0.0.1", port_of(server)))
                for name in ("a", "b", "c")
            ]
            await joined.wait_for(3)
            received: dict[str, list[bytes]] = {}

            async def talk(client: ChatClient) -> None:
                # Sent in pieces that split lines, while the others talk too.
                text = b"".join(b"%s %d\n" % (client.name.encode(), n) for n in range(count))
                for start in range(0, len(text), 7):
                    await client.stream.send_all(text[start : start + 7])
                received[client.name] = await client.lines(2 * count)

            async with trio.open_nursery() as talking:
                for client in clients:
                    talking.start_soon(talk, client)

            # "a" leaves; "b" and "c" go on talking.
            await clients[0].stream.aclose()
            await clients[1].stream.send_all(b"b after\n")
            assert await clients[2].lines(1) == [b"b after\n"]
            await clients[2].stream.send_all(b"c after\n")
            assert await clients[1].lines(1) == [b"c after\n"]
            for client in clients[1:]:
                await client.stream.aclose()
            server.close()

    for client in clients:
        lines = received[client.name]
        assert sorted(lines) == sorted(
            b"%s %d\n" % (other.name.encode(), n)
            for other in clients
            if other is not client
            for n in range(count)
        )
        for other in clients:  # each sender's lines in the order sent
            prefix = other.name.encode() + b" "
            mine = [line for line in lines if line.startswith(prefix)]
            assert mine == ([] if other is client else sorted(mine, key=lambda x: int(x[2:])))
    assert open_fds() == fds


# -- tcp_proxy.py: two pipes ------------------------------------------------------------


def vm_peak(pid: int) -> int:
    """The peak resident set size (VmHWM) of process *pid*, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


async def test_proxy_relays_64_mib_both_ways_in_bounded_memory() -> None:
    """64 MiB to an echo target and back through the script; its peak memory
    grows by a few buffers, not by the transfer."""
    total = 64 * MiB
    block = MiB
    at_target = hashlib.sha256()

    async def echo(stream: trio.SocketStream) -> None:
        async with stream:  # echo everything, then a trailer after the client's EOF
            while chunk := await stream.receive_some(256 * 1024):
                at_target.update(chunk)
                await stream.send_all(chunk)
            await stream.send_all(b"bye " + at_target.hexdigest().encode())

    sent, back = hashlib.sha256(), bytearray()
    received = hashlib.sha256()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
            target = listener.socket.getsockname()[1]
            async with script("tcp_proxy", "127.0.0.1", str(target)) as (process, port):
                before = vm_peak(process.pid)
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client, trio.open_nursery() as both:

                    async def send() -> None:
                        generator = random.Random(64)
                        for _ in range(total // block):
                            data = generator.randbytes(block)
                            sent.update(data)
                            await client.send_all(data)
                        await client.send_eof()  # the half-close goes through

                    both.start_soon(send)
                    count = 0
                    while chunk := await client.receive_some(256 * 1024):
                        keep = max(0, min(len(chunk), total - count))
                        received.update(chunk[:keep])
                        back += chunk[keep:]
                        count += len(chunk)
                growth = vm_peak(process.pid) - before
            nursery.cancel_scope.cancel()
    assert count == total + len(back)
    assert received.hexdigest() == sent.hexdigest()
    assert bytes(back) == b"bye " + sent.hexdigest().encode()  # the target got it all
    # Each direction holds at most a write queue (high_water_mark, 16 KiB)
    # plus a read (64 KiB) or so; the allocator's slack on top.
    assert growth < 8 * MiB, f"the proxy's peak memory grew by {growth / MiB:.1f} MiB"


async def test_proxy_passes_the_half_close_through(record: Any) -> None:
    proxy = example("tcp_proxy")

    async def answer_at_end(stream: net.Stream) -> None:
        question = b""
        async for chunk in stream:  # until the client's end
            question += chunk
        stream.end(b"you said " + question)

    fds = open_fds()
    with trio.fail_after(LIMIT):
        async with net.create_server(answer_at_end) as target, trio.open_nursery() as nursery:
            target_events = record(target, events=("connection",))
            await target.listen(0, "127.0.0.1")
            server = await nursery.start(proxy.serve, "127.0.0.1", port_of(target))
            async with net.create_connection(port_of(server)) as client:
                rec = record(client)
                client.end(b"hello")  # half-close: FIN after "hello"
                await client.wait_closed()
            server.close()
            target.close()
    # The target read "hello" and its 'end' before it answered; the answer
    # came back, then the target's end.
    assert rec.data == b"you said hello"
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert len(target_events.events) == 1
    assert open_fds() == fds


# -- static_files.py: curl and urllib ---------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A served directory with a 5 MiB file, and a secret beside it."""
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "big.bin").write_bytes(random.Random(5).randbytes(5 * MiB + 7))
    (root / "index.html").write_bytes(b"<h1>hello</h1>\n")
    (tmp_path / "secret.txt").write_bytes(b"secret\n")
    return root


async def curl(port: int, path: str, output: Path) -> tuple[int, str]:
    """``curl -sS -o OUTPUT --path-as-is URL``: the status code and stderr."""
    assert CURL is not None
    result = await trio.run_process(
        [CURL, "-sS", "--path-as-is", "-o", str(output), "-w", "%{http_code}", "-m", "20",
         f"http://127.0.0.1:{port}{path}"],
        capture_stdout=True,
        capture_stderr=True,
    )  # fmt: skip
    return int(result.stdout), result.stderr.decode()


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
async def test_curl_fetches_files_and_gets_404_and_400(site: Path, tmp_path: Path) -> None:
    files = example("static_files")
    got = tmp_path / "got"
    got.mkdir()
    fds = open_fds()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(files.serve, site)
            port = port_of(server)
            big = await curl(port, "/sub/big.bin", got / "big")
            index = await curl(port, "/", got / "index")
            missing = await curl(port, "/sub/nothing.bin", got / "missing")
            traversal = await curl(port, "/../secret.txt", got / "traversal")
            encoded = await curl(port, "/sub/%2e%2e/%2e%2e/secret.txt", got / "encoded")
            server.close()
    assert big == (200, "")
    expected = hashlib.sha256((site / "sub" / "big.bin").read_bytes()).hexdigest()
    assert hashlib.sha256((got / "big").read_bytes()).hexdigest() == expected
    assert (index, (got / "index").read_bytes()) == ((200, ""), b"<h1>hello</h1>\n")
    assert (missing, (got / "missing").read_bytes()) == ((404, ""), b"404 Not Found\n")
    assert (traversal, (got / "traversal").read_bytes()) == ((400, ""), b"400 Bad Request\n")
    assert encoded[0] == 400
    assert open_fds() == fds


def fetch(url: str) -> tuple[int, str | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


async def test_urllib_fetches_a_file_and_a_404(site: Path) -> None:
    files = example("static_files")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(files.serve, site)
            base = f"http://127.0.0.1:{port_of(server)}"
            big = await trio.to_thread.run_sync(fetch, f"{base}/sub/big.bin")
            index = await trio.to_thread.run_sync(fetch, f"{base}/index.html")
            missing = await trio.to_thread.run_sync(fetch, f"{base}/nothing")
            server.close()
    assert big == (200, "application/octet-stream", (site / "sub" / "big.bin").read_bytes())
    assert index == (200, "text/html", b"<h1>hello</h1>\n")
    assert missing == (404, "text/plain", b"404 Not Found\n")


# -- every example runs as a script -------------------------------------------------------


async def test_chat_and_file_server_run_as_scripts(site: Path) -> None:
    with trio.fail_after(LIMIT):
        async with script("chat_server") as (_, port):
            a = await trio.open_tcp_stream("127.0.0.1", port)
            b = await trio.open_tcp_stream("127.0.0.1", port)
            async with a, b:
                # Both are in server.streams once "a" gets a line back from "b".
                got = bytearray()
                while not got:
                    await a.send_all(b"ping\n")
                    with trio.move_on_after(0.2):
                        got += await b.receive_some()
                await b.send_all(b"pong\n")
                assert await a.receive_some() == b"pong\n"
        async with script("static_files", "--root", str(site)) as (_, port):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"GET /index.html HTTP/1.0\r\n\r\n")
                reply = await read_to_eof(client)
    assert got.startswith(b"ping\n")
    assert reply.startswith(b"HTTP/1.0 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\n<h1>hello</h1>\n")
