"""What a stream tells: its state, addresses, counters and TLS results.

:class:`StreamProperties` is the read-only half of the
:class:`~trio_netstream.Stream` facade: properties that read the stream's
flow and current connection, with their Node names. It holds the stream's
slots; ``_controls`` and ``_stream`` add the calls that change things.
"""

from __future__ import annotations

import os
import socket as _stdlib_socket
from typing import TYPE_CHECKING, Any

import trio

from ._connection import local_address, plain_socket
from ._tls import peer_certificate
from ._typed import TypedEvents

if TYPE_CHECKING:
    from ._connection import Connection, Owner, Upgrade
    from ._flow import Flow
    from ._options import StreamOptions

__all__ = ["StreamProperties"]


class StreamProperties(TypedEvents):
    """The read-only side of a stream (see :class:`~trio_netstream.Stream`)."""

    __slots__ = (
        "_conn",
        "_flow",
        "_nursery",
        "_options",
        "_owner",
        "_server_side",
        "_start_pending",
    )

    _conn: Connection | None
    _flow: Flow
    _nursery: trio.Nursery | None
    _options: StreamOptions
    _owner: Owner | None
    _server_side: bool
    _start_pending: bool

    @property
    def ready_state(self) -> str:
        """``"closed"``, ``"opening"``, ``"open"``, ``"readOnly"`` or ``"writeOnly"``."""
        return self._flow.sm.ready_state

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The underlying Trio socket while connected, else ``None``."""
        conn = self._conn
        if conn is None or conn.transport is None:
            return None
        local_address(conn)  # read now: the caller may close the socket
        return getattr(conn.transport, "socket", None)

    @property
    def bytes_read(self) -> int:
        """Bytes received on the current (or last) connection."""
        return self._flow.bytes_read

    @property
    def bytes_written(self) -> int:
        """Bytes given to ``write()`` / ``end()`` on this connection, counted at the call."""
        return self._flow.bytes_written

    @property
    def remote_address(self) -> str | None:
        """The peer's IP address (``None`` for UNIX sockets and before connecting)."""
        return None if self._conn is None else self._conn.peer[0]

    @property
    def remote_port(self) -> int | None:
        """The peer's port (``None`` for UNIX sockets and before connecting)."""
        return None if self._conn is None else self._conn.peer[1]

    @property
    def remote_family(self) -> str | None:
        """``"IPv4"`` or ``"IPv6"`` (``None`` for UNIX sockets and before connecting)."""
        return None if self._conn is None else self._conn.peer[2]

    @property
    def local_address(self) -> str | None:
        """This side's IP address (``None`` for UNIX sockets and before connecting)."""
        return None if self._conn is None else local_address(self._conn)[0]

    @property
    def local_port(self) -> int | None:
        """This side's port (``None`` for UNIX sockets and before connecting)."""
        return None if self._conn is None else local_address(self._conn)[1]

    def address(self) -> tuple[str, int] | str | None:
        """This side's address as ``server.address()`` gives it: ``(host,
        port)`` over TCP, the path over a UNIX socket (``""`` for a client's
        unnamed one); ``None`` when not connected (or not over a socket)."""
        conn = self._conn
        if conn is None or conn.transport is None or self._flow.sm.connecting:
            return None
        host, port = local_address(conn)
        if host is not None and port is not None:
            return (host, port)
        sock = plain_socket(conn.transport)
        if sock is None or sock.family != _stdlib_socket.AF_UNIX:
            return None
        try:
            name = sock.getsockname()
        except OSError:  # closed under us
            return None
        return name if isinstance(name, str) else os.fsdecode(name)

    @property
    def encoding(self) -> str | None:
        """The encoding given to :meth:`set_encoding`, or ``None``."""
        return self._flow.encoding

    @property
    def allow_half_open(self) -> bool:
        """Whether the writable side stays open after the peer's ``'end'``."""
        return self._options.allow_half_open

    @property
    def high_water_mark(self) -> int:
        """Queued bytes at which :meth:`write` returns ``False``."""
        return self._options.high_water_mark

    @property
    def write_queue_size(self) -> int:
        """Bytes queued and not yet sent (Node's ``writableLength``)."""
        return 0 if self._conn is None else self._flow.queued

    @property
    def timeout(self) -> float:
        """The idle timeout in milliseconds; ``0`` means none."""
        return self._flow.idle_period * 1000

    @property
    def is_paused(self) -> bool:
        """Whether :meth:`pause` is in effect (Node's ``isPaused()``)."""
        return self._flow.paused

    @property
    def _upgrade(self) -> Upgrade | None:
        return None if self._conn is None else self._conn.upgrade

    @property
    def secure(self) -> bool:
        """Whether the TLS handshake has completed on this connection."""
        upgrade = self._upgrade
        return upgrade is not None and upgrade.tls is not None

    def verify_peer(self) -> bool:
        """Whether the peer's certificate verified against the trusted CAs
        (``False`` before a handshake)."""
        upgrade = self._upgrade
        verification = None if upgrade is None else upgrade.verification
        return verification is not None and verification.verified

    @property
    def authorization_error(self) -> str | None:
        """Why the peer did not verify (``"CERT_HAS_EXPIRED: ..."``), or ``None``."""
        upgrade = self._upgrade
        verification = None if upgrade is None else upgrade.verification
        return None if verification is None else verification.error

    def get_peer_certificate(self) -> dict[str, Any] | None:
        """The peer's certificate (verified or not) as Node's fields, or ``None``."""
        upgrade = self._upgrade
        if upgrade is None or upgrade.tls is None:
            return None
        return peer_certificate(upgrade.tls.ssl_object)

    def __repr__(self) -> str:
        where = ""
        conn = self._conn
        if conn is not None and conn.peer[0] is not None:
            where = f" {conn.peer[0]}:{conn.peer[1]}"
        elif conn is not None and conn.target is not None and conn.target.path:
            where = f" {conn.target.path}"
        return f"<trio_netstream.Stream {self.ready_state}{where}>"

    # -- Node names --------------------------------------------------------------

    readyState = ready_state
    remoteAddress = remote_address
    remotePort = remote_port
    remoteFamily = remote_family
    localAddress = local_address
    localPort = local_port
    bytesRead = bytes_read
    bytesWritten = bytes_written
    verifyPeer = verify_peer
    getPeerCertificate = get_peer_certificate
    authorizationError = authorization_error
    writableLength = write_queue_size
    isPaused = is_paused
