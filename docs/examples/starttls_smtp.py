"""A tiny SMTP-style server that upgrades connections with STARTTLS.

This is the shape of a Node.js ``net`` server ported to ``trio_netstream``:
one ``'connection'`` listener registers ``'data'``, ``'secure'``, ``'error'``
and ``'close'`` listeners on each stream, and everything else happens in
those listeners. It speaks just enough SMTP (RFC 5321 / RFC 3207) for
``openssl s_client -starttls smtp`` and mail clients to upgrade to TLS::

    S: 220 localhost ESMTP trio_netstream
    C: EHLO client.example
    S: 250-localhost Hello client.example
    S: 250-STARTTLS
    S: 250 HELP
    C: STARTTLS
    S: 220 Ready to start TLS
       ... TLS handshake (stream.set_secure(context)), then 'secure' ...
    C: EHLO client.example
    S: 250-localhost Hello client.example
    S: 250 HELP                      (no STARTTLS any more)
    C: MAIL FROM:<me@example.com>
    S: 250 MAIL FROM:<me@example.com>   (any other line is echoed back)
    C: QUIT
    S: 221 Bye                       (then the server ends the connection)

The rules, in full (commands are case-insensitive):

* ``EHLO <domain>`` / ``HELO <domain>``: a multi-line ``250`` reply that
  advertises ``STARTTLS`` until the connection is secure.
* ``STARTTLS``: ``220 Ready to start TLS``, then the TLS handshake. With
  arguments: ``501``; on a connection that is already secure: ``503``.
* ``QUIT``: ``221 Bye``, then the server ends the connection.
* An empty line is ignored; any other line is echoed as ``250 <line>``.
* A line longer than :data:`MAX_LINE` characters: ``500 Line too long``,
  then the connection is ended.

Run it::

    python docs/examples/starttls_smtp.py --cert cert.pem --key key.pem --port 2525
    openssl s_client -starttls smtp -connect 127.0.0.1:2525 -CAfile ca.pem

From a test (or any Trio program), start it in a nursery::

    server = await nursery.start(serve, context)
    host, port = server.address()
    ...
    server.close()   # stop accepting; serve() returns once every session ended
"""

from __future__ import annotations

import argparse
import logging
import ssl
from typing import Any

import trio

import trio_netstream as net

log = logging.getLogger("starttls_smtp")

#: The longest line (without its line ending) a client may send.
MAX_LINE = 1000


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A TLS server context for *certfile* (PEM, with its chain) and *keyfile*.

    It holds no CA certificates, so clients are not asked for a certificate,
    and TLS renegotiation is switched off (a client-initiated renegotiation
    is a cheap way to make a server do expensive handshakes).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return context


