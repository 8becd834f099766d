"""``python -m trio_netstream`` / ``trio-netstream``: the command line.

Commands:

* ``demo [--tls]``: the seed's echo server and a client on loopback, printing
  the event transcript of both sides (with ``--tls``: TLS from the first
  byte, with a throwaway certificate).
* ``echo``: the seed's echo server, printing a line per connection event;
  ``--workers N`` runs N processes sharing one port (``SO_REUSEPORT``).
* ``connect``: a netcat-like client: stdin to the socket, received data to
  stdout; ``--tls`` or SMTP-style ``--starttls``.
* ``bench``: the benchmarks (:mod:`trio_netstream._bench`).

Exit codes (the same for every command): 0 success (and SIGTERM), 1 network
or protocol error, 2 usage error, 3 TLS or certificate error, 130 SIGINT.

How this works: ``echo`` and ``connect`` run their body next to a signal
receiver (:func:`_until_signal`); SIGINT or SIGTERM cancels the body, which
destroys its streams and server on the way out. ``echo --workers N``: the
parent binds the port with ``SO_REUSEPORT`` (choosing it when ``--port 0``)
without listening on it, starts N ``echo --reuse-port`` child processes on
that port, relays their output line by line and stops them (SIGTERM) when it
is stopped. ``connect`` reads stdin in a worker thread, so stdin may be a
terminal, a pipe or a file.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import ipaddress
import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import trio

from . import create_connection, create_server
from ._encoding import Decoder, get_decoder, normalize
from ._errors import StreamStateError, node_code
from ._stream import Stream

__all__ = ["main"]

EXIT_OK = 0
EXIT_NETWORK = 1
EXIT_USAGE = 2
EXIT_TLS = 3
EXIT_SIGINT = 130

PROG = "trio-netstream"

_EXIT_CODES = """\
exit codes:
  0    success (also after SIGTERM)
  1    network or protocol error (connection refused, reset, name not found...)
  2    usage error (bad arguments)
  3    TLS or certificate error (handshake failed, certificate not verified,
       certificate or key file not loadable)
  130  interrupted (SIGINT, Ctrl-C)"""


class Failure(Exception):
    """A failure reported as one ``trio-netstream: ...`` line and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ProtocolError(Exception):
    """The server did not follow the protocol (``connect --starttls``)."""


# -- output helpers -------------------------------------------------------------


def _silence_stdout() -> None:
    """Whoever read stdout has gone (EPIPE): send the rest to /dev/null, so
    neither later writes nor the interpreter's final flush fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _say(line: str) -> None:
    """Print one line to stdout at once (stdout is often a pipe)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _warn(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _printer(out: Callable[[str], object], side: str) -> Callable[..., None]:
    def event(name: str, *args: object) -> None:
        detail = ", ".join(repr(arg) for arg in args)
        out(f"{side:<6} {name}({detail})")

    return event


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _format_address(address: tuple[str, int] | str | None) -> str:
    if isinstance(address, tuple):
        return _host_port(address[0], address[1])
    return str(address)


def _describe(exc: BaseException, target: str) -> tuple[str, int]:
    """The error line (without the ``trio-netstream: `` prefix) and exit code."""
    code = getattr(exc, "code", None) or node_code(exc)
    suffix = f" ({code})" if code else ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "certificate verify failed"
        return f"certificate verification failed: {target}: {reason}{suffix}", EXIT_TLS
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return f"TLS handshake failed: {target}: {reason}{suffix}", EXIT_TLS
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target}: {exc.strerror}{suffix}", EXIT_NETWORK
    if isinstance(exc, OSError):
        # os.strerror: Trio's connect errors say "error connecting to (...): ..."
        what = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        return f"{what[:1].lower()}{what[1:]}: {target}{suffix}", EXIT_NETWORK
    if isinstance(exc, ProtocolError):
        return f"{exc}: {target}", EXIT_NETWORK
    return f"{type(exc).__name__}: {exc}: {target}", EXIT_NETWORK


