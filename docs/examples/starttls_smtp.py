"""A tiny SMTP server that upgrades connections with STARTTLS.

Each connection is one ``async def`` task (an async ``'connection'``
listener) that reads the client's commands with ``await stream.readline()``
and answers with ``stream.write()``. It speaks just enough SMTP
(RFC 5321 / RFC 3207) for ``openssl s_client -starttls smtp`` and Python's
``smtplib`` to upgrade to TLS and send mail::

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
    S: 250 MAIL FROM:<me@example.com>
    C: RCPT TO:<you@example.com>
    S: 250 RCPT TO:<you@example.com>
    C: DATA
    S: 354 End data with <CR><LF>.<CR><LF>
    C: Subject: hello  ...  .
    S: 250 OK: message 1 queued
    C: QUIT
    S: 221 Bye                       (then the server ends the connection)

The rules, in full (commands are case-insensitive):

* ``EHLO <domain>`` / ``HELO <domain>``: a multi-line ``250`` reply that
  advertises ``STARTTLS`` until the connection is secure.
* ``STARTTLS``: ``220 Ready to start TLS``, then the TLS handshake. With
  arguments: ``501``; on a connection that is already secure: ``503``.
  Plaintext the client sent behind the command is dropped, never read as
  a command (a man in the middle could have injected it, CVE-2011-0411).
* ``MAIL FROM:`` starts a message, ``RCPT TO:`` adds a recipient (both are
  echoed as ``250 <line>``); ``DATA`` (``354``) reads the message up to a
  line holding a single ``.``, then appends a :class:`Message` to the
  server's inbox; ``RSET`` forgets the message under way.
* ``QUIT``: ``221 Bye``, then the server ends the connection.
* An empty line is ignored; any other line is echoed as ``250 <line>``.
* A line longer than :data:`MAX_LINE` bytes: ``500 Line too long``, then
  the connection is ended.

Run it::

    python docs/examples/starttls_smtp.py --cert cert.pem --key key.pem --port 2525
    openssl s_client -starttls smtp -connect 127.0.0.1:2525 -CAfile ca.pem

From a test (or any Trio program), start it in a nursery::

    inbox = []
    server = await nursery.start(partial(serve, context, inbox=inbox))
    host, port = server.address()
    ...
    server.close()   # stop accepting; serve() returns once every session ended
"""

from __future__ import annotations

import argparse
import logging
import ssl
from functools import partial
from typing import Any

import trio

import trio_netstream as net

log = logging.getLogger("starttls_smtp")

#: The longest line (without its line ending) a client may send.
MAX_LINE = 1000


class Message:
    """One message received with ``DATA``."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.recipients: list[str] = []
        self.body = b""  # its lines, CRLF-terminated, with the dot-stuffing undone


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


class LineTooLong(Exception):
    """The client sent more than :data:`MAX_LINE` bytes without a line end."""


class SmtpSession:
    """The conversation with one client: :meth:`run` reads a command with
    ``readline()``, answers it, and reads the next, until QUIT."""

    def __init__(
        self, stream: net.Stream, context: ssl.SSLContext, name: str, inbox: list[Message]
    ) -> None:
        self.stream = stream
        self.context = context
        self.name = name
        self.inbox = inbox
        self.secure = False

    async def read_line(self) -> bytes:
        """The next line, without its line ending.

        Raises:
            EOFError: the client hung up.
            LineTooLong: the line is longer than :data:`MAX_LINE`.
        """
        try:
            line = await self.stream.readline(max_size=MAX_LINE + 2)  # + CRLF
        except ValueError:
            raise LineTooLong from None
        return line.removesuffix(b"\n").removesuffix(b"\r")

    def reply(self, *lines: str) -> None:
        """Send one reply line (or several, for a multi-line reply)."""
        self.stream.write("".join(f"{line}\r\n" for line in lines))

    async def run(self) -> None:
        """Greet, then answer every command until QUIT.

        Raises:
            EOFError: the client hung up without QUIT.
            LineTooLong: see :meth:`read_line`.
            OSError: the connection or the TLS handshake failed.
        """
        self.reply(f"220 {self.name} ESMTP trio_netstream")
        message: Message | None = None
        while True:
            line = (await self.read_line()).decode("utf-8", "replace")
            log.debug("C: %s%s", "(TLS) " if self.secure else "", line)
            verb, _, argument = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                # Multi-line reply: "250-" on every line but the last, "250 " on it.
                extensions = ["HELP"] if self.secure else ["STARTTLS", "HELP"]
                lines = [f"{self.name} Hello {argument.strip() or 'there'}", *extensions]
                self.reply(*(f"250-{text}" for text in lines[:-1]), f"250 {lines[-1]}")
            elif verb == "STARTTLS":
                await self.starttls(argument)
            elif verb == "MAIL":
                message = Message(sender=argument.partition(":")[2].strip())
                self.reply(f"250 {line}")
            elif verb == "RCPT" and message is not None:
                message.recipients.append(argument.partition(":")[2].strip())
                self.reply(f"250 {line}")
            elif verb == "DATA" and message is not None and message.recipients:
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                message.body = await self.read_data()
                self.inbox.append(message)
                message = None
                self.reply(f"250 OK: message {len(self.inbox)} queued")
            elif verb in ("RCPT", "DATA"):
                self.reply("503 Bad sequence of commands")
            elif verb == "RSET":
                message = None
                self.reply("250 OK")
            elif verb == "QUIT":
                self.stream.end("221 Bye\r\n")  # flush, then close our side
                return
            elif line:
                self.reply(f"250 {line}")

    async def starttls(self, argument: str) -> None:
        """Answer STARTTLS: ``220``, then the handshake."""
        if argument.strip():
            self.reply("501 Syntax error (no parameters allowed)")
        elif self.secure:
            self.reply("503 Bad sequence of commands: TLS is already active")
        else:
            # Written before set_secure(), the reply goes out in plaintext;
            # the handshake follows, and every later read is decrypted (what
            # the client sent behind its command, in plaintext, is dropped:
            # it never comes out of a read). A failed handshake fails the
            # next read.
            self.reply("220 Ready to start TLS")
            self.stream.set_secure(self.context)
            self.secure = True

    async def read_data(self) -> bytes:
        """The message after ``DATA``, up to the line holding a single ``.``."""
        body = bytearray()
        while (line := await self.read_line()) != b".":
            body += line.removeprefix(b".") + b"\r\n"  # undo the dot-stuffing
        return bytes(body)


async def serve(
    context: ssl.SSLContext,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    name: str = "localhost",
    inbox: list[Message] | None = None,
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
        inbox: where received messages are appended (default: dropped).
    """
    messages: list[Message] = [] if inbox is None else inbox

    async def on_connection(stream: net.Stream) -> None:
        stream.on("secure", lambda: log.info("%r is secure", stream))
        stream.on(
            "close", lambda had_error: log.info("%r closed (had_error=%s)", stream, had_error)
        )
        try:
            await SmtpSession(stream, context, name, messages).run()
        except EOFError:
            pass  # hung up without QUIT; allow_half_open=False ends our side
        except LineTooLong:
            stream.end("500 Line too long\r\n")
        except OSError as error:  # a network or TLS failure; 'close' follows
            log.info("%r failed: %r", stream, error)

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
        trio.run(partial(serve, context, args.port, args.host, name=args.name))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
