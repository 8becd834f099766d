"""TLS against peers nobody here wrote: the ``openssl`` command-line tools.

``openssl s_client`` talks to the STARTTLS example server
(``docs/examples/starttls_smtp.py``) and to a ``create_server(ssl=...)``
server; a trio_netstream client talks to ``openssl s_server``. Certificates
come from ``trustme``. Every process is started by :func:`start_openssl` in
the test's nursery and is killed (and reaped, its pipes closed) when the
test leaves that nursery, whatever happened.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import trio_netstream as net

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "starttls_smtp.py"
TLS_EVENTS = ("connect", "data", "secure", "end", "drain", "timeout", "error", "close")
#: The example reads with readline(), which a 'data' listener would forbid:
#: its sessions are watched through their other events and its debug log.
SMTP_EVENTS = tuple(name for name in TLS_EVENTS if name != "data")
VERSIONS = [pytest.param("-tls1_2", id="TLSv1.2"), pytest.param("-tls1_3", id="TLSv1.3")]
REPLY = re.compile(r"^\d{3}[ -]")


# -- helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The STARTTLS example, imported from its file."""
    spec = importlib.util.spec_from_file_location("starttls_smtp", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def certs(tmp_path: Path) -> SimpleNamespace:
    """A trustme CA and a certificate for ``localhost``, as PEM files."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    files = SimpleNamespace(
        ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem")
    )
    ca.cert_pem.write_to_path(files.ca)
    leaf.private_key_pem.write_to_path(files.key)
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(files.cert, append=i > 0)
    leaf_cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    files.leaf_der = leaf_cert.public_bytes(Encoding.DER)
    return files


def name_fields(der: bytes, which: str) -> dict[str, str]:
    cert = x509.load_der_x509_certificate(der)
    name = cert.subject if which == "subject" else cert.issuer
    return {attribute.rfc4514_attribute_name: str(attribute.value) for attribute in name}


class PeerProcess:
    """One running process (``openssl``, mostly): its stdin, and its output so far."""

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

    async def wait_for(self, needle: bytes, *, stderr: bool = False) -> None:
        """Wait until *needle* appears in stdout (or stderr)."""
        buffer = self.err if stderr else self.out
        while needle not in buffer:
            if self.exited.is_set():
                raise AssertionError(
                    f"openssl exited ({self.returncode}) before printing {needle!r}\n"
                    f"stdout: {self.text()}\nstderr: {self.errors()}"
                )
            changed = self._changed
            await changed.wait()

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


async def start_openssl(nursery: trio.Nursery, *args: str) -> PeerProcess:
    """Start ``openssl *args*``; it is killed when *nursery* is cancelled."""
    assert OPENSSL is not None
    return await start_process(nursery, OPENSSL, *args)


async def start_process(nursery: trio.Nursery, *argv: str) -> PeerProcess:
    """Start *argv* with piped stdio; it is killed when *nursery* is cancelled."""
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peer = PeerProcess(process)
    await nursery.start(peer.run)
    return peer


def client_context(certs: SimpleNamespace) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs.ca)


def server_context(certs: SimpleNamespace) -> ssl.SSLContext:
    """A plain server context: nothing switched on or off beyond the defaults."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    return context


def s_client_args(port: int, certs: SimpleNamespace, *more: str) -> list[str]:
    return [
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        certs.ca,
        "-verify_return_error",
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        *more,
    ]


def verify_code(peer: PeerProcess) -> str:
    found = re.search(r"Verify return code: (\d+ \([^)]*\))", peer.text())
    assert found is not None, peer.text()
    return found.group(1)


# -- openssl s_client -starttls smtp against the example ------------------------


def commands(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines the example's sessions read, as it logs them ("C: ..."; "C:
    (TLS) ..." once the session is secure)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "starttls_smtp" and record.getMessage().startswith("C: ")
    ]


@pytest.mark.parametrize("version", VERSIONS)
async def test_s_client_starttls_smtp_against_example(
    example: ModuleType,
    certs: SimpleNamespace,
    record: Any,
    version: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="starttls_smtp")
    sessions: list[Any] = []
    at_secure: list[tuple[bool, Any]] = []

    def watch(stream: net.Stream) -> None:
        sessions.append(record(stream, events=SMTP_EVENTS))
        # s_client sends no certificate: nothing to verify, nothing to show.
        stream.on(
            "secure",
            lambda: at_secure.append((stream.verify_peer(), stream.get_peer_certificate())),
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            context = example.server_context(certs.cert, certs.key)
            server = await nursery.start(example.serve, context)
            server.on("connection", watch)
            port = server.address()[1]
            peer = await start_openssl(
                nursery, *s_client_args(port, certs, "-starttls", "smtp", "-nocommands", version)
            )
            await peer.wait_for(b"Verify return code:")
            assert verify_code(peer) == "0 (ok)"
            [rec] = sessions
            # Two lines and the start of a third in one piece, the rest later:
            # once EHLO x is answered, the server waits in readline() with
            # half of the MAIL line kept.
            await peer.send(b"EHLO x\r\nMAIL FROM:<a@exa")
            await peer.wait_for(b"250-localhost Hello x")
            await peer.send(b"mple.com>\r\nQUIT\r\n")
            assert await peer.wait() == 0
            server.close()

    after_tls = peer.text().split("Verify return code: 0 (ok)", 1)[1]
    replies = [line for line in after_tls.splitlines() if REPLY.match(line)]
    assert replies == [
        "250-localhost Hello x",
        "250 HELP",
        "250 MAIL FROM:<a@example.com>",
        "221 Bye",
    ]
    expected = "TLSv1.2" if version == "-tls1_2" else "TLSv1.3"
    assert f"New, {expected}, Cipher is" in peer.text()
    # What came before 'secure' was s_client's own SMTP dialogue, in plaintext.
    lines = commands(caplog)
    assert lines[0].startswith("C: EHLO ")
    assert lines[1:] == [
        "C: STARTTLS",
        "C: (TLS) EHLO x",
        "C: (TLS) MAIL FROM:<a@example.com>",
        "C: (TLS) QUIT",
    ]
    assert rec.events == ["connect", "secure", "end", ("close", False)]
    assert at_secure == [(False, None)]


async def test_example_runs_as_a_script(certs: SimpleNamespace) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            script = await start_process(
                nursery,
                sys.executable,
                str(EXAMPLE),
                "--port",
                "0",
                "--cert",
                certs.cert,
                "--key",
                certs.key,
                "--name",
                "mx.test",
            )
            await script.wait_for(b")\n", stderr=True)  # logs "listening on ('127.0.0.1', PORT)"
            found = re.search(r"listening on \('127\.0\.0\.1', (\d+)\)", script.errors())
            assert found is not None, script.errors()
            port = int(found.group(1))
            peer = await start_openssl(
                nursery, *s_client_args(port, certs, "-starttls", "smtp", "-nocommands")
            )
            await peer.wait_for(b"Verify return code:")
            assert verify_code(peer) == "0 (ok)"
            await peer.send(b"EHLO x\r\nSTARTTLS\r\nQUIT\r\n")
            assert await peer.wait() == 0
            await script.wait_for(b"closed (had_error=False)\n", stderr=True)
            # Not SIGINT: a KeyboardInterrupt that lands in one of the
            # library's tasks currently leaves serve() as a BaseExceptionGroup
            # (see the report), so main()'s "except KeyboardInterrupt" misses it.
            script.process.terminate()
            assert await script.wait() == -signal.SIGTERM, script.errors()

    after_tls = peer.text().split("Verify return code: 0 (ok)", 1)[1]
    replies = [line for line in after_tls.splitlines() if REPLY.match(line)]
    assert replies == [
        "250-mx.test Hello x",
        "250 HELP",
        "503 Bad sequence of commands: TLS is already active",
        "221 Bye",
    ]
    assert "is secure" in script.errors()


# -- a trio_netstream client against openssl s_server ---------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_client_ssl_option_against_s_server(
    certs: SimpleNamespace, record: Any, version: str
) -> None:
    seen: dict[str, Any] = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer = await start_openssl(
                nursery,
                "s_server",
                "-accept",
                "127.0.0.1:0",  # the kernel picks the port: no race, no retry
                "-cert",
                certs.cert,
                "-key",
                certs.key,
                "-rev",  # echo every line back reversed
                "-naccept",
                "1",
                version,
            )
            await peer.wait_for(b"ACCEPT 127.0.0.1:")
            await peer.wait_for(b"\n")
            found = re.search(r"ACCEPT 127\.0\.0\.1:(\d+)", peer.text())
            assert found is not None
            port = int(found.group(1))

            stream = net.create_connection(
                port, "127.0.0.1", ssl=client_context(certs), server_hostname="localhost"
            )
            rec = record(stream, events=TLS_EVENTS)

            @stream.on("secure")
            def on_secure() -> None:
                seen["verified"] = stream.verify_peer()
                seen["cert"] = stream.get_peer_certificate()
                stream.write("hello world\nsecond line\n")

            @stream.on("data")
            def on_data(chunk: bytes) -> None:
                if rec.data == b"dlrow olleh\nenil dnoces\n":
                    stream.end()

            async with stream:
                pass
            assert await peer.wait() == 0  # -naccept 1: it exits after our connection

    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert rec.data == b"dlrow olleh\nenil dnoces\n"
    assert seen["verified"] is True
    cert = seen["cert"]
    assert cert["subject"] == name_fields(certs.leaf_der, "subject")
    assert cert["issuer"] == name_fields(certs.leaf_der, "issuer")
    assert cert["fingerprint256"] == ":".join(
        f"{b:02X}" for b in hashlib.sha256(certs.leaf_der).digest()
    )
    assert "DNS:localhost" in cert["subjectaltname"]
    expected = "TLSv1.2" if version == "-tls1_2" else "TLSv1.3"
    assert f"Protocol version: {expected}" in peer.errors()  # s_server logs to stderr


# -- client-initiated renegotiation -------------------------------------------------


async def test_client_renegotiation_is_refused_and_server_keeps_serving(
    certs: SimpleNamespace, record: Any
) -> None:
    server_side: list[Any] = []

    def echo(stream: net.Stream) -> None:
        server_side.append(record(stream, events=TLS_EVENTS))
        stream.on("data", stream.write)
        stream.on("end", stream.end)

    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            net.create_server(echo, ssl=server_context(certs)) as server,
        ):
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            port = address[1]
            peer = await start_openssl(nursery, *s_client_args(port, certs, "-tls1_2", "-msg"))
            await peer.wait_for(b"Verify return code:")
            assert verify_code(peer) == "0 (ok)"
            await peer.send(b"hello\n")
            await peer.wait_for(b"\nhello\n")  # the echo: TLS works
            await peer.send(b"R\n")  # s_client's "renegotiate" command
            # s_client gives up on the connection. (Had the server renegotiated,
            # s_client would stay connected and fail_after would end the test.)
            await peer.wait()

            # A new client is served as usual.
            client = net.create_connection(
                port, "127.0.0.1", ssl=client_context(certs), server_hostname="localhost"
            )
            client_rec = record(client, events=TLS_EVENTS)
            client.on("secure", lambda: client.end("again\n"))
            async with client:
                pass
            server.close()

    assert "RENEGOTIATING" in peer.errors()
    assert "no renegotiation" in peer.errors()
    # The server answered the new ClientHello with a no_renegotiation alert,
    # never with a second ServerHello.
    assert "warning no_renegotiation" in peer.text()
    server_hellos = re.findall(r"^<<< TLS 1\.2, .*\], ServerHello$", peer.text(), re.MULTILINE)
    assert len(server_hellos) == 1, peer.text()
    first, second = server_side
    assert first.events[:3] == ["connect", "secure", "data"]
    assert first.events[3:] == [("error", first.events[3][1]), ("close", True)]
    assert isinstance(first.events[3][1], ssl.SSLError)
    assert second.events == ["connect", "secure", "data", "end", ("close", False)]
    assert client_rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert client_rec.data == b"again\n"