async def _until_signal(body: Callable[[], Awaitable[int]]) -> int:
    """Run *body* until it returns its exit code, or until SIGINT (130) or
    SIGTERM (0) cancels it. An exception from *body* is re-raised unwrapped."""
    codes: list[int] = []
    failures: list[Exception] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                try:
                    codes.append(await body())
                except Exception as exc:
                    failures.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            async for signum in signals:
                codes.append(EXIT_SIGINT if signum == signal.SIGINT else EXIT_OK)
                nursery.cancel_scope.cancel()
                break
    if failures:
        raise failures[0]
    return codes[0]


# -- certificates ---------------------------------------------------------------


class Certificates(NamedTuple):
    """A throwaway CA and a server certificate for localhost, 127.0.0.1 and ::1 (PEM)."""

    ca_pem: bytes
    chain_pem: bytes
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="trio-netstream-") as directory:
            chain = Path(directory) / "chain.pem"
            key = Path(directory) / "key.pem"
            chain.write_bytes(self.chain_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(chain, key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))


def throwaway_certificates(*, use_trustme: bool = True) -> Certificates:
    """A fresh CA and server certificate: trustme's when it is installed,
    else made here with ``cryptography`` (a dependency of this package)."""
    if use_trustme:
        try:
            import trustme
        except ImportError:
            pass
        else:
            ca = trustme.CA()
            issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
            chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
            return Certificates(ca.cert_pem.bytes(), chain, issued.private_key_pem.bytes())
    return _generate_certificates()


