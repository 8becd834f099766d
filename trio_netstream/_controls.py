"""The calls that change how a stream behaves: pause, encoding, timeouts,
socket options and the TLS upgrade.

:class:`StreamControls` is the middle layer of the
:class:`~trio_netstream.Stream` facade: each call checks its arguments,
changes the stream's flow or its connection, and wakes the connection's
tasks; none emits an event.
"""

from __future__ import annotations

import contextlib
import socket as _stdlib_socket
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs

from ._connection import Connection, Upgrade, apply_socket_options, plain_socket
from ._errors import StreamStateError
from ._options import alpn_list, check_number, check_timeout_ms, check_tls_options
from ._properties import StreamProperties
from ._state import Input
from ._timer import replan
from ._tls import check_session, default_client_context
from ._writer import kick_writer

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._options import StreamOptions

__all__ = ["StreamControls"]

_INET = (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6)
_LINGER_0 = struct.pack("ii", 1, 0)  # on, 0 s: close() sends RST

NoArgListener = Callable[[], object]


def _check_tls_arguments(context: object, server_side: object, server_hostname: object) -> None:
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
    if server_side is not None and not isinstance(server_side, bool):
        raise TypeError(f"server_side must be a bool, not {type(server_side).__name__}")
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError(f"server_hostname must be a str, not {type(server_hostname).__name__}")


def _stream_defaults(
    options: StreamOptions,
    reject_unauthorized: bool | None,
    alpn_protocols: object,
    handshake_timeout: float | None,
    session: ssl.SSLSession | None,
) -> tuple[bool, tuple[str, ...] | None, float, ssl.SSLSession | None]:
    """``set_secure()``'s TLS options, checked: the stream's where not given."""
    if reject_unauthorized is None:
        reject_unauthorized = options.reject_unauthorized
    alpn = options.alpn_protocols if alpn_protocols is None else alpn_list(alpn_protocols)
    if handshake_timeout is None:
        handshake_timeout = options.handshake_timeout
    if session is None:
        session = options.session
    check_tls_options(reject_unauthorized, handshake_timeout, session)
    return reject_unauthorized, alpn, handshake_timeout, session


def _side_context(
    context: ssl.SSLContext | None, server_side: bool, session: ssl.SSLSession | None
) -> ssl.SSLContext:
    """The context ``set_secure()`` uses on *server_side*, checked with *session*."""
    if server_side and context is None:
        raise ValueError("a server-side set_secure() needs an ssl.SSLContext with a certificate")
    if server_side and session is not None:
        raise ValueError("session is a client option (a session to resume)")
    context = context or default_client_context()
    check_session(context, session)
    return context


def _start_upgrade(conn: Connection) -> None:
    """``set_secure()``, once its upgrade is recorded: what is queued goes
    out as plaintext first, then the reader does the handshake."""
    conn.direct = None
    flow = conn.flow
    flow.set_plaintext_aside()
    # A pull read waits for the handshake now (_pull.upgrading): plaintext
    # kept behind the STARTTLS command goes to 'data' / async for before
    # 'secure', or is dropped then (BEFORE["secure"]), never to a pull read.
    flow.pull_ready = False
    kick_writer(conn)
    conn.wake_reader(interrupt=True)


