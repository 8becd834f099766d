"""``connect``: a netcat-like client, stdin to the stream and the stream to stdout.

Stdin is read in a worker thread, so it may be a terminal, a pipe or a file;
with ``--starttls`` it is read only once TLS is up (:class:`StartTLS` runs
the dialogue before that). ``--family``, ``--local-address``,
``--local-port`` and ``--connect-timeout`` are the library's client options
of the same names (``connect_timeout`` in milliseconds); ``--alpn`` is
``alpn_protocols``, and the protocol agreed is printed after the handshake
(``ALPN: h2``, or ``ALPN: none``).
"""

from __future__ import annotations

import errno
import os
import ssl
import sys
from collections.abc import Sequence
from typing import Any

import trio

from .. import Stream, StreamStateError
from .._encoding import Decoder, get_decoder
from ._output import EXIT_OK, Failure, describe, host_port, silence_stdout, warn
from ._starttls import DEFAULT_TIMEOUT, StartTLS


async def connect_client(
    *,
    host: str | None,
    port: int | None,
    path: str | None,
    tls: bool = False,
    starttls: bool = False,
    starttls_timeout: float = DEFAULT_TIMEOUT,
    encoding: str | None = None,
    context: ssl.SSLContext | None = None,
    verbose: bool = False,
    family: int = 0,
    local_address: str | None = None,
    local_port: int | None = None,
    connect_timeout: float | None = None,
    alpn: Sequence[str] | None = None,
) -> int:
    """The ``connect`` command: relay stdin to the stream and the stream to stdout.

    Stdin's end calls ``end()`` (a half-close: the answer is still read);
    returns once the stream has closed: 0, or the exit code of its error.
    The stream does not stay half-open (``allow_half_open=False``): when the
    server ends, the client ends too. With *starttls*, TLS must be up within
    *starttls_timeout* seconds of the start (connection, dialogue and
    handshake), else the command fails. *family*, *local_address*,
    *local_port* and *connect_timeout* (milliseconds) are the stream's
    options of those names. *alpn*: the ALPN protocols to offer; the one
    agreed is printed on stderr after the handshake, verbose or not.
    """
    options: dict[str, Any] = {
        "allow_half_open": False,
        "family": family,
        "local_address": local_address,
        "local_port": local_port,
        "connect_timeout": connect_timeout,
    }
    if tls:
        options["ssl"] = context if context is not None else True
        options["alpn_protocols"] = None if alpn is None else list(alpn)
    stream = Stream(**options)
    if path is not None:
        target = path
        stream.connect(path)
    else:
        assert host is not None and port is not None
        target = host_port(host, port)
        stream.connect(port, host)
    decoder = None if encoding is None else get_decoder(encoding)
    relay = _Relay(stream, target, context, decoder, verbose=verbose)
    relay.local = _local_end(local_address, local_port)
    relay.alpn = None if alpn is None else tuple(alpn)
    if starttls:
        relay.negotiation = StartTLS(
            stream, context or ssl.create_default_context(), host, relay.note, alpn=relay.alpn
        )
        relay.negotiation_timeout = starttls_timeout
    else:
        relay.starting.set()
    relay.listen()
    return await relay.run()


def _local_end(address: str | None, port: int | None) -> str | None:
    """The local end asked for, as error lines name it (``None``: any)."""
    if port is None:
        return address
    return f"port {port}" if address is None else host_port(address, port)