# -- plaintext where the TLS handshake should be ---------------------------------


async def receive_until(stream: trio.SocketStream, buffer: bytearray, needle: bytes) -> None:
    while needle not in buffer:
        chunk = await stream.receive_some(4096)
        assert chunk, f"connection closed before {needle!r}: {bytes(buffer)!r}"
        buffer += chunk


async def test_plaintext_after_starttls_is_one_error_then_close(
    example: ModuleType, certs: SimpleNamespace, record: Any
) -> None:
    sessions: list[Any] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            context = example.server_context(certs.cert, certs.key)
            server = await nursery.start(example.serve, context)
            server.on("connection", lambda s: sessions.append(record(s, events=SMTP_EVENTS)))
            port = server.address()[1]
            raw = await trio.open_tcp_stream("127.0.0.1", port)
            async with raw:
                replies = bytearray()
                await receive_until(raw, replies, b"\r\n")
                await raw.send_all(b"EHLO x\r\n")
                await receive_until(raw, replies, b"250 HELP\r\n")
                await raw.send_all(b"STARTTLS\r\n")
                await receive_until(raw, replies, b"220 Ready to start TLS\r\n")
                await raw.send_all(b"GET / HTTP/1.0\r\n\r\n")
                rest = bytearray()
                try:
                    while chunk := await raw.receive_some(4096):
                        rest += chunk
                except trio.BrokenResourceError:
                    pass  # a reset is a closed connection too
            server.close()

    assert bytes(replies) == (
        b"220 localhost ESMTP trio_netstream\r\n"
        b"250-localhost Hello x\r\n250-STARTTLS\r\n250 HELP\r\n"
        b"220 Ready to start TLS\r\n"
    )
    assert not rest.startswith(b"250")  # the junk was never answered as SMTP
    [rec] = sessions
    assert rec.events == ["connect", ("error", rec.events[1][1]), ("close", True)]
    assert isinstance(rec.events[1][1], ssl.SSLError)


