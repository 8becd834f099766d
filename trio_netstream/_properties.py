"""What a stream tells: its state, addresses, counters and TLS results.

:class:`StreamProperties` is the read-only half of the
:class:`~trio_netstream.Stream` facade: properties that read the stream's
flow and current connection, with their Node names. It holds the stream's
slots; ``_controls`` and ``_stream`` add the calls that change things.
"""

from __future__ import annotations

import os
import socket as _stdlib_socket
import ssl
from typing import TYPE_CHECKING, Any

import trio

from ._ciphers import cipher_info
from ._connection import local_address, plain_socket
from ._tls import peer_certificate, session_of
from ._typed import TypedEvents

if TYPE_CHECKING:
    from ._connection import Connection, Owner, Upgrade
    from ._flow import Flow
    from ._options import StreamOptions
    from ._proxy import ProxyHeader

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

    @property
    def proxy(self) -> ProxyHeader | None:
        """The PROXY protocol header a server with ``proxy_protocol`` read
        before ``'connection'`` (``remote_address`` and ``remote_port`` are
        its client's), else ``None``."""
        return None if self._conn is None else self._conn.proxy

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

    @property
    def _ssl_object(self) -> ssl.SSLObject | None:
        """The handshaken TLS connection's ``SSLObject``, or ``None``."""
        upgrade = self._upgrade
        return None if upgrade is None or upgrade.tls is None else upgrade.tls.ssl_object

    @property
    def alpn_protocol(self) -> str | None:
        """The protocol ALPN agreed on (``"h2"``), or ``None``: before a
        handshake, on a plaintext stream, or when none was agreed."""
        ssl_object = self._ssl_object
        return None if ssl_object is None else ssl_object.selected_alpn_protocol()

    def get_protocol(self) -> str | None:
        """The TLS version negotiated (``"TLSv1.3"``), or ``None``."""
        ssl_object = self._ssl_object
        return None if ssl_object is None else ssl_object.version()

    def get_cipher(self) -> dict[str, str | None] | None:
        """``{"name", "standard_name", "version"}`` of the cipher suite
        negotiated, or ``None``."""
        ssl_object = self._ssl_object
        return None if ssl_object is None else cipher_info(ssl_object)

    def get_session(self) -> ssl.SSLSession | None:
        """The TLS session, to resume with the ``session`` option; ``None``
        before a handshake (a TLS 1.3 server sends it just after)."""
        ssl_object = self._ssl_object
        return None if ssl_object is None else session_of(ssl_object)

    def is_session_reused(self) -> bool:
        """Whether the handshake resumed the session given with ``session``."""
        ssl_object = self._ssl_object
        return ssl_object is not None and ssl_object.session_reused

    @property
    def servername(self) -> str | None:
        """On a server stream, the name the client sent (SNI; ``None`` if it
        sent none); on a client, the name it sent and verified; ``None``
        before the handshake and on a plaintext stream."""
        upgrade = self._upgrade
        if upgrade is None or upgrade.tls is None:
            return None  # before the handshake, as Node
        if not upgrade.server_side:
            return upgrade.server_hostname
        choices = upgrade.tls.choices
        return None if choices is None else choices.servername

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
    alpnProtocol = alpn_protocol
    getProtocol = get_protocol
    getCipher = get_cipher
    getSession = get_session
    isSessionReused = is_session_reused
    writableLength = write_queue_size
    isPaused = is_paused
