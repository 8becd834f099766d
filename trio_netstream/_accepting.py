"""Accepting connections: the accept loop, then each connection's admission.

:class:`Accepting` is the half of :class:`~trio_netstream.Server` that takes
connections in: the **accept loop** (a task of the server's block) accepts
and hands each connection to :meth:`Accepting._accepted`, which never waits.
A connection over ``max_connections`` is closed at once (``'drop'``). With
``proxy_protocol``, each connection's PROXY header is read in a task of its
own, within ``handshake_timeout``, so a slow or hostile balancer stalls no
other connection; a bad header is the server's ``'clientError'``. Then the
connection becomes a :class:`~trio_netstream.Stream` and ``'connection'`` is
emitted (async listeners become the connection's tasks, see ``_handlers``).
:class:`ServerOwner` is what the accepted streams report to.
"""

from __future__ import annotations

import errno
import logging
import socket as _stdlib_socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import trio

from ._block import Block
from ._connection import TASK_NAME
from ._emitter import EventEmitter
from ._errors import translate
from ._handlers import serve_with_handlers, start_handlers
from ._proxy import Network, ProxyHeader, is_trusted, parse, read_header
from ._socket import SocketTransport
from ._stream import Accepted, Stream

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._connection import Connection, Owner
    from ._options import ServerOptions

__all__ = ["Accepting", "ConnectionListener", "ServerEvents", "ServerOwner", "connection_info"]

logger = logging.getLogger("trio_netstream")

# accept() failures that mean "out of resources right now": wait and retry.
_RETRY_ACCEPT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_RETRY_DELAY = 0.1
#: Connections accepted in a row before the accept loop lets the others run;
#: the wait for the next one (accept() found none) is a schedule point too.
ACCEPT_BURST = 16

ConnectionListener = Callable[[Stream], object]
_T = TypeVar("_T")

_FAMILIES = {_stdlib_socket.AF_INET: "IPv4", _stdlib_socket.AF_INET6: "IPv6"}


def connection_info(sock: _stdlib_socket.socket, proxy: ProxyHeader | None) -> dict[str, Any]:
    """Node's ``data`` of ``'drop'`` (and our ``'clientError'``): both ends
    of a connection, snake_case; the client a PROXY header named, if any."""
    info: dict[str, Any] = dict.fromkeys(
        (
            "local_address",
            "local_port",
            "local_family",
            "remote_address",
            "remote_port",
            "remote_family",
        )
    )
    family = _FAMILIES.get(sock.family)
    if family is None:
        return info  # a UNIX socket: no addresses
    try:
        local, remote = sock.getsockname(), sock.getpeername()
    except OSError:  # reset already
        return info
    info.update(local_address=local[0], local_port=local[1], local_family=family)
    info.update(remote_address=remote[0], remote_port=remote[1], remote_family=family)
    if proxy is not None and proxy.family is not None and proxy.source is not None:
        info.update(remote_address=proxy.source[0], remote_port=proxy.source[1])
        info.update(remote_family=proxy.family)
    return info


async def _proxy_header(
    sock: _stdlib_socket.socket, peer: Any, trusted: tuple[Network, ...] | None, limit_ms: float
) -> ProxyHeader:
    """The PROXY header of a connection from *peer*, read within *limit_ms*
    (``0``: no limit).

    Raises:
        PermissionError: *peer* is not in *trusted* (nothing was read).
        ValueError: a malformed header (``.code`` ``"ERR_PROXY_PROTOCOL"``).
        TimeoutError: no whole header in time.
        OSError: the connection failed.
    """
    if not is_trusted(trusted, peer):
        refused = PermissionError(errno.EACCES, f"PROXY protocol: {peer[0]} is not a trusted proxy")
        refused.code = "EACCES"  # type: ignore[attr-defined]  # OSError instances take attributes
        raise refused
    balancer = cast("tuple[str, int]", peer)[:2] if isinstance(peer, tuple) else None
    if not limit_ms:
        return parse(await read_header(sock), balancer)
    with trio.move_on_after(limit_ms / 1000):
        return parse(await read_header(sock), balancer)
    late = TimeoutError(errno.ETIMEDOUT, f"PROXY protocol: no header within {limit_ms:g} ms")
    late.code = "ETIMEDOUT"  # type: ignore[attr-defined]  # OSError instances take attributes
    raise late