class SmtpSession:
    """The conversation with one client: a line buffer and the command rules.

    All the work happens in the stream's listeners, as in a Node.js server.
    ``'data'`` may bring part of a line, or several lines at once, so the
    text goes into a buffer and only complete lines are answered.
    """

    def __init__(self, stream: net.Stream, context: ssl.SSLContext, name: str) -> None:
        self.stream = stream
        self.context = context
        self.name = name
        self.buffer = ""
        # True from STARTTLS until 'secure': nothing the client sends in
        # between is trusted (see on_data).
        self.upgrading = False
        self.secure = False
        self.quitting = False

        stream.set_encoding("utf8")  # split multi-byte characters are handled for us
        stream.on("data", self.on_data)
        stream.on("secure", self.on_secure)
        stream.on("error", self.on_error)
        stream.on("close", self.on_close)

    # -- listeners -----------------------------------------------------------

    def greet(self) -> None:
        """Send the greeting. It is queued now and sent once the stream runs."""
        self.reply(f"220 {self.name} ESMTP trio_netstream")

    def on_data(self, text: str) -> None:
        """Buffer *text* and answer every complete line in it."""
        if self.upgrading or self.quitting:
            # Plaintext that arrived after STARTTLS (or QUIT) in the same
            # packet is dropped, never interpreted: a man in the middle could
            # have injected it (CVE-2011-0411). trio_netstream already sends
            # every byte read after set_secure() into TLS, never to 'data'.
            return
        self.buffer += text
        while "\n" in self.buffer and not (self.upgrading or self.quitting):
            line, self.buffer = self.buffer.split("\n", 1)
            self.handle(line.removesuffix("\r"))
        if self.upgrading or self.quitting:
            self.buffer = ""  # the rest of the packet, as above
        elif len(self.buffer) > MAX_LINE:
            self.buffer = ""
            self.quitting = True
            self.stream.end("500 Line too long\r\n")

    def on_secure(self) -> None:
        """TLS is up. The client starts again with EHLO (RFC 3207, 4.2)."""
        self.upgrading = False
        self.secure = True
        log.info("%r is secure", self.stream)

    def on_error(self, error: BaseException) -> None:
        """A network or TLS failure on this connection; ``'close'`` follows."""
        log.info("%r failed: %r", self.stream, error)

    def on_close(self, had_error: bool) -> None:
        log.info("%r closed (had_error=%s)", self.stream, had_error)

    # -- the protocol ------------------------------------------------------

    def reply(self, *lines: str) -> None:
        """Send one reply line (or several, for a multi-line reply)."""
        self.stream.write("".join(f"{line}\r\n" for line in lines))

    def handle(self, line: str) -> None:
        """Answer one complete line (without its line ending)."""
        verb, _, argument = line.partition(" ")
        verb = verb.upper()
        if verb in ("EHLO", "HELO"):
            # Multi-line reply: "250-" on every line but the last, "250 " on it.
            extensions = ["HELP"] if self.secure else ["STARTTLS", "HELP"]
            lines = [f"{self.name} Hello {argument.strip() or 'there'}", *extensions]
            self.reply(*(f"250-{text}" for text in lines[:-1]), f"250 {lines[-1]}")
        elif verb == "STARTTLS":
            if argument.strip():
                self.reply("501 Syntax error (no parameters allowed)")
            elif self.secure:
                self.reply("503 Bad sequence of commands: TLS is already active")
            else:
                self.reply("220 Ready to start TLS")
                # The reply above was written first, so it goes out in
                # plaintext; the handshake follows, then 'secure'.
                self.upgrading = True
                self.stream.set_secure(self.context)
        elif verb == "QUIT":
            self.quitting = True
            self.stream.end("221 Bye\r\n")  # flush, then close our side
        elif line:
            self.reply(f"250 {line}")


async def serve(
    context: ssl.SSLContext,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    name: str = "localhost",
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SMTP with STARTTLS on *host*:*port* until the server is closed.

    Use it with ``await nursery.start(serve, context)``: the value it starts
    with is the :class:`trio_netstream.Server` (``server.address()`` gives
    the port; more ``'connection'`` listeners may be added to it).
    ``server.close()`` stops accepting; :func:`serve` returns once every
    session has closed. Cancelling it destroys every open session.

    Args:
        context: the server's TLS context (see :func:`server_context`).
        port: the TCP port; ``0`` picks a free one.
        host: the address to listen on.
        name: the server name used in replies.
    """

    def on_connection(stream: net.Stream) -> None:
        SmtpSession(stream, context, name).greet()

    # allow_half_open=False: when a client hangs up without QUIT, end our side
    # too, so the session closes instead of waiting for a client that is gone.
    async with net.create_server(on_connection, allow_half_open=False) as server:
        await server.listen(port, host)
        log.info("listening on %s", server.address())
        task_status.started(server)


def main(argv: list[str] | None = None) -> None:
    """``python starttls_smtp.py --cert cert.pem --key key.pem [--port 2525]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=2525, help="TCP port (default: 2525)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--cert", required=True, help="certificate chain (PEM)")
    parser.add_argument("--key", help="private key (PEM; default: in --cert)")
    parser.add_argument("--name", default="localhost", help="server name in replies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    context = server_context(args.cert, args.key)
    try:
        trio.run(lambda: serve(context, args.port, args.host, name=args.name))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
