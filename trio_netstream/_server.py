"""The Server: Node's ``net.Server`` on Trio.

How this works: the server's ``async with`` owns a nursery (a
:class:`~trio_netstream._block.Block`). :meth:`Server.listen` binds a socket
and starts the **accept loop** in it, which emits ``'listening'`` and then
accepts. Every accepted connection gets its own task, which opens a small
nursery for the connection's async ``'connection'`` listeners, emits
``'connection'`` (plain listeners are called, async ones started), then runs
the stream's lifecycle (``'connect'`` ... ``'close'``) and waits for those
listeners. :meth:`Server.close` stops the accept loop at once and starts the
**closer**, which emits the server's ``'close'`` once every connection task
has finished.

A listener's exception ends the server's block (it is re-raised from it); a
network failure on one connection is that connection's ``'error'`` and, if
nobody listens for it, is logged: one bad peer cannot bring a server down.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as _stdlib_socket
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import attrs
import trio

from ._args import listen_arguments
from ._block import Block
from ._connection import TASK_NAME
from ._dial import bind_listener, listener_address
from ._emitter import EventEmitter
from ._errors import StreamStateError, TransportError, translate, transport_errors
from ._handlers import serve_with_handlers, start_handlers
from ._options import check_port, is_path, server_options
from ._socket import SocketTransport
from ._stream import Accepted, Stream

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ._connection import Connection

__all__ = ["Server"]

logger = logging.getLogger("trio_netstream")

# accept() failures that mean "out of resources right now": wait and retry.
_RETRY_ACCEPT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_RETRY_DELAY = 0.1

ConnectionListener = Callable[[Stream], object]
ListeningListener = Callable[[], object]


@attrs.frozen
class _Listen:
    """Checked arguments of ``listen()`` (*port* is unused with ``sock``)."""

    port: int | str | os.PathLike[str]
    host: str | None
    backlog: int
    reuse_port: bool


def _check_listen_arguments(
    port: object, host: object, backlog: object, reuse_port: object, sock: object
) -> _Listen:
    if isinstance(backlog, bool) or not isinstance(backlog, int):
        raise TypeError(f"backlog must be an int, not {type(backlog).__name__}")
    if not isinstance(reuse_port, bool):
        raise TypeError(f"reuse_port must be a bool, not {type(reuse_port).__name__}")
    if sock is not None:
        if not isinstance(sock, _stdlib_socket.socket):
            raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
        if sock.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError("sock must be a SOCK_STREAM socket")
        return _Listen(0, None, backlog, reuse_port)
    if is_path(port):
        return _Listen(cast("str | os.PathLike[str]", port), None, backlog, reuse_port)
    checked = check_port(port, allow_zero=True)
    if host is not None and not isinstance(host, str):
        raise TypeError(f"host must be a str or None, not {type(host).__name__}")
    return _Listen(checked, host, backlog, reuse_port)


class _ServerOwner:
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


class _ServerEvents(EventEmitter):
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
        def on(self, event: str) -> Callable[[Any], Any]: ...
        def on(self, event: str, listener: Any = None) -> Any: ...  # pyright: ignore[reportIncompatibleMethodOverride]  # narrower, typed per event

    addListener = EventEmitter.on
    removeListener = EventEmitter.off
    remove_listener = EventEmitter.off
    removeAllListeners = EventEmitter.remove_all_listeners
    listenerCount = EventEmitter.listener_count


class Server(_ServerEvents):
    """A TCP or UNIX-socket server; run it with ``async with``.

    Args:
        connection_listener: added as a ``'connection'`` listener.
        max_connections: close new connections at once while this many are
            open (default: no limit).
        **options: stream options applied to every accepted stream
            (``allow_half_open``, ``no_delay``, ``keep_alive``,
            ``keep_alive_initial_delay``, ``high_water_mark``).
    """

    __slots__ = (
        "_accept_scope",
        "_address",
        "_block",
        "_closed",
        "_closing",
        "_connections",
        "_handler_scopes",
        "_listening",
        "_live_tasks",
        "_options",
        "_owner",
        "_socket",
        "_tasks_done",
        "_unlink_path",
    )

    def __init__(
        self,
        connection_listener: ConnectionListener | None = None,
        *,
        max_connections: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._options = server_options(options, max_connections)
        if connection_listener is not None:
            self.on("connection", connection_listener)
        self._block = Block()
        self._owner = _ServerOwner(self._listener_failed, self._connection_done, self)
        self._socket: trio.socket.SocketType | None = None
        self._address: tuple[str, int] | str | None = None
        self._unlink_path: str | None = None
        self._accept_scope: trio.CancelScope | None = None
        self._connections: set[Stream] = set()
        self._handler_scopes: set[trio.CancelScope] = set()
        self._live_tasks = 0
        self._tasks_done = trio.lowlevel.ParkingLot()
        self._listening = False
        self._closing = False
        self._closed = trio.Event()

    # -- structured lifecycle --------------------------------------------

    async def __aenter__(self) -> Self:
        await self._block.enter("server")
        self._closing = False
        self._closed = trio.Event()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._block.exit(exc, self.wait_closed, self._shut_down)

    def _shut_down(self) -> None:
        self.close()
        for stream in list(self._connections):
            stream.destroy()
        for scope in self._handler_scopes:
            scope.cancel()  # async connection listeners end with the block

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` was called and the server emitted ``'close'``."""
        await self._closed.wait()

    def _listener_failed(self, exc: BaseException) -> None:
        self._block.fail(exc)

    # -- listening ---------------------------------------------------------

    @overload
    async def listen(
        self,
        port: int | str = 0,
        host: str | None = None,
        listener: ListeningListener | None = None,
        *,
        backlog: int = 511,
        reuse_port: bool = False,
    ) -> None: ...
    @overload
    async def listen(
        self,
        port: int | str | os.PathLike[str] | Mapping[str, Any] | ListeningListener,
        listener: ListeningListener = ...,
        /,
        *,
        backlog: int = 511,
        reuse_port: bool = False,
    ) -> None: ...
    @overload
    async def listen(self, *, sock: _stdlib_socket.socket, backlog: int = 511) -> None: ...
    async def listen(
        self,
        port: int | str | os.PathLike[str] | Mapping[str, Any] | ListeningListener = 0,
        host: str | ListeningListener | None = None,
        listener: ListeningListener | None = None,
        *,
        backlog: int = 511,
        reuse_port: bool = False,
        sock: _stdlib_socket.socket | None = None,
    ) -> None:
        """Bind and start accepting; returns once listening (``'listening'``
        has been emitted by then).

        ``listen(port, host)`` listens on TCP (``port=0`` picks a free port;
        ``host=None`` means every address, IPv6 and IPv4 where possible);
        ``listen(path)`` on a UNIX socket (the file is removed again at
        :meth:`close`); ``listen(sock=...)`` adopts a bound stdlib socket,
        listening or not. A string of digits (``"8124"``) is a TCP port,
        any other string a path. Node's forms work too: a *listener* last
        (``listen(port, listener)``, ``listen(port, host, listener)``) is
        added as a ``once('listening')`` listener (removed again if the
        call fails), and ``listen({"port": ..., "host": ..., "backlog": ...})``
        (or ``"path"``; ``reusePort``) takes the arguments as a dict. A failure
        to bind is raised here, as an ``OSError`` with its ``errno`` and Node
        ``code`` (``EADDRINUSE``) and a message naming the address.

        Raises:
            TypeError, ValueError: bad arguments.
            StreamStateError: outside the server's ``async with``, or
                already listening.
            OSError: binding or listening failed.
        """
        address, backlog_given, reuse_given = listen_arguments(
            port, host, listener, backlog, reuse_port
        )
        where = _check_listen_arguments(
            address.port, address.host, backlog_given, reuse_given, sock
        )
        nursery = self._block.nursery
        if nursery is None:
            raise StreamStateError("listen() needs the server's async with block to be running")
        if self._closing:
            raise StreamStateError("listen() is not allowed: the server is closing")
        if self._listening:
            raise StreamStateError("listen() is not allowed: the server is already listening")
        if address.listener is not None:
            self.once("listening", address.listener)
        try:
            await self._bind(nursery, where, sock)
        except BaseException:
            if address.listener is not None:
                self.off("listening", address.listener)  # the call failed: no 'listening'
            raise

    async def _bind(
        self, nursery: trio.Nursery, where: _Listen, sock: _stdlib_socket.socket | None
    ) -> None:
        self._listening = True
        if self._closed.is_set():
            self._closed = trio.Event()  # listening again after an earlier close()
        try:
            with transport_errors():
                plain = await bind_listener(
                    where.port, where.host, where.backlog, where.reuse_port, sock
                )
            if sock is None and is_path(where.port):
                self._unlink_path = os.fspath(cast("str | os.PathLike[str]", where.port))
        except TransportError as failure:
            self._listening = False
            error = failure.error
            raise error from error.__cause__  # not the internal TransportError
        except BaseException:
            self._listening = False
            raise
        self._socket = trio.socket.from_stdlib_socket(plain)
        self._address = listener_address(plain)
        # Sockets accepted from a listener made here have the kernel's
        # default options; an adopted listener's may pass on others.
        await nursery.start(self._accept_loop, plain, sock is None)

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
                while True:
                    try:
                        sock, peer = listener.accept()
                    except BlockingIOError:
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
                    await trio.lowlevel.checkpoint()  # a connection storm must not starve the rest
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
        limit = self._options.max_connections
        if limit is not None and len(self._connections) >= limit:
            transport.close_now()
            return
        try:
            accepted = Accepted(transport, self._options.stream, self._owner, peer, fresh)
            stream = Stream(accepted)
            conn = accepted.connection
            assert conn is not None
        except BaseException:
            transport.close_now()
            raise
        nursery = self._block.nursery
        assert nursery is not None
        self._connections.add(stream)
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

    def _connection_done(self, stream: object) -> None:
        self._connections.discard(cast(Stream, stream))
        self._task_done()

    def _task_done(self) -> None:
        self._live_tasks -= 1
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

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting; ``'close'`` follows once every connection has closed.

        Open connections live on. Idempotent.
        """
        if self._closing or (self._closed.is_set() and not self._listening):
            return
        self._closing = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        if self._socket is not None:
            self._socket.close()
        nursery = self._block.nursery
        if nursery is not None:
            nursery.start_soon(self._finish_close)

    async def _finish_close(self) -> None:
        # Shielded: under cancellation the connections are being destroyed
        # and finish promptly; the server's 'close' still comes last.
        with trio.CancelScope(shield=True):
            while self._live_tasks:
                await self._tasks_done.park()
        if self._unlink_path is not None:
            try:
                os.unlink(self._unlink_path)
            except OSError:
                pass
            self._unlink_path = None
        self._socket = None
        self._address = None
        self._accept_scope = None
        self._listening = False
        try:
            await self._emit("close")
        finally:
            self._closing = False  # as Node: a closed server may listen() again
            self._closed.set()

    # -- properties -----------------------------------------------------------

    def address(self) -> tuple[str, int] | str | None:
        """The bound address: ``(host, port)``, or the UNIX path; ``None`` if not listening."""
        return self._address

    @property
    def listening(self) -> bool:
        """Whether the server is accepting connections (Node's ``server.listening``)."""
        return self._listening and not self._closing

    @property
    def connections(self) -> int:
        """How many accepted connections are open."""
        return len(self._connections)

    @property
    def max_connections(self) -> int | None:
        """Open connections at which new ones are closed at once (``None``: no limit).

        Settable, as Node's ``server.maxConnections``; applies to the next accept.
        """
        return self._options.max_connections

    @max_connections.setter
    def max_connections(self, value: int | None) -> None:
        self._options = attrs.evolve(self._options, max_connections=value)

    def __repr__(self) -> str:
        return f"<trio_netstream.Server address={self._address!r} connections={self.connections}>"

    # Node names
    maxConnections = max_connections