class ServerOwner:
    """The owner of the streams a server accepted: the server's block."""

    __slots__ = ("_done", "_failed", "_server")

    def __init__(
        self,
        failed: Callable[[BaseException], None],
        done: Callable[[object], None],
        server: EventEmitter,
    ) -> None:
        self._failed = failed
        self._done = done
        self._server = server

    def listener_failed(self, exc: BaseException) -> None:
        self._failed(exc)

    def unhandled_error(self, stream: object, exc: BaseException) -> None:
        logger.error("unhandled 'error' on %r", stream, exc_info=exc)

    def connection_done(self, stream: object) -> None:
        self._done(stream)

    async def secured(self, stream: object) -> None:
        pending = self._server.emit("secureConnection", stream)
        if pending is not None:
            await pending

    async def tls_failed(self, stream: object, exc: BaseException) -> bool:
        server = self._server
        if not server.listener_count("tlsClientError"):
            return False
        try:
            pending = server.emit("tlsClientError", exc, stream)
            if pending is not None:
                await pending
        except Exception as raised:  # a listener raised
            self._failed(raised)
        return True


class ServerEvents(EventEmitter):
    """A server's event registration: typed per event, with Node's names."""

    __slots__ = ()

    if TYPE_CHECKING:

        @overload  # type: ignore[override]  # narrower, typed per event
        def on(self, event: Literal["connection"], listener: ConnectionListener) -> Self: ...
        @overload
        def on(
            self, event: Literal["listening", "close"], listener: Callable[[], object]
        ) -> Self: ...
        @overload
        def on(
            self, event: Literal["error"], listener: Callable[[BaseException], object]
        ) -> Self: ...
        @overload
        def on(self, event: Literal["secureConnection"], listener: ConnectionListener) -> Self: ...
        @overload
        def on(
            self,
            event: Literal["tlsClientError"],
            listener: Callable[[BaseException, Stream], object],
        ) -> Self: ...
        @overload
        def on(
            self, event: Literal["drop"], listener: Callable[[dict[str, Any]], object]
        ) -> Self: ...
        @overload
        def on(
            self,
            event: Literal["clientError"],
            listener: Callable[[BaseException, dict[str, Any]], object],
        ) -> Self: ...
        @overload
        def on(self, event: str) -> Callable[[Any], Any]: ...
        def on(self, event: str, listener: Any = None) -> Any: ...  # pyright: ignore[reportIncompatibleMethodOverride]  # narrower, typed per event

    addListener = EventEmitter.on
    removeListener = EventEmitter.off
    remove_listener = EventEmitter.off
    removeAllListeners = EventEmitter.remove_all_listeners
    listenerCount = EventEmitter.listener_count