# -- the handshake's last flight and the first data in one TCP segment ------------
#
# A TLS 1.3 client may send its first application data right behind its
# Finished message, and a slow server then reads both in one receive. openssl
# s_client does that only by chance (it writes them separately), so here the
# client is OpenSSL driven by hand through the stdlib's ssl.SSLObject, which
# puts both in one send.

TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="TLSv1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="TLSv1.3"),
]


class HandDrivenTLSClient:
    """A TLS client over a raw Trio socket that controls what goes in each send."""

    def __init__(self, raw: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.received = b""

    async def handshake_then_send(self, data: bytes) -> None:
        """Handshake; then send the last handshake flight and *data* in one send."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.raw.send_all(self.outgoing.read())
                chunk = await self.raw.receive_some(65536)
                assert chunk, "the server closed the connection during the handshake"
                self.incoming.write(chunk)
        self.tls.write(data)
        await self.raw.send_all(self.outgoing.read())  # Finished + data together

    async def receive_until(self, needle: bytes | None) -> None:
        """Receive until *needle* arrived (``None``: until the server's EOF)."""
        while needle is None or needle not in self.received:
            chunk = await self.raw.receive_some(65536)
            if not chunk and needle is None:
                return
            assert chunk, f"connection closed before {needle!r}: {self.received!r}"
            self.incoming.write(chunk)
            try:
                while piece := self.tls.read(65536):
                    self.received += piece
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass

    async def end(self) -> None:
        """Send close_notify and FIN, then read until the server's EOF."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is written; the server's comes later
        await self.raw.send_all(self.outgoing.read())
        await self.raw.send_eof()
        await self.receive_until(None)


def pinned_client_context(certs: SimpleNamespace, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = client_context(certs)
    context.minimum_version = context.maximum_version = version
    return context


@pytest.mark.parametrize("version", TLS_VERSIONS)
async def test_ssl_server_gets_data_sent_with_the_clients_finished(
    certs: SimpleNamespace, record: Any, version: ssl.TLSVersion
) -> None:
    sessions: list[Any] = []

    def echo(stream: net.Stream) -> None:
        sessions.append(record(stream, events=TLS_EVENTS))
        stream.on("data", stream.write)
        stream.on("end", stream.end)

    with trio.fail_after(3):
        async with net.create_server(echo, ssl=server_context(certs)) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            raw = await trio.open_tcp_stream("127.0.0.1", address[1])
            async with raw:
                client = HandDrivenTLSClient(raw, pinned_client_context(certs, version))
                await client.handshake_then_send(b"hello\n")
                await client.receive_until(b"hello\n")
                await client.end()
            server.close()

    assert client.received == b"hello\n"
    [rec] = sessions
    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert rec.data == b"hello\n"


@pytest.mark.parametrize("version", TLS_VERSIONS)
async def test_starttls_server_gets_data_sent_with_the_clients_finished(
    example: ModuleType, certs: SimpleNamespace, record: Any, version: ssl.TLSVersion
) -> None:
    sessions: list[Any] = []
    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            context = example.server_context(certs.cert, certs.key)
            server = await nursery.start(example.serve, context)
            server.on("connection", lambda s: sessions.append(record(s, events=SMTP_EVENTS)))
            raw = await trio.open_tcp_stream("127.0.0.1", server.address()[1])
            async with raw:
                plain = bytearray()
                await receive_until(raw, plain, b"\r\n")
                await raw.send_all(b"EHLO x\r\nSTARTTLS\r\n")
                await receive_until(raw, plain, b"220 Ready to start TLS\r\n")
                client = HandDrivenTLSClient(raw, pinned_client_context(certs, version))
                await client.handshake_then_send(b"EHLO x\r\n")
                await client.receive_until(b"250 HELP\r\n")
                await client.end()  # no QUIT: the server ends when we do
            server.close()

    assert client.received == b"250-localhost Hello x\r\n250 HELP\r\n"
    [rec] = sessions
    assert rec.events == ["connect", "secure", "end", ("close", False)]