class _Relay:
    """The stream's events printed and its data written to stdout; stdin
    written to the stream once it may be (at once, or after STARTTLS)."""

    def __init__(
        self,
        stream: Stream,
        target: str,
        context: ssl.SSLContext | None,
        decoder: Decoder | None,
        *,
        verbose: bool,
    ) -> None:
        self.stream = stream
        self.target = target
        self.context = context
        self.decoder = decoder
        self.verbose = verbose
        self.errors: list[BaseException] = []
        self.starting = trio.Event()
        self.negotiation: StartTLS | None = None
        self.negotiation_timeout = DEFAULT_TIMEOUT
        self.local: str | None = None  # --local-address/--local-port, for error lines
        self.alpn: tuple[str, ...] | None = None  # --alpn: the protocols offered

    def note(self, text: str) -> None:
        if self.verbose:
            warn(text)

    def emit(self, data: bytes | str) -> bool:
        """Write to stdout; ``False`` (and the stream destroyed) if stdout is gone."""
        try:
            if isinstance(data, bytes):
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                sys.stdout.write(data)
                sys.stdout.flush()
        except BrokenPipeError:  # `connect ... | head`: stop quietly (exit code 0)
            silence_stdout()
            self.stream.destroy()
            return False
        return True

    def listen(self) -> None:
        """Add the stream's listeners (data to stdout, events to :meth:`note`)."""
        stream, note, decoder = self.stream, self.note, self.decoder

        def on_data(chunk: bytes) -> None:
            shown = self.emit(chunk if decoder is None else decoder.decode(chunk))
            negotiation = self.negotiation
            if shown and negotiation is not None and negotiation.negotiating:
                negotiation.feed(chunk)

        def on_secure() -> None:
            insecure = self.context is not None and self.context.verify_mode == ssl.CERT_NONE
            note("secure: " + ("peer NOT verified (--insecure)" if insecure else "peer verified"))
            if self.alpn is not None:  # asked for: printed verbose or not
                warn(f"ALPN: {stream.alpn_protocol or 'none'}")
            self.starting.set()

        def on_end() -> None:
            note("end")
            if self.negotiation is not None:
                self.negotiation.ended()  # before TLS: a failure
            if decoder is not None:
                self.emit(decoder.flush())  # what the decoder still holds (a base64 tail...)

        stream.on("connect", lambda: note(f"connected to {self.reached()}"))
        stream.on("secure", on_secure)
        stream.on("data", on_data)
        stream.on("end", on_end)
        stream.on("error", self.errors.append)
        stream.on("close", lambda had_error: note(f"closed (had_error={had_error})"))

    def reached(self) -> str:
        """The target, with the address reached when HOST was a name, and the
        local end when one was asked for."""
        stream, where = self.stream, self.target
        remote, port = stream.remote_address, stream.remote_port
        if remote is not None and port is not None and host_port(remote, port) != where:
            where += f" ({host_port(remote, port)})"
        if self.local is not None and stream.local_address is not None:
            where += f" from {host_port(stream.local_address, stream.local_port or 0)}"
        return where

    async def pump(self) -> None:
        """Stdin to the stream, from when it may be written until stdin ends."""
        await self.starting.wait()
        while True:
            chunk = await _read_stdin()
            try:
                if not chunk:
                    self.stream.end()
                    return
                if not self.stream.write(chunk):
                    await self.stream.drain()
            except (StreamStateError, OSError):
                return  # the stream closed: its 'close' ends the command

    async def run(self) -> int:
        """Run the stream until it has closed: 0, or a :class:`Failure`."""
        async with trio.open_nursery() as nursery:
            async with self.stream:
                nursery.start_soon(self.pump)
                if self.negotiation is not None:
                    nursery.start_soon(
                        self.negotiation.deadline, self.negotiation_timeout, self.starting
                    )
            nursery.cancel_scope.cancel()
        if self.errors:
            error, target = self.errors[0], self.target
            if self.local is not None and getattr(error, "errno", None) in _LOCAL_ERRNOS:
                target = f"from {self.local} to {target}"  # the local end is the culprit
            message, code = describe(error, target)
            if self.alpn is not None and _refused_alpn(error):
                message = (
                    f"TLS handshake failed: {target}: the server accepts none of the ALPN "
                    f"protocols offered ({','.join(self.alpn)}): no_application_protocol alert"
                )
            raise Failure(message, code)
        return EXIT_OK


def _refused_alpn(error: BaseException) -> bool:
    """The server ended the handshake with a no_application_protocol alert:
    it takes none of the protocols offered (and refuses to go on without)."""
    if not isinstance(error, ssl.SSLError):
        return False
    text = f"{error.reason or ''} {error}".lower().replace("_", " ")
    return "no application protocol" in text


#: Errors about the local end (--local-address, --local-port): in use, not ours.
_LOCAL_ERRNOS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


async def _read_stdin() -> bytes:
    def read() -> bytes:
        try:
            return os.read(0, 64 * 1024)
        except OSError:  # no stdin at all
            return b""

    return await trio.to_thread.run_sync(read, abandon_on_cancel=True)
