"""The Stream: Node's ``net.Stream`` on Trio — the facade.

How this works
--------------

This module is the public face: it checks arguments, keeps the stream's
options, and delegates. The sync API (``write``, ``end``, ``destroy``,
``pause``, ``set_timeout``...) only changes the stream's
:class:`~trio_netstream._flow.Flow` (the state and the rules, no I/O) and
wakes the tasks of its current
:class:`~trio_netstream._connection.Connection`; it never emits an event.
Events come from the connection's tasks (``_reader``, ``_writer``,
``_timer``), which live in the nursery of the block that owns the stream:
its own ``async with`` (a client stream, see :class:`_BlockOwner`), or its
server's. ``connect()`` makes a fresh connection, so reconnecting the same
object starts clean; listeners, the encoding and ``pause()`` stay with the
stream.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast, overload

import attrs
import trio

from ._args import DEFAULT_HOST, connect_arguments
from ._block import Block
from ._connection import (
    TASK_NAME,
    Connection,
    Owner,
    apply_socket_options,
    check_drain_may_wait,
    note_addresses,
    send_failed,
)
from ._dial import Target
from ._emitter import EventEmitter
from ._encoding import encode, normalize
from ._errors import StreamStateError, translate
from ._feed import open_feed
from ._flow import Flow
from ._io import StreamIO, not_running
from ._options import StreamOptions, check_port, ip_version, is_path, stream_options
from ._socket import SocketTransport
from ._state import WRITABLE, Input, State
from ._writer import kick_writer, send_eof_now

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ._proxy import ProxyHeader

__all__ = ["Accepted", "Stream"]

NoArgListener = Callable[[], object]


def _target(port: object, host: object, options: StreamOptions) -> Target:
    if is_path(port):
        target = Target(path=os.fspath(cast("str | os.PathLike[str]", port)))  # is_path checked it
        if not target.path:
            raise ValueError("the UNIX socket path is empty")
        if options.local_address is not None or options.local_port is not None:
            raise ValueError("local_address and local_port are for TCP, not a UNIX socket path")
        return target
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    target = Target(port=check_port(port, allow_zero=False), host=host or DEFAULT_HOST)
    version = ip_version(target.host)
    if version is not None and options.family not in (0, version):
        raise ValueError(f"host {target.host!r} is IPv{version}, but family={options.family}")
    local = options.local_address
    if version is not None and local is not None and ip_version(local) != version:
        raise ValueError(f"host {target.host!r} is IPv{version}, but local_address is {local!r}")
    return target


def _check_chunk(data: object, encoding: object) -> bytes:
    if isinstance(data, bytes):
        if encoding != "utf8" and encoding is not None:
            normalize(encoding)  # as Node: a bad encoding throws even for a Buffer
        return data
    if isinstance(data, str):
        return encode(data, "utf8" if encoding is None else encoding)  # type: ignore[arg-type]  # normalize() checks it
    if isinstance(data, (bytearray, memoryview)):
        # isinstance() leaves the memoryview's type argument unknown to pyright
        return bytes(cast("bytearray | memoryview[int]", data))
    raise TypeError(f"data must be bytes, bytearray, memoryview or str, not {type(data).__name__}")


@attrs.define(eq=False)
class Accepted:
    """A connection a server accepted, for ``Stream(accepted)``: *owner* (the
    server) runs it and gets its failures; *peer* is the address
    ``accept()`` returned; *fresh* says the socket has the kernel's default
    options. The stream sets :attr:`connection`, for the server to run
    (``connection.run(nursery)``)."""

    transport: SocketTransport
    options: StreamOptions
    owner: Owner
    peer: Any
    fresh: bool
    proxy: ProxyHeader | None = None  # the PROXY protocol header read first
    connection: Connection | None = None


class _BlockOwner:
    """The owner of a client stream: its own ``async with`` block."""

    __slots__ = ("block", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.block = Block()

    def listener_failed(self, exc: BaseException) -> None:
        self.stream.destroy()
        self.block.fail(exc)

    def unhandled_error(self, stream: object, exc: BaseException) -> None:
        self.block.fail(exc)

    def connection_done(self, stream: object) -> None:
        pass  # the block waits for 'close' itself

    async def secured(self, stream: object) -> None:
        pass  # a server's event only

    async def tls_failed(self, stream: object, exc: BaseException) -> bool:
        return False  # a server's event only


class Stream(StreamIO):
    """A TCP or UNIX-socket stream with Node's ``net.Stream`` events.

    Create one with :func:`~trio_netstream.create_connection`,
    ``Stream(**options)`` followed by :meth:`connect`, or :meth:`wrap`; run
    it with ``async with``: the block starts the stream's tasks, leaving it
    normally waits for ``'close'``, leaving it by an exception or a
    cancellation destroys the stream (``'close'`` is still emitted).

    Args:
        allow_half_open: keep the writable side open after the peer's
            ``'end'`` (default ``True``, as in Node's original ``net.Stream``).
            ``False`` calls :meth:`end` automatically after ``'end'``.
        no_delay: disable Nagle's algorithm (default ``False``, as Node).
        keep_alive: enable TCP keep-alive.
        keep_alive_initial_delay: keep-alive idle time, in milliseconds.
        high_water_mark: queued bytes at which :meth:`write` returns ``False``.
        ssl: an ``ssl.SSLContext`` (or ``True`` for a default client context):
            TLS from the first byte, ``'secure'`` after ``'connect'``.
        server_hostname: the name to verify and send as SNI with ``ssl``.
        timeout: as :meth:`set_timeout` before connecting (milliseconds).
        family: ``0`` any, ``4`` IPv4 only, ``6`` IPv6 only (for a host name).
        local_address, local_port: bind to these before connecting.
        auto_select_family: Happy Eyeballs (RFC 8305) for a name with several
            addresses (default ``True``); ``False`` tries them one at a time.
        auto_select_family_attempt_timeout: milliseconds before the next
            attempt starts (default 250, at least 10).
        connect_timeout: milliseconds to connect in (lookup and every
            attempt), else ``'error'`` (``TimeoutError``, ``ETIMEDOUT``).

    Raises:
        TypeError, ValueError: an option has the wrong type or value.
    """

    __slots__ = ()

    def __init__(self, _accepted: Accepted | None = None, /, **options: Any) -> None:
        super().__init__()
        if _accepted is None:
            self._options = stream_options(options)
        elif isinstance(_accepted, Accepted):
            self._options = _accepted.options  # checked once, by the server
        else:
            raise TypeError("Stream() takes its options as keyword arguments only")
        self._flow = Flow(self._options.high_water_mark)
        if self._options.timeout:  # Node's option: set_timeout() before connecting
            self._flow.idle_period = self._options.timeout / 1000
        self._conn: Connection | None = None
        # A client stream's owner is made when first needed.
        self._owner: Owner | None = None if _accepted is None else _accepted.owner
        self._nursery: trio.Nursery | None = None
        self._start_pending = False
        self._server_side = _accepted is not None
        self._pipes = None
        if _accepted is not None:
            self._adopt(_accepted.transport, _accepted.peer, fresh=_accepted.fresh)
            conn = self._conn
            assert conn is not None
            conn.accepted = True
            proxy = conn.proxy = _accepted.proxy
            if proxy is not None and proxy.family is not None and proxy.source is not None:
                conn.peer = (proxy.source[0], proxy.source[1], proxy.family)  # the client's
            _accepted.connection = conn

    @classmethod
    def wrap(cls, transport: trio.abc.Stream, **options: Any) -> Stream:
        """Adopt an already connected Trio stream (a ``SocketStream``, an
        ``SSLStream``, one end of ``trio.testing.memory_stream_pair()``...).

        The new stream is ``"open"`` at once and emits ``'connect'`` when its
        ``async with`` starts. :meth:`end` uses ``send_eof()`` when the
        transport is a ``trio.abc.HalfCloseableStream``; otherwise it flushes
        and closes the transport.
        """
        if not isinstance(transport, trio.abc.Stream):
            raise TypeError(f"wrap() needs a trio.abc.Stream, not {type(transport).__name__}")
        stream = cls(**options)
        stream._adopt(transport)
        stream._start_pending = True
        return stream

    def _client_owner(self) -> _BlockOwner:
        owner = self._owner
        if owner is None:
            owner = self._owner = _BlockOwner(self)
        assert isinstance(owner, _BlockOwner)
        return owner

    def _connection(self, **where: Any) -> Connection:
        owner = self._owner if self._server_side else self._client_owner()
        assert owner is not None
        self._conn = Connection(self, self._flow, owner, self._options, **where)
        return self._conn

    def _adopt(self, transport: trio.abc.Stream, peer: Any = None, *, fresh: bool = False) -> None:
        conn = self._connection(transport=transport)
        self._flow.sm.apply(Input.ADOPT)
        note_addresses(conn, peer)
        apply_socket_options(conn, fresh=fresh)
        self._secure_from_first_byte(conn)

    # -- structured lifecycle --------------------------------------------

    async def __aenter__(self) -> Self:
        if self._server_side:
            raise StreamStateError("a server-side stream runs in its server's block")
        self._nursery = await self._client_owner().block.enter("stream")
        if self._start_pending:
            self._spawn()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            block = self._client_owner().block
            return await block.exit(exc, self._wait_closed_on_exit, self.destroy)
        finally:
            self._nursery = None

    async def _wait_closed_on_exit(self) -> None:
        # Leaving the block is a checkpoint: a cancel point here, and the
        # schedule point of the block's nursery as it exits.
        while self._conn is not None and not self._conn.closed:
            await self._conn.wait_closed()
        await trio.lowlevel.checkpoint_if_cancelled()

    def _spawn(self) -> None:
        conn = self._conn
        assert conn is not None
        self._start_pending = False
        if self._nursery is None:
            raise StreamStateError("the stream is not running")
        self._nursery.start_soon(conn.run, self._nursery, name=TASK_NAME)

    # -- connecting --------------------------------------------------------

    @overload
    def connect(
        self, port: int | str, host: str = ..., listener: NoArgListener | None = ...
    ) -> Self: ...
    @overload
    def connect(
        self,
        port: int | str | os.PathLike[str] | Mapping[str, Any],
        listener: NoArgListener = ...,
        /,
    ) -> Self: ...
    def connect(
        self,
        port: int | str | os.PathLike[str] | Mapping[str, Any],
        host: str | NoArgListener = DEFAULT_HOST,
        listener: NoArgListener | None = None,
    ) -> Self:
        """Start connecting to *port* on *host* (TCP) or to a UNIX socket path;
        a string of digits (``"8124"``) is a port. Node's forms work:
        ``(port[, host][, listener])``, ``(path[, listener])``, ``(options[,
        listener])`` (a dict of ``port`` and ``host``, or ``path``); *listener*
        is added as a ``once('connect')`` listener.

        Legal when the stream is ``"closed"``, including after an earlier
        connection closed (reconnecting keeps listeners and encoding;
        ``bytes_read`` / ``bytes_written`` start again from 0). The result
        arrives as ``'connect'`` or as ``'error'`` then ``'close'(True)``.
        Outside a running ``async with`` the attempt starts when the block
        starts. Returns the stream.

        Raises:
            TypeError, ValueError: bad port, host, path or listener.
            StreamStateError: the stream is not ``"closed"`` (or still closing).
        """
        if self._server_side:
            raise StreamStateError("connect() is not allowed on a stream a server accepted")
        if isinstance(self._owner, _BlockOwner) and self._owner.block.shutting_down:
            raise StreamStateError("connect() is not allowed: the stream's block is exiting")
        address = connect_arguments(port, host, listener)
        target = _target(address.port, address.host, self._options)
        self._flow.sm.apply(Input.CONNECT, "connect()")
        if address.listener is not None:
            self.once("connect", address.listener)
        self._flow.reset()
        self._secure_from_first_byte(self._connection(target=target))
        if self._nursery is not None:
            self._spawn()
        else:
            self._start_pending = True
        return self

    # -- writing -------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview | str, encoding: str = "utf8") -> bool:
        """Queue *data* for sending; ``str`` is encoded with *encoding*.

        Returns ``False`` while connecting, or when the queued-but-unsent bytes
        reach ``high_water_mark``; ``'drain'`` follows once the queue is empty.
        Causes no event itself.

        Raises:
            TypeError: *data* is not bytes-like or str.
            ValueError: unknown encoding, or text the encoding cannot hold.
            StreamStateError: after ``end()`` or ``destroy()``, or before ``connect()``.
        """
        chunk = _check_chunk(data, encoding)
        flow = self._flow
        state = flow.sm.state
        if state not in WRITABLE:
            raise StreamStateError(f"write() is not allowed: the stream is {flow.sm.describe()}")
        conn = self._conn
        assert conn is not None
        connecting = state is State.OPENING  # the only writable state not connected
        accepted = flow.count_write(len(chunk), connecting)
        if not chunk:
            return accepted
        rest: bytes | memoryview = chunk
        direct = conn.direct
        if direct is not None and not connecting and not flow.queued:
            # Nothing queued or in flight: send now, as libuv's try-write.
            try:
                sent = direct.try_send(chunk)
            except OSError as exc:
                sent = 0  # the writer meets the error again
                send_failed(conn, translate(exc), in_write=True)
            if flow.idle_period and sent:
                flow.last_activity = trio.current_time()
            if sent == len(chunk):
                if not accepted and "drain" in self._events:
                    kick_writer(conn)  # to emit 'drain'
                return accepted
            if sent:
                rest = memoryview(chunk)[sent:]  # without a copy
        flow.enqueue(rest)
        kick_writer(conn)
        return accepted

    def end(
        self, data: bytes | bytearray | memoryview | str | None = None, encoding: str = "utf8"
    ) -> Self:
        """Write *data* (if given), flush everything queued, then send FIN.

        ``ready_state`` becomes ``"readOnly"`` (or ``"closed"`` if the peer had
        already ended) as the call returns; reading goes on until the peer
        ends. A second ``end()`` without data does nothing.

        Raises:
            TypeError, ValueError: as :meth:`write`.
            StreamStateError: *data* given after the stream ended.
        """
        if data is not None:
            self.write(data, encoding)
        sm = self._flow.sm
        if sm.can(Input.END):
            sm.apply(Input.END)
            conn = self._conn
            assert conn is not None
            if not send_eof_now(conn):
                kick_writer(conn)
            if self._flow.pulled:
                conn.wake_reader()  # pull reads or not, the peer's end is read now
        return self

    def destroy(self, error: BaseException | None = None) -> Self:
        """Close now, dropping queued writes; ``'close'`` follows (``'error'``
        first if *error* is given). Idempotent; does nothing on a stream with
        no connection. Cancels a connection attempt in progress.

        Raises:
            TypeError: *error* is not an exception.
        """
        if error is not None and not isinstance(error, BaseException):
            raise TypeError(f"error must be an exception, not {type(error).__name__}")
        conn = self._conn
        sm = self._flow.sm
        if conn is None or not sm.can(Input.DESTROY):
            return self
        sm.apply(Input.DESTROY)
        if error is not None and conn.error is None:
            conn.error = error
        conn.destroyed = error is None
        self._flow.drop_writes()
        conn.stop()
        conn.flushed()
        return self

    # -- Trio-native extras -----------------------------------------------------

    async def drain(self) -> None:
        """Wait until every queued byte has been handed to the kernel (and the
        ``'drain'`` owed to a ``write()`` that returned ``False`` was emitted).

        Returns at once (after a checkpoint) when nothing is queued.

        Raises:
            OSError: the stream failed before the queue emptied (its error).
            StreamStateError: destroyed before the queue emptied; or where it would
                wait for itself, or outside the stream's block (docs/behaviour.md).
        """
        await trio.lowlevel.checkpoint()
        flow = self._flow
        while True:
            conn = self._conn
            if conn is None:
                return
            if conn.error is not None:
                raise conn.error
            if conn.destroyed:
                raise StreamStateError("drain(): the stream was destroyed")
            if not flow.queued and flow.need_drain and "drain" not in self._events:
                flow.need_drain = False  # nobody listens for the 'drain' this owed
            if flow.flushed:
                return  # flushed, and the 'drain' a False write() promised came first
            check_drain_may_wait(conn)
            if self._idle_client:
                raise not_running("drain()")
            await conn.wait_flushed()

    async def wait_closed(self) -> None:
        """Wait until the current connection has emitted ``'close'``.

        Cancelling the wait leaves the stream as it is. Raises
        :exc:`StreamStateError` where it would wait outside the stream's block.
        """
        while self._conn is not None and not self._conn.closed:
            if self._idle_client:
                raise not_running("wait_closed()")
            await self._conn.wait_closed()
        await trio.lowlevel.checkpoint()

    def __aiter__(self) -> AsyncIterator[bytes | str]:
        """Iterate over received chunks (the same ones ``'data'`` gets).

        Ends at ``'end'``; raises the stream's error (which then counts as
        handled). Reads only as fast as the loop consumes. Raises
        :exc:`StreamStateError` if already iterated, or where it would wait
        outside the stream's block.
        """
        flow = self._flow
        if not flow.sm.reading_over and self._idle_client:
            raise not_running("async for")
        if flow.feed is not None and flow.feed.alive:
            raise StreamStateError("the stream is already being iterated")
        flow.feed, iterator = open_feed(flow, self)
        flow.pull_ready = False
        self._wake_reader()
        return iterator

    def _add(self, event: str, listener: Callable[..., Any], once: bool) -> None:
        if event == "data":
            if self._flow.puller is not None:
                raise StreamStateError("on('data'): a pull read (read_until()...) is waiting")
            self._flow.pull_ready = False
        super()._add(event, listener, once)
        conn = self._conn
        if conn is None:
            return
        if event == "data":
            conn.wake_reader()
        elif event == "drain" and self._flow.need_drain:
            kick_writer(conn)  # Node's idiom: once('drain') after a False write()

    # -- Node names --------------------------------------------------------------

    addListener = EventEmitter.on
    removeListener = EventEmitter.off
    remove_listener = EventEmitter.off
    removeAllListeners = EventEmitter.remove_all_listeners
    listenerCount = EventEmitter.listener_count
