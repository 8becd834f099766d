"""The SMTP-style STARTTLS dialogue of ``connect --starttls`` (RFC 3207)."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from .. import Stream
from ._output import ProtocolError


class StartTLS:
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