def _generate_certificates() -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trio-netstream"),
            x509.NameAttribute(NameOID.COMMON_NAME, "trio-netstream throwaway CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Certificates(
        ca_cert.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _server_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """The ``echo --tls-cert/--tls-key`` context (exit 3 if it cannot be loaded)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ValueError) as exc:
        files = certfile if keyfile is None else f"{certfile} / {keyfile}"
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise Failure(f"cannot load certificate and key: {files}: {reason}", EXIT_TLS) from exc
    return context


def _client_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The ``connect --tls/--starttls`` context (exit 3 if --ca-file cannot be loaded)."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise Failure(f"cannot load CA file: {ca_file}: {reason}", EXIT_TLS) from exc
    return context


# -- demo -----------------------------------------------------------------------


async def demo(
    port: int = 0,
    host: str = "127.0.0.1",
    out: Callable[[str], object] = print,
    *,
    tls: bool = False,
) -> None:
    """The seed's echo server, and a client that says two lines and ends.

    With *tls*, both sides speak TLS from the first byte, with a throwaway
    certificate, and both print their ``'secure'`` event.
    """
    server_event = _printer(out, "server")
    client_event = _printer(out, "client")
    server_options: dict[str, Any] = {}
    client_options: dict[str, Any] = {}
    if tls:
        certificates = throwaway_certificates()
        server_options["ssl"] = certificates.server_context()
        client_options["ssl"] = certificates.client_context()
    served = trio.Event()  # the server's side of the one connection has closed

    def echo(stream: Stream) -> None:
        # The seed's example, line by line.
        stream.set_encoding("utf8")
        server_event("connection", f"{stream.remote_address}:{stream.remote_port}")

        def on_connect() -> None:
            server_event("connect")
            stream.write("hello\r\n")

        def on_data(data: str) -> None:
            server_event("data", data)
            stream.write(data)

        def on_end() -> None:
            server_event("end")
            stream.write("goodbye\r\n")
            stream.end()

        stream.on("connect", on_connect)
        if tls:
            stream.on("secure", lambda: server_event("secure"))
        stream.on("data", on_data)
        stream.on("end", on_end)
        stream.on("close", lambda had_error: server_event("close", had_error))
        stream.on("close", lambda _had_error: served.set())

    async with create_server(echo, **server_options) as server:
        server.on("listening", lambda: server_event("listening", server.address()))
        server.on("close", lambda: server_event("close"))
        await server.listen(port, host)
        address = server.address()
        assert isinstance(address, tuple)
        client = create_connection(address[1], host, **client_options)
        client.set_encoding("utf8")
        client.on("connect", lambda: client_event("connect"))
        if tls:

            def on_secure() -> None:
                client_event("secure")
                out(f"client verify_peer() -> {client.verify_peer()}")

            client.on("secure", on_secure)
        client.on("data", lambda data: client_event("data", data))
        client.on("drain", lambda: client_event("drain"))
        client.on("end", lambda: client_event("end"))
        client.on("close", lambda had_error: client_event("close", had_error))
        async with client:
            client.write("ping\r\n")
            client.end("pong\r\n")
        # Both ends close on their own schedule; wait for the server's so the
        # transcript reads the same on every run.
        await served.wait()
        out(f"client bytes_read={client.bytes_read} bytes_written={client.bytes_written}")
        server.close()


# -- echo -----------------------------------------------------------------------


def _chunk_text(chunk: bytes) -> str:
    if len(chunk) <= 64:
        return repr(chunk)
    return f"{chunk[:64]!r}... ({len(chunk)} bytes)"


def _error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None) or node_code(exc)
    return f"{type(exc).__name__}: {exc}" + (f" ({code})" if code else "")


async def echo_server(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    path: str | None = None,
    context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    out: Callable[[str], object] = _say,
) -> int:
    """Serve the seed's echo protocol until cancelled, printing every event.

    Each connection gets ``hello\\r\\n``, its data echoed (with backpressure:
    reading pauses until a slow reader has taken the echo), and
    ``goodbye\\r\\n`` before the server ends it after the client's end.
    """
    pid = os.getpid()
    numbers = itertools.count(1)

    def on_connection(stream: Stream) -> None:
        number = next(numbers)

        def log(text: str) -> None:
            out(f"[pid {pid}] #{number} {text}")

        if stream.remote_port is not None:
            peer = _host_port(str(stream.remote_address), stream.remote_port)
        else:
            peer = "unix socket"
        log(f"connection from {peer}")

        def on_connect() -> None:
            log("connect")
            stream.write("hello\r\n")

        def on_data(chunk: bytes) -> None:
            log(f"data {_chunk_text(chunk)}")
            if not stream.write(chunk):
                stream.pause()
                stream.once("drain", stream.resume)

        def on_end() -> None:
            log("end")
            stream.write("goodbye\r\n")
            stream.end()

        stream.on("connect", on_connect)
        stream.on("secure", lambda: log("secure"))
        stream.on("data", on_data)
        stream.on("end", on_end)
        stream.on("error", lambda exc: log(f"error {_error_text(exc)}"))
        stream.on("close", lambda had_error: log(f"close({had_error})"))

    async with create_server(on_connection, ssl=context) as server:
        if path is not None:
            await server.listen(path)
        else:
            await server.listen(port, host, reuse_port=reuse_port)
        out(f"listening on {_format_address(server.address())} (pid {pid})")
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover - sleep_forever() never returns


class _LineReader:
    """Whole lines from a child's stdout."""

    def __init__(self, source: trio.abc.ReceiveStream) -> None:
        self._source = source
        self._buffer = bytearray()

    async def next_line(self) -> str | None:
        """The next line without its newline, or ``None`` at EOF."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line.decode("utf-8", "replace")
            chunk = await self._source.receive_some()
            if not chunk:
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line.decode("utf-8", "replace")
                return None
            self._buffer += chunk


async def _stop(
    processes: list[trio.Process], readers: list[_LineReader], out: Callable[[str], object]
) -> None:
    """SIGTERM every worker and relay what they print until they exit; SIGKILL
    the ones still alive after 5 s; reap all."""
    for process in processes:
        if process.returncode is None:
            process.terminate()

    async def finish(process: trio.Process, reader: _LineReader | None) -> None:
        if reader is not None:
            while (line := await reader.next_line()) is not None:
                out(line)
        await process.wait()

    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            for index, process in enumerate(processes):
                nursery.start_soon(
                    finish, process, readers[index] if index < len(readers) else None
                )
    for process in processes:
        if process.returncode is None:  # pragma: no cover - a stuck worker
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def echo_workers(
    *,
    workers: int,
    port: int,
    host: str,
    tls_args: Sequence[str] = (),
    out: Callable[[str], object] = _say,
) -> int:
    """Run *workers* ``echo --reuse-port`` processes on one port until cancelled.

    The port is bound here first (``SO_REUSEPORT``, not listening: the kernel
    hands connections only to the workers' listening sockets), so ``port=0``
    picks one port for all of them. Their output is relayed line by line.
    Returns 1 if a worker fails.
    """
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as reserved:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(sockaddr)
        bound_host, bound_port = reserved.getsockname()[:2]
        command = [
            sys.executable,
            "-m",
            "trio_netstream",
            "echo",
            "--host",
            str(bound_host),
            "--port",
            str(bound_port),
            "--reuse-port",
            *tls_args,
        ]
        processes: list[trio.Process] = []
        readers: list[_LineReader] = []
        try:
            for _ in range(workers):
                process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
                processes.append(process)
                assert process.stdout is not None
                readers.append(_LineReader(process.stdout))
            for process, reader in zip(processes, readers, strict=True):
                line = await reader.next_line()
                if line is None or not line.startswith("listening on "):
                    code = await process.wait()
                    raise Failure(
                        f"echo worker {process.pid} failed to start (exit code {code})",
                        code if code > 0 else EXIT_NETWORK,
                    )
            pids = ", ".join(str(process.pid) for process in processes)
            out(
                f"listening on {_host_port(str(bound_host), int(bound_port))} "
                f"(pid {os.getpid()}, workers {pids})"
            )
            failed: list[str] = []
            async with trio.open_nursery() as nursery:

                async def relay(process: trio.Process, reader: _LineReader) -> None:
                    while (line := await reader.next_line()) is not None:
                        out(line)
                    code = await process.wait()
                    failed.append(f"echo worker {process.pid} exited (exit code {code})")
                    nursery.cancel_scope.cancel()

                for process, reader in zip(processes, readers, strict=True):
                    nursery.start_soon(relay, process, reader)
            raise Failure(failed[0], EXIT_NETWORK)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(processes, readers, out)


# -- connect --------------------------------------------------------------------


class _StartTLS:
    """The SMTP-style STARTTLS dialogue of ``connect --starttls``.

    Waits for the ``220`` greeting, sends ``EHLO``, waits for ``250``, sends
    ``STARTTLS``, waits for ``220`` and calls ``set_secure()``. Replies may be
    multi-line (``250-...`` lines, then ``250 ...``). Anything else, or bytes
    after the final ``220`` (they could be injected plaintext), is a
    :class:`ProtocolError`.
    """

    def __init__(
        self,
        stream: Stream,
        context: ssl.SSLContext,
        hostname: str | None,
        note: Callable[[str], object],
    ) -> None:
        self.stream = stream
        self.context = context
        self.hostname = hostname
        self.note = note
        self.buffer = bytearray()
        self.step = "greeting"

    @property
    def negotiating(self) -> bool:
        return self.step != "upgrading"

    def _reply(self) -> tuple[int, str] | None:
        """Take one complete reply from the buffer: its code and last line."""
        start = 0
        while (end := self.buffer.find(b"\n", start)) >= 0:
            line = bytes(self.buffer[start:end]).rstrip(b"\r").decode("utf-8", "replace")
            start = end + 1
            if len(line) >= 3 and line[:3].isdigit() and line[3:4] != "-":
                del self.buffer[:start]
                return int(line[:3]), line
        return None

    def _send(self, command: str) -> None:
        self.note(f"> {command}")
        self.stream.write(f"{command}\r\n")

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while self.negotiating and (reply := self._reply()) is not None:
            code, line = reply
            expected = {"greeting": 220, "ehlo": 250, "starttls": 220}[self.step]
            if code != expected:
                what = {"greeting": "greeting", "ehlo": "EHLO", "starttls": "STARTTLS"}[self.step]
                self.stream.destroy(
                    ProtocolError(f"STARTTLS: expected {expected} to {what}, got {line!r}")
                )
                return
            if self.step == "greeting":
                self._send(f"EHLO {self._client_name()}")
                self.step = "ehlo"
            elif self.step == "ehlo":
                self._send("STARTTLS")
                self.step = "starttls"
            else:
                self.step = "upgrading"
                if self.buffer:
                    self.stream.destroy(
                        ProtocolError("STARTTLS: the server sent plaintext after its 220 reply")
                    )
                    return
                self.stream.set_secure(self.context, server_hostname=self.hostname)

    def _client_name(self) -> str:
        """An address literal for EHLO (RFC 5321, 4.1.3)."""
        address = self.stream.local_address
        if not address:
            return "localhost"
        return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


async def _read_stdin() -> bytes:
    def read() -> bytes:
        try:
            return os.read(0, 64 * 1024)
        except OSError:  # no stdin at all
            return b""

    return await trio.to_thread.run_sync(read, abandon_on_cancel=True)


async def connect_client(
    *,
    host: str | None,
    port: int | None,
    path: str | None,
    tls: bool = False,
    starttls: bool = False,
    encoding: str | None = None,
    context: ssl.SSLContext | None = None,
    verbose: bool = False,
) -> int:
    """The ``connect`` command: relay stdin to the stream and the stream to stdout.

    Stdin's end calls ``end()`` (a half-close: the answer is still read);
    returns once the stream has closed: 0, or the exit code of its error.
    The stream does not stay half-open (``allow_half_open=False``): when the
    server ends, the client ends too.
    """
    options: dict[str, Any] = {"allow_half_open": False}
    if tls:
        options["ssl"] = context if context is not None else True
    stream = Stream(**options)
    if path is not None:
        target = path
        stream.connect(path)
    else:
        assert host is not None and port is not None
        target = _host_port(host, port)
        stream.connect(port, host)

    def note(text: str) -> None:
        if verbose:
            _warn(text)

    decoder: Decoder | None = None if encoding is None else get_decoder(encoding)
    errors: list[BaseException] = []
    starting = trio.Event()
    negotiation: _StartTLS | None = None
    if starttls:
        negotiation = _StartTLS(stream, context or ssl.create_default_context(), host, note)
    else:
        starting.set()

    def emit(data: bytes | str) -> bool:
        """Write to stdout; ``False`` (and the stream destroyed) if stdout is gone."""
        try:
            if isinstance(data, bytes):
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                sys.stdout.write(data)
                sys.stdout.flush()
        except BrokenPipeError:  # `connect ... | head`: stop quietly (exit code 0)
            _silence_stdout()
            stream.destroy()
            return False
        return True

    def on_data(chunk: bytes) -> None:
        shown = emit(chunk if decoder is None else decoder.decode(chunk))
        if shown and negotiation is not None and negotiation.negotiating:
            negotiation.feed(chunk)

    def on_secure() -> None:
        insecure = context is not None and context.verify_mode == ssl.CERT_NONE
        note("secure: " + ("peer NOT verified (--insecure)" if insecure else "peer verified"))
        starting.set()

    def on_end() -> None:
        note("end")
        if decoder is not None:
            emit(decoder.flush())  # what the decoder still holds (a base64 tail...)

    stream.on("connect", lambda: note(f"connected to {target}"))
    stream.on("secure", on_secure)
    stream.on("data", on_data)
    stream.on("end", on_end)
    stream.on("error", errors.append)
    stream.on("close", lambda had_error: note(f"closed (had_error={had_error})"))

    async def pump() -> None:
        await starting.wait()
        while True:
            chunk = await _read_stdin()
            try:
                if not chunk:
                    stream.end()
                    return
                if not stream.write(chunk):
                    await stream.drain()
            except (StreamStateError, OSError):
                return  # the stream closed: its 'close' ends the command

    async with trio.open_nursery() as nursery:
        async with stream:
            nursery.start_soon(pump)
        nursery.cancel_scope.cancel()
    if errors:
        message, code = _describe(errors[0], target)
        raise Failure(message, code)
    return EXIT_OK


# -- the command line -----------------------------------------------------------


def _port(allow_zero: bool) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
        low = 0 if allow_zero else 1
        if not low <= value <= 65535:
            raise argparse.ArgumentTypeError(f"port must be in {low}..65535, not {value}")
        return value

    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _encoding(text: str) -> str:
    try:
        return normalize(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


_ECHO_DESCRIPTION = """\
The seed's echo server: on connect it writes "hello\\r\\n", then echoes every
byte it receives; when the client ends, it writes "goodbye\\r\\n" and ends too.

It prints "listening on HOST:PORT (pid N)" once listening, then one line per
connection event: "[pid N] #K connection from HOST:PORT", "connect",
"secure", "data b'...'", "end", "error ...", "close(False)". SIGINT or
SIGTERM stops it (connections are destroyed; exit code 130 or 0).

--workers N starts N "echo --reuse-port" processes on one port (chosen first
when --port is 0); the first line is then "listening on HOST:PORT (pid N,
workers W1, W2...)", followed by the workers' lines. If a worker dies, the
others are stopped and the command exits with code 1."""

_CONNECT_DESCRIPTION = """\
A netcat-like client: stdin goes to the socket, received data to stdout.
The end of stdin ends the writable side (a half-close: the answer is still
read); the command exits when the connection has closed. When the server
ends, the client ends too.

--tls      TLS from the first byte; the server's name is HOST.
--starttls SMTP-style STARTTLS (RFC 3207), then the relay: wait for the
           220 greeting, send "EHLO [<local address>]", wait for 250, send
           "STARTTLS", wait for 220, run the TLS handshake; stdin is read only
           once TLS is up (send EHLO again first, as SMTP requires). The
           plaintext replies are printed too. Any other reply, or plaintext
           after the final 220, aborts with exit code 1.

Certificates are verified against the system's CAs, or --ca-file; the
server's name must match (not for --unix)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Node.js net streams on Trio.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run_demo = commands.add_parser(
        "demo",
        help="echo server and client on loopback, printing the event transcript",
        description="The seed's echo server and a client on loopback,\n"
        "printing the event transcript of both sides.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run_demo.add_argument(
        "--port", type=_port(True), default=0, help="port (default 0: any free port)"
    )
    run_demo.add_argument(
        "--tls",
        action="store_true",
        help="TLS from the first byte, with a throwaway certificate ('secure' events)",
    )

    echo = commands.add_parser(
        "echo",
        help="the seed's echo server, printing every connection event",
        description=_ECHO_DESCRIPTION,
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    echo.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    echo.add_argument(
        "--port", type=_port(True), default=7000, help="TCP port (default: 7000; 0: any free port)"
    )
    echo.add_argument("--unix", metavar="PATH", help="listen on a UNIX socket instead of TCP")
    echo.add_argument("--tls-cert", metavar="FILE", help="serve TLS: certificate chain (PEM)")
    echo.add_argument("--tls-key", metavar="FILE", help="private key (PEM; default: in --tls-cert)")
    echo.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="N processes sharing the TCP port (SO_REUSEPORT; default 1)",
    )
    echo.add_argument(
        "--reuse-port",
        action="store_true",
        help="set SO_REUSEPORT, to share the port with other processes",
    )

    connect = commands.add_parser(
        "connect",
        help="netcat-like client: stdin to the socket, received data to stdout",
        description=_CONNECT_DESCRIPTION,
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s (HOST PORT | --unix PATH) [options]",
    )
    connect.add_argument("host", nargs="?", metavar="HOST", help="host name or address")
    connect.add_argument("port", nargs="?", type=_port(False), metavar="PORT", help="TCP port")
    connect.add_argument("--unix", metavar="PATH", help="connect to a UNIX socket")
    mode = connect.add_mutually_exclusive_group()
    mode.add_argument("--tls", action="store_true", help="TLS from the first byte")
    mode.add_argument("--starttls", action="store_true", help="SMTP-style STARTTLS (see above)")
    trust = connect.add_mutually_exclusive_group()
    trust.add_argument("--ca-file", metavar="FILE", help="trust the CA certificates in FILE (PEM)")
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    connect.add_argument(
        "--encoding",
        type=_encoding,
        metavar="E",
        help="decode received data for output (utf8, latin1, hex, base64...); "
        "default: raw bytes. stdin is always sent as raw bytes",
    )
    connect.add_argument("-v", "--verbose", action="store_true", help="report progress on stderr")

    for subparser in (run_demo, echo, connect):
        subparser.set_defaults(subparser=subparser)
    commands.add_parser(
        "bench",
        help="benchmarks against raw trio, asyncio and Node.js (bench --help for options)",
        add_help=False,
    )
    return parser