class Accepting(ServerEvents):
    """Accepting and admitting connections (see the module's docstring);
    :class:`~trio_netstream.Server` adds the lifecycle."""

    __slots__ = (
        "_accept_scope",
        "_address",
        "_block",
        "_closed",
        "_closing",
        "_connections",
        "_handler_scopes",
        "_header_scopes",
        "_listening",
        "_live_tasks",
        "_options",
        "_owner",
        "_proxy_trusted",
        "_shutdown_destroyed",
        "_shutdown_scope",
        "_socket",
        "_tasks_done",
        "_unlink_path",
    )

    _options: ServerOptions
    _proxy_trusted: tuple[Network, ...] | None
    _block: Block
    _owner: Owner
    _socket: trio.socket.SocketType | None
    _accept_scope: trio.CancelScope | None
    _connections: dict[Stream, None]
    _handler_scopes: set[trio.CancelScope]
    _header_scopes: set[trio.CancelScope]
    _live_tasks: int
    _tasks_done: trio.lowlevel.ParkingLot
    _closing: bool

    if TYPE_CHECKING:

        def close(self) -> None: ...  # Server's

    def _listener_failed(self, exc: BaseException) -> None:
        self._block.fail(exc)

    async def _accept_loop(
        self,
        listener: _stdlib_socket.socket,
        fresh: bool,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        failure: BaseException | None = None
        mine = self._socket
        try:
            with trio.CancelScope() as scope:
                self._accept_scope = scope
                try:
                    await self._emit("listening")
                finally:
                    task_status.started()
                burst = 0
                while True:
                    try:
                        sock, peer = listener.accept()
                    except BlockingIOError:
                        burst = 0
                        try:
                            await trio.lowlevel.wait_readable(listener)
                        except trio.ClosedResourceError:
                            return  # close() closed the socket under us
                        continue
                    except OSError as exc:
                        if exc.errno == errno.EBADF:
                            return  # closed under us
                        if exc.errno in _RETRY_ACCEPT:
                            logger.warning("accept() failed, retrying: %s", exc)
                            await trio.sleep(_RETRY_DELAY)
                            continue
                        failure = translate(exc)
                        break  # out of the scope close() cancels
                    self._accepted(SocketTransport(sock), peer, fresh)
                    # A listener that raised (or cancelled) stops the loop here.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    burst += 1
                    if burst == ACCEPT_BURST:  # a connection storm must not starve the rest
                        burst = 0
                        await trio.lowlevel.checkpoint()
            if failure is not None:
                await self._accept_failed(failure)
        finally:
            # Whatever ended the loop (close(), a lasting failure, the block
            # cancelled or failed), the server closes: unless it did already,
            # or a listener listened anew on another socket.
            if self._socket is mine and not self._closing:
                self.close()

    async def _accept_failed(self, error: BaseException) -> None:
        """A lasting accept() failure: ``'error'`` (the accept loop closes the
        server after it), or without a listener, close and fail the block. An
        async listener ends with the block, as async ``'connection'``
        listeners do."""
        if not self.listener_count("error"):
            self.close()
            self._block.fail(error)
            return
        with trio.CancelScope() as scope:
            self._handler_scopes.add(scope)
            if self._block.shutting_down:
                scope.cancel()
            try:
                await self._emit("error", error)
            finally:
                self._handler_scopes.discard(scope)

    async def _emit(self, event: str, *args: object) -> None:
        try:
            pending = self.emit(event, *args)
            if pending is not None:
                await pending
        except Exception as exc:  # a listener raised
            self._listener_failed(exc)

    def _accepted(self, transport: SocketTransport, peer: Any, fresh: bool) -> None:
        """A connection came: admit it now, or (``proxy_protocol``) once its
        header was read, in a task of its own."""
        if not self._options.proxy_protocol:
            self._admit(transport, peer, fresh, None)
            return
        if self._over_the_limit(len(self._header_scopes)):
            self._drop(transport, None)  # headers being read count too: they hold sockets
            return
        nursery = self._block.nursery
        assert nursery is not None
        scope = trio.CancelScope()
        self._header_scopes.add(scope)
        self._live_tasks += 1
        nursery.start_soon(self._read_proxy_header, transport, peer, fresh, scope)

    def _over_the_limit(self, pending: int = 0) -> bool:
        limit = self._options.max_connections
        return limit is not None and len(self._connections) + pending >= limit

    def _drop(self, transport: SocketTransport, proxy: ProxyHeader | None) -> None:
        """Close a connection over ``max_connections`` at once: ``'drop'``."""
        info = connection_info(transport.plain, proxy)
        transport.close_now()
        self._emit_soon("drop", info)

    def _admit(
        self, transport: SocketTransport, peer: Any, fresh: bool, proxy: ProxyHeader | None
    ) -> None:
        """``'drop'`` it (``max_connections``), or make its stream and emit
        ``'connection'``."""
        if self._over_the_limit():
            self._drop(transport, proxy)
            return
        try:
            accepted = Accepted(transport, self._options.stream, self._owner, peer, fresh, proxy)
            stream = Stream(accepted)
            conn = accepted.connection
            assert conn is not None
        except BaseException:
            transport.close_now()
            raise
        nursery = self._block.nursery
        assert nursery is not None
        self._connections[stream] = None
        self._live_tasks += 1  # the connection's task; connection_done counts it off
        # 'connection' as Node emits it: at once, as the connection is accepted.
        pending: list[Awaitable[object]] = []
        try:
            pending = start_handlers(self._take_listeners("connection"), stream)
        except Exception as exc:  # a 'connection' listener raised
            self._listener_failed(exc)
            stream.destroy()
        except BaseException:  # KeyboardInterrupt...
            stream.destroy()
            raise
        finally:  # in every case the connection's task runs: it closes the socket
            if pending:
                self._live_tasks += 1
                nursery.start_soon(self._serve_with_handlers, conn, pending)
            else:
                nursery.start_soon(conn.run, nursery, name=TASK_NAME)

    async def _read_proxy_header(
        self, transport: SocketTransport, peer: Any, fresh: bool, scope: trio.CancelScope
    ) -> None:
        """The PROXY header of one connection, in its own task (the accept
        loop goes on), within ``handshake_timeout``; then :meth:`_admit`, or
        ``'clientError'`` and the connection closed. :meth:`close` cancels
        the reads still going on."""
        sock = transport.plain
        proxy: ProxyHeader | None = None
        failure: ValueError | OSError | None = None
        try:
            with scope:
                if self._closing:
                    scope.cancel()
                try:
                    proxy = await _proxy_header(
                        sock, peer, self._proxy_trusted, self._options.stream.handshake_timeout
                    )
                except (ValueError, OSError) as exc:
                    failure = exc
                finally:
                    self._header_scopes.discard(scope)
            if failure is not None:
                info = connection_info(sock, None)
                transport.close_now()
                await self._emit("clientError", failure, info)
            elif proxy is None or self._closing:
                transport.close_now()  # close() came meanwhile: accept nothing more
            else:
                self._admit(transport, peer, fresh, proxy)
        except BaseException:
            transport.close_now()
            raise
        finally:
            self._task_done()

    def _emit_soon(self, event: str, *args: object) -> None:
        """Emit a server event from the accept loop without waiting for an
        async listener (a task of the block runs it)."""
        if not self.listener_count(event):
            return
        nursery = self._block.nursery
        assert nursery is not None
        self._live_tasks += 1  # the server's 'close' comes after it
        nursery.start_soon(self._emit_counted, event, *args)

    async def _emit_counted(self, event: str, *args: object) -> None:
        try:
            await self._emit(event, *args)
        finally:
            self._task_done()

    def _connection_done(self, stream: object) -> None:
        self._connections.pop(cast(Stream, stream), None)
        self._task_done()

    def _task_done(self) -> None:
        self._live_tasks -= 1
        if self._tasks_done:  # someone waits (unpark_all() costs, even for nobody)
            self._tasks_done.unpark_all()

    async def _serve_with_handlers(
        self, conn: Connection, pending: list[Awaitable[object]]
    ) -> None:
        """Run a connection whose async ``'connection'`` listeners are its
        tasks; they end with the block (see :meth:`_shut_down`)."""
        nursery = self._block.nursery
        assert nursery is not None
        try:
            await serve_with_handlers(
                conn,
                pending,
                nursery,
                self._handler_scopes,
                shutting_down=self._block.shutting_down,
                failed=self._listener_failed,
            )
        finally:
            self._task_done()