class StreamControls(StreamProperties):
    """Pausing, encodings, timeouts, socket options and TLS (see
    :class:`~trio_netstream.Stream`)."""

    __slots__ = ()

    if TYPE_CHECKING:

        def destroy(self, error: BaseException | None = None) -> Self: ...  # Stream's

    def _secure_from_first_byte(self, conn: Connection) -> None:
        """The ``ssl`` option: TLS starts as soon as the connection is up."""
        option = self._options.ssl
        if option is None or option is False:
            return
        if option is True:
            if self._server_side:
                raise ValueError("ssl=True is a client option; a server needs an ssl.SSLContext")
            context = default_client_context()
        else:
            context = cast(ssl.SSLContext, option)  # StreamOptions checked the type
        options = self._options
        hostname = options.server_hostname
        if hostname is None and not self._server_side and conn.target is not None:
            hostname = conn.target.hostname
        conn.upgrade = Upgrade(
            context,
            self._server_side,
            hostname,
            options.reject_unauthorized,
            alpn_protocols=options.alpn_protocols,
            handshake_timeout=options.handshake_timeout,
            session=options.session,
            first_byte=True,
        )
        conn.direct = None

    # -- TLS -------------------------------------------------------------------

    def set_secure(
        self,
        context: ssl.SSLContext | None = None,
        *,
        server_side: bool | None = None,
        server_hostname: str | None = None,
        reject_unauthorized: bool | None = None,
        alpn_protocols: list[str] | tuple[str, ...] | None = None,
        handshake_timeout: float | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        """Upgrade this live stream to TLS (STARTTLS); ``'secure'`` follows.

        Bytes written before the call go out in plaintext first, then the
        handshake; bytes written after it are encrypted. Bytes read before
        the call are plaintext, delivered as ``'data'`` before ``'secure'``.
        A failed handshake gives ``'error'`` then ``'close'(True)``.

        Args:
            context: the ``ssl.SSLContext`` (default: a client context from
                ``ssl.create_default_context()``); a server side needs one
                with its certificate (with CA certificates, it asks for one).
            server_side: default ``True`` for a stream a server accepted.
            server_hostname: the name to verify and send as SNI (default:
                the host connected to).
            reject_unauthorized, alpn_protocols, handshake_timeout, session:
                as the stream's options (see :class:`Stream`), which are
                their defaults.

        Raises:
            TypeError, ValueError: bad arguments.
            StreamStateError: the stream is not open, or is already secure.
        """
        _check_tls_arguments(context, server_side, server_hostname)
        reject_unauthorized, alpn, handshake_timeout, session = _stream_defaults(
            self._options, reject_unauthorized, alpn_protocols, handshake_timeout, session
        )
        side = self._server_side if server_side is None else server_side
        context = _side_context(context, side, session)
        conn = self._conn
        sm = self._flow.sm
        if conn is None or not sm.upgradable:
            raise StreamStateError(f"set_secure() is not allowed: the stream is {sm.describe()}")
        if conn.upgrade is not None:
            raise StreamStateError("set_secure() is not allowed: the stream is already secure")
        if server_hostname is None and not side and conn.target is not None:
            server_hostname = conn.target.hostname
        conn.upgrade = Upgrade(
            context,
            side,
            server_hostname,
            reject_unauthorized,
            alpn_protocols=alpn,
            handshake_timeout=handshake_timeout,
            session=session,
        )
        _start_upgrade(conn)

    # -- reading ---------------------------------------------------------------

    def pause(self) -> Self:
        """Stop ``'data'``: the socket is not read until :meth:`resume`."""
        self._flow.paused = True
        return self

    def resume(self) -> Self:
        """Restart ``'data'`` after :meth:`pause`."""
        self._flow.paused = False
        self._wake_reader()
        return self

    def _wake_reader(self) -> None:
        if self._conn is not None:
            self._conn.wake_reader()

    def set_encoding(self, encoding: str | None = None) -> Self:
        """Deliver ``'data'`` as ``str`` decoded with *encoding* (``None``: bytes).

        Chunks kept for a consumer that has not come yet come in the new
        encoding too, as Node's ``setEncoding()`` converts its buffer.

        Raises:
            TypeError: *encoding* is not a str or None.
            ValueError: unknown encoding.
        """
        self._flow.set_encoding(encoding)
        return self

    # -- timers and socket options ------------------------------------------------

    def set_timeout(self, ms: float, callback: NoArgListener | None = None) -> Self:
        """Emit ``'timeout'`` after *ms* milliseconds without reading or writing.

        ``0`` disables it. The stream is not closed by a timeout. *callback*
        is added as a ``once('timeout')`` listener. Starts a new idle period.

        Raises:
            TypeError: *ms* is not a number, or *callback* is not callable.
            ValueError: *ms* is negative, infinite or NaN.
        """
        period = check_timeout_ms(ms) / 1000
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._flow.idle_period = period
        if callback is not None:
            self.once("timeout", callback)
        conn = self._conn
        if conn is not None and conn.task_nursery is not None:
            replan(conn)
        return self

    def set_no_delay(self, no_delay: bool = True) -> Self:
        """Disable (``True``) or enable Nagle's algorithm, now or on connect."""
        if not isinstance(no_delay, bool):
            raise TypeError(f"no_delay must be a bool, not {type(no_delay).__name__}")
        self._set_options(no_delay=no_delay)
        return self

    def set_keep_alive(self, enable: bool = False, initial_delay: float = 0) -> Self:
        """Enable TCP keep-alive with *initial_delay* ms of idle time, now or on connect."""
        if not isinstance(enable, bool):
            raise TypeError(f"enable must be a bool, not {type(enable).__name__}")
        check_number("initial_delay", initial_delay)
        self._set_options(keep_alive=enable, keep_alive_initial_delay=initial_delay)
        return self

    def reset_and_destroy(self) -> Self:
        """Close with a TCP RST instead of a FIN (``SO_LINGER`` 0): the peer
        sees ``ECONNRESET``; this side emits ``'close'(False)``, as after
        :meth:`destroy` (whose rules it follows otherwise: nothing queued is
        sent). Also over TLS on TCP (no close_notify is sent).

        Raises:
            StreamStateError: the stream is not TCP (a UNIX socket, a wrapped
                stream that is no socket, or no connection yet).
        """
        conn = self._conn
        if conn is not None and not self._flow.sm.can(Input.DESTROY):
            return self  # closed (or closing) already: as destroy(), nothing to do
        sock = None if conn is None else plain_socket(conn.transport)
        if sock is not None and sock.family in _INET:
            with contextlib.suppress(OSError):  # closed under us: destroy() is all that is left
                sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_LINGER, _LINGER_0)
        elif conn is None or conn.transport is not None or conn.target is None or conn.target.path:
            what = "it has no connection" if conn is None else "it is not TCP"
            raise StreamStateError(f"reset_and_destroy() needs a TCP stream: {what}")
        # else connecting over TCP: nothing was sent yet; destroy() ends the attempt
        self.destroy()
        return self

    def _set_options(self, **changes: Any) -> None:
        self._options = attrs.evolve(self._options, **changes)
        conn = self._conn
        if conn is not None:
            conn.options = self._options
            apply_socket_options(conn)

    # -- Node names --------------------------------------------------------------

    setEncoding = set_encoding
    setTimeout = set_timeout
    setNoDelay = set_no_delay
    setKeepAlive = set_keep_alive
    setSecure = set_secure
    resetAndDestroy = reset_and_destroy