def _check(args: argparse.Namespace) -> None:
    """Checks argparse cannot express (they exit with code 2)."""
    parser: argparse.ArgumentParser = args.subparser
    if args.command == "echo":
        if args.tls_key is not None and args.tls_cert is None:
            parser.error("--tls-key needs --tls-cert")
        if args.unix is not None and args.workers > 1:
            parser.error("--workers needs TCP (SO_REUSEPORT), not --unix")
    elif args.command == "connect":
        if args.unix is not None:
            if args.host is not None:
                parser.error("give either HOST PORT or --unix PATH, not both")
        elif args.host is None or args.port is None:
            parser.error("give HOST PORT, or --unix PATH")
        if (args.ca_file is not None or args.insecure) and not (args.tls or args.starttls):
            parser.error("--ca-file and --insecure need --tls or --starttls")


def _run_echo(args: argparse.Namespace) -> int:
    if args.workers > 1:
        tls_args: list[str] = []
        if args.tls_cert is not None:
            _server_context(args.tls_cert, args.tls_key)  # fail here, not in every worker
            tls_args = ["--tls-cert", args.tls_cert]
            if args.tls_key is not None:
                tls_args += ["--tls-key", args.tls_key]
        return trio.run(
            _until_signal,
            lambda: echo_workers(
                workers=args.workers, port=args.port, host=args.host, tls_args=tls_args
            ),
        )
    context = None if args.tls_cert is None else _server_context(args.tls_cert, args.tls_key)
    return trio.run(
        _until_signal,
        lambda: echo_server(
            port=args.port,
            host=args.host,
            path=args.unix,
            context=context,
            reuse_port=args.reuse_port,
        ),
    )


def _run_connect(args: argparse.Namespace) -> int:
    context = None
    if args.tls or args.starttls:
        context = _client_context(args.ca_file, args.insecure)
    return trio.run(
        _until_signal,
        lambda: connect_client(
            host=args.host,
            port=args.port,
            path=args.unix,
            tls=args.tls,
            starttls=args.starttls,
            encoding=args.encoding,
            context=context,
            verbose=args.verbose,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["bench"]:
        from ._bench import main as bench_main

        return bench_main(words[1:])
    parser = _parser()
    args = parser.parse_args(words)
    _check(args)
    try:
        if args.command == "demo":
            trio.run(functools.partial(demo, args.port, args.host, tls=args.tls))
            return EXIT_OK
        if args.command == "echo":
            return _run_echo(args)
        return _run_connect(args)
    except Failure as failure:
        _warn(failure.message)
        return failure.exit_code
    except ssl.SSLError as exc:
        _warn(str(exc))
        return EXIT_TLS
    except OSError as exc:
        _warn(str(exc))
        return EXIT_NETWORK
    except KeyboardInterrupt:
        return EXIT_SIGINT
