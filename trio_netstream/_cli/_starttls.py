"""The SMTP-style STARTTLS dialogue of ``connect --starttls`` (RFC 3207)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable

import trio

from .. import Stream
from ._output import ProtocolError

#: The reply each step waits for, and what the step's messages call it.
_EXPECTED = {"greeting": 220, "ehlo": 250, "starttls": 220}
_WHAT = {"greeting": "greeting", "ehlo": "EHLO", "starttls": "STARTTLS"}
_WAITING_FOR = {
    "greeting": "the 220 greeting",
    "ehlo": "the reply to EHLO",
    "starttls": "the reply to STARTTLS",
    "upgrading": "the TLS handshake",
}
#: A reply line (RFC 5321, 4.2): three digits, then a space, ``-`` or nothing.
_REPLY_LINE = re.compile(r"([0-9]{3})([ -].*)?")

DEFAULT_TIMEOUT = 10.0  # seconds until TLS must be up


class StartTLS:
    """The SMTP-style STARTTLS dialogue of ``connect --starttls``.

    Waits for the ``220`` greeting, sends ``EHLO``, waits for ``250``, sends
    ``STARTTLS``, waits for ``220`` and calls ``set_secure()`` (offering
    *alpn*, the ALPN protocols of ``--alpn``). Replies may be
    multi-line (``250-...`` lines, then ``250 ...``). Each failure destroys
    the stream with a :class:`ProtocolError`: a line that is not the
    expected reply (another code, or no reply at all, such as an echo
    server's ``hello``), bytes after the final ``220`` (they could be
    injected plaintext), the server ending before TLS (:meth:`ended`), or
    TLS not up in time (:meth:`deadline`).
    """

    def __init__(
        self,
        stream: Stream,
        context: ssl.SSLContext,
        hostname: str | None,
        note: Callable[[str], object],
        *,
        alpn: tuple[str, ...] | None = None,
    ) -> None:
        self.stream = stream
        self.alpn = alpn
        self.context = context
        self.hostname = hostname
        self.note = note
        self.buffer = bytearray()
        self.step = "greeting"

    @property
    def negotiating(self) -> bool:
        return self.step != "upgrading"

    def _line(self) -> str | None:
        """Take one complete line from the buffer (without its line end)."""
        end = self.buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(self.buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
        del self.buffer[: end + 1]
        return line

    def _send(self, command: str) -> None:
        self.note(f"> {command}")
        self.stream.write(f"{command}\r\n")

    def _fail(self, problem: str) -> None:
        self.stream.destroy(ProtocolError(f"STARTTLS: {problem}"))

    def feed(self, chunk: bytes) -> None:
        """Received bytes (while :attr:`negotiating`): answer complete replies."""
        self.buffer += chunk
        while self.negotiating and (line := self._line()) is not None:
            expected = _EXPECTED[self.step]
            match = _REPLY_LINE.fullmatch(line)
            if match is None or int(match[1]) != expected:
                self._fail(f"expected {expected} to {_WHAT[self.step]}, got {line!r}")
                return
            if line[3:4] != "-":  # the last line of the reply
                self._advance()

    def _advance(self) -> None:
        """The expected reply came: the step's command, or the upgrade."""
        if self.step == "greeting":
            self._send(f"EHLO {self._client_name()}")
            self.step = "ehlo"
        elif self.step == "ehlo":
            self._send("STARTTLS")
            self.step = "starttls"
        else:
            self.step = "upgrading"
            if self.buffer:
                self._fail("the server sent plaintext after its 220 reply")
                return
            self.stream.set_secure(
                self.context,
                server_hostname=self.hostname,
                alpn_protocols=None if self.alpn is None else list(self.alpn),
            )

    def ended(self) -> None:
        """The server ended its side: before TLS, that aborts the dialogue."""
        if self.negotiating:
            waiting_for = _WAITING_FOR[self.step]
            self._fail(f"the server closed the connection before TLS (waiting for {waiting_for})")

    async def deadline(self, seconds: float, secure: trio.Event) -> None:
        """Destroy the stream if *secure* is not set within *seconds*."""
        with trio.move_on_after(seconds):
            await secure.wait()
            return
        connecting = self.stream.ready_state == "opening"
        waiting_for = "the connection" if connecting else _WAITING_FOR[self.step]
        self._fail(f"no answer within {seconds:g} s (waiting for {waiting_for})")

    def _client_name(self) -> str:
        """An address literal for EHLO (RFC 5321, 4.1.3)."""
        address = self.stream.local_address
        if not address:
            return "localhost"
        return f"[IPv6:{address}]" if ":" in address else f"[{address}]"
