"""The Stream: Node's ``net.Stream`` on Trio.

How this works
--------------

The sync API (``write``, ``end``, ``destroy``, ``pause``, ``set_timeout``...)
only changes state and wakes tasks; it never emits an event. Events come
from the tasks of one *connection*, which all live inside the stream's
nursery (the ``async with`` block of a client stream, or the server's
nursery for a server-side stream):

* the **lifecycle** task connects (or adopts an already connected transport),
  emits ``'connect'``, then runs the **read loop** inline: receive, decode,
  emit ``'data'``; at EOF it emits ``'end'``;
* the **writer** task sends the write queue (coalescing small writes) and,
  once this side has ended and the queue is empty, sends EOF;
* the **timer** task exists only when ``set_timeout`` was used; it sleeps
  until the idle deadline and emits ``'timeout'``.

A connection's per-connection state lives in a :class:`_Conn`, replaced on
``connect()``, so reconnecting the same object starts clean. The ready state
lives in one :class:`~trio_netstream._state.StateMachine`.

Failures: every transport call is wrapped so that a network failure becomes a
:class:`~trio_netstream._errors.TransportError`, recorded on the connection
(first one wins), which cancels the connection's I/O scope. The lifecycle
then closes the transport and emits ``'error'`` (if there was one) and
``'close'``. Exceptions raised by listeners are *not* network failures: they
are handed to the stream's owner, which cancels its block and re-raises them
(see :class:`_Owner`).

Emission is ordered and never concurrent: if an async listener is being
awaited, other tasks wait (``_emit_lock``) before emitting.
"""

from __future__ import annotations

import logging
import math
import os
import socket as _stdlib_socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast, overload

import attrs
import trio

from ._block import Block
from ._emitter import EventEmitter
from ._encoding import Decoder, encode, get_decoder, normalize
from ._errors import StreamStateError, TransportError, translate, transport_errors
from ._options import StreamOptions, check_number, check_port, check_timeout_ms, is_path
from ._socket import SocketTransport, connect
from ._state import WRITABLE, WRITE_ENDED, Input, State, StateMachine
from ._tls import (
    TLSTransport,
    Verification,
    default_client_context,
    make_transport,
    peer_certificate,
    verify,
)

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["Stream"]

logger = logging.getLogger("trio_netstream")

#: Bytes asked of the transport per read (at or below glibc's mmap threshold).
READ_SIZE = 64 * 1024
# The name of a connection's Trio tasks (a constant: Trio would otherwise
# build one from the function's name for every task).
_TASK_NAME = "trio_netstream connection"
#: What one step of the writer task sends before other tasks run: queued
#: chunks are joined into sends of at most this size, and writes made by
#: 'drain' listeners share a step until they reach this many bytes ...
STEP_BYTES = 256 * 1024
#: ... or this many writes.
STEP_WRITES = 4

_F = TypeVar("_F", bound=Callable[..., Any])
DataListener = Callable[[bytes], object] | Callable[[str], object]
NoArgListener = Callable[[], object]
ErrorListener = Callable[[BaseException], object]
CloseListener = Callable[[bool], object]


class _Owner(Protocol):
    """Who a stream reports to: its own ``async with`` block, or its server."""

    def _listener_failed(self, exc: BaseException) -> None:
        """A listener raised: cancel the owner's block and re-raise *exc* from it."""

    def _unhandled_error(self, stream: Stream, exc: BaseException) -> None:
        """An ``'error'`` nobody listened to."""

    def _lifecycle_done(self, stream: Stream) -> None:
        """*stream*'s connection task has ended (after ``'close'``)."""


@attrs.define(eq=False)
class _Target:
    """Where to connect: a TCP host and port, or a UNIX socket path."""

    port: int | None = None
    host: str = "127.0.0.1"
    path: str | None = None


@attrs.define(eq=False, slots=True)
class _Conn:
    """State of one connection attempt; a reconnect gets a fresh one."""

    target: _Target | None
    transport: trio.abc.Stream | None = None
    io_cancelled: bool = False
    queue: list[bytes | memoryview] = attrs.Factory(list[bytes | memoryview])
    queued: int = 0
    need_drain: bool = False
    error: BaseException | None = None
    destroyed: bool = False
    wrote_eof: bool = False
    # Made when first needed: an idle connection carries none of them.
    writer_lot: trio.lowlevel.ParkingLot | None = None
    flushed_lot: trio.lowlevel.ParkingLot | None = None
    writer_done: trio.Event | None = None
    writer_running: bool = False
    writer_finished: bool = False
    writer_task: trio.lowlevel.Task | None = None  # runs the 'drain' listeners it emits
    # 'drain's emitted, and bytes_written, since the writer last yielded.
    step_writes: int = 0
    step_start: int = 0
    closed_event: trio.Event | None = None
    closed: bool = False

    def cancel_io(self) -> None:
        """Stop the connection's I/O (``destroy()`` or a failure)."""
        self.io_cancelled = True
        if self.step_scope is not None:
            self.step_scope.cancel()
        for scope in self.scopes:
            scope.cancel()

    def step(self) -> trio.CancelScope:
        """The cancel scope of the lifecycle's next step, which
        :meth:`cancel_io` cancels (at once, if the I/O is already stopped)."""
        scope = trio.CancelScope()
        if self.io_cancelled:
            scope.cancel()
        self.step_scope = scope
        return scope

    def flushed(self) -> None:
        """Wake ``drain()`` waiters."""
        if self.flushed_lot is not None:
            self.flushed_lot.unpark_all()

    async def wait_flushed(self) -> None:
        if self.flushed_lot is None:
            self.flushed_lot = trio.lowlevel.ParkingLot()
        await self.flushed_lot.park()

    async def wait_writer_finished(self) -> None:
        if not self.writer_finished:
            if self.writer_done is None:
                self.writer_done = trio.Event()
            await self.writer_done.wait()

    def finish_writer(self) -> None:
        self.writer_finished = True
        if self.writer_done is not None:
            self.writer_done.set()

    async def wait_closed(self) -> None:
        if not self.closed:
            if self.closed_event is None:
                self.closed_event = trio.Event()
            await self.closed_event.wait()

    def set_closed(self) -> None:
        self.closed = True
        if self.closed_event is not None:
            self.closed_event.set()

    task_nursery: trio.Nursery | None = None  # where the connection's tasks run
    # The lifecycle runs in one cancel scope at a time (a step); the writer
    # and the timer each in their own. cancel_io() cancels them all.
    step_scope: trio.CancelScope | None = None
    scopes: list[trio.CancelScope] = attrs.Factory(list[trio.CancelScope])
    in_receive: bool = False  # blocked in receive_some(), under step_scope
    read_stopped: bool = False
    timer_running: bool = False
    timer_wait: trio.CancelScope | None = None
    peer: tuple[str | None, int | None, str | None] = (None, None, None)
    local: tuple[str | None, int | None] = (None, None)
    local_unread: bool = False  # getsockname() is called when first needed
    upgrade: _Upgrade | None = None
    direct: SocketTransport | None = None  # set while write() may send at once
    plain_queue: list[bytes | memoryview] = attrs.Factory(list[bytes | memoryview])
    tls: TLSTransport | None = None
    verification: Verification | None = None


@attrs.define(eq=False, slots=True)
class _Upgrade:
    """A requested TLS upgrade (``set_secure()`` or the ``ssl`` option)."""

    context: ssl.SSLContext
    server_side: bool
    server_hostname: str | None
    reject_unauthorized: bool
    writer_ready: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)


def _plain_socket(transport: object) -> Any:
    """The socket under *transport* for options and addresses (the stdlib one
    of our own transport, so no Trio wrapper is made), or ``None``."""
    raw = getattr(transport, "raw", transport)  # under TLS
    if isinstance(raw, SocketTransport):
        return raw.plain
    return getattr(raw, "socket", None)  # e.g. a wrapped trio.SocketStream


def _numeric_candidates(host: str, port: int | None) -> list[tuple[int, int, int, Any]] | None:
    """Where to connect for an IP literal, without a checkpoint; ``None`` for a name."""
    for family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
        try:  # the common literals, without getaddrinfo()
            packed = _stdlib_socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        address = _stdlib_socket.inet_ntop(family, packed)  # as getaddrinfo() spells it
        where = (address, port) if family == _stdlib_socket.AF_INET else (address, port, 0, 0)
        return [(family, _stdlib_socket.SOCK_STREAM, _stdlib_socket.IPPROTO_TCP, where)]
    try:  # the rest: "127.1", scoped IPv6 ("fe80::1%eth0")
        infos = _stdlib_socket.getaddrinfo(
            host, port, type=_stdlib_socket.SOCK_STREAM, flags=_stdlib_socket.AI_NUMERICHOST
        )
    except (_stdlib_socket.gaierror, UnicodeError):
        return None
    return [(family, kind, proto, address) for family, kind, proto, _, address in infos]


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


class Stream(EventEmitter):
    """A TCP or UNIX-socket stream with Node's ``net.Stream`` events.

    Create one with :func:`~trio_netstream.create_connection`,
    ``Stream(**options)`` followed by :meth:`connect`, or :meth:`wrap`; run
    it with ``async with``: the block starts the stream's tasks, leaving it
    normally waits for ``'close'``, leaving it by an exception or a
    cancellation destroys the stream (``'close'`` is still emitted).

    Args:
        allow_half_open: keep the writable side open after the peer's
            ``'end'`` (default ``True``, as in the seed). ``False`` calls
            :meth:`end` automatically after ``'end'``.
        no_delay: disable Nagle's algorithm (default ``False``, as Node).
        keep_alive: enable TCP keep-alive.
        keep_alive_initial_delay: keep-alive idle time, in milliseconds.
        high_water_mark: queued bytes at which :meth:`write` returns ``False``.
        ssl: an ``ssl.SSLContext`` (or ``True`` for a default client context):
            TLS from the first byte, ``'secure'`` after ``'connect'``.
        server_hostname: the name to verify and send as SNI with ``ssl``.

    Raises:
        TypeError, ValueError: an option has the wrong type or value.
    """

    __slots__ = (
        "_block",
        "_bytes_read",
        "_bytes_written",
        "_carry",
        "_conn",
        "_decoder",
        "_emit_lock",
        "_encoding",
        "_feed",
        "_last_activity",
        "_nursery",
        "_options",
        "_owner",
        "_paused",
        "_resume_lot",
        "_server_side",
        "_sm",
        "_start_pending",
        "_timeout",
        "_timer_lot",
        "_unconsumed",
        "_unconsumed_size",
    )

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._options = StreamOptions(**options)
        self._sm = StateMachine()
        self._conn: _Conn | None = None
        self._owner: _Owner = self
        self._nursery: trio.Nursery | None = None
        self._block: Block | None = None  # a client stream's own async with block
        self._start_pending = False
        self._decoder: Decoder | None = None
        self._encoding: str | None = None
        self._paused = False
        self._resume_lot: trio.lowlevel.ParkingLot | None = None  # made when first needed
        self._timeout = 0.0
        self._timer_lot: trio.lowlevel.ParkingLot | None = None
        self._last_activity = 0.0
        self._bytes_read = 0
        self._bytes_written = 0
        self._emit_lock: trio.Lock | None = None
        self._feed: _Feed | None = None
        self._unconsumed: list[bytes | str] = []
        self._unconsumed_size = 0
        self._carry = b""
        self._server_side = False

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
        return stream

    @classmethod
    def _for_server(
        cls,
        transport: trio.abc.Stream,
        options: StreamOptions,
        owner: _Owner,
        peer: Any,
        fresh: bool,
    ) -> Stream:
        """A server-side stream: *owner* (the server) runs it and gets its
        failures; *peer* is the address ``accept()`` returned; *fresh* says
        the socket has the kernel's default options."""
        stream = cls()
        stream._options = options
        stream._owner = owner
        stream._server_side = True
        stream._adopt(transport, peer, fresh=fresh)
        stream._start_pending = False
        return stream

    def _adopt(self, transport: trio.abc.Stream, peer: Any = None, *, fresh: bool = False) -> None:
        conn = _Conn(target=None, transport=transport)
        if isinstance(transport, SocketTransport):
            conn.direct = transport
        self._conn = conn
        self._sm.state = State.OPEN
        self._note_addresses(conn, peer)
        self._apply_socket_options(fresh=fresh)
        self._start_pending = True
        self._secure_from_first_byte(conn)

    def _secure_from_first_byte(self, conn: _Conn) -> None:
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
        hostname = self._options.server_hostname
        if hostname is None and not self._server_side and conn.target is not None:
            hostname = conn.target.host if conn.target.path is None else None
        conn.upgrade = _Upgrade(context, self._server_side, hostname, True)
        conn.direct = None

    # -- structured lifecycle --------------------------------------------

    async def __aenter__(self) -> Self:
        if self._server_side:
            raise StreamStateError("a server-side stream runs in its server's block")
        if self._block is None:
            self._block = Block()
        self._nursery = await self._block.enter("stream")
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
            assert self._block is not None
            return await self._block.exit(exc, self._wait_closed_on_exit, self.destroy)
        finally:
            self._nursery = None

    async def _wait_fully_closed(self) -> None:
        while self._conn is not None and not self._conn.closed:
            await self._conn.wait_closed()
        await trio.lowlevel.checkpoint()

    async def _wait_closed_on_exit(self) -> None:
        # Leaving the block is a checkpoint: a cancel point here, and the
        # schedule point of the block's nursery as it exits.
        while self._conn is not None and not self._conn.closed:
            await self._conn.wait_closed()
        await trio.lowlevel.checkpoint_if_cancelled()

    # _Owner, for a stream that runs in its own block.
    def _listener_failed(self, exc: BaseException) -> None:
        self.destroy()
        if self._block is not None:
            self._block.fail(exc)

    def _unhandled_error(self, stream: Stream, exc: BaseException) -> None:
        if self._block is not None:
            self._block.fail(exc)

    def _lifecycle_done(self, stream: Stream) -> None:
        pass  # the block waits for 'close' itself

    def _spawn(self) -> None:
        conn = self._conn
        assert conn is not None
        self._start_pending = False
        if self._nursery is None:
            raise StreamStateError("the stream is not running")
        self._nursery.start_soon(self._lifecycle, conn, self._nursery, name=_TASK_NAME)

    # -- the connection's tasks ------------------------------------------

    async def _lifecycle(self, conn: _Conn, nursery: trio.Nursery) -> None:
        """Run one connection from connect (or adoption) to ``'close'``.

        *nursery* is the one this task runs in (the stream's block, or the
        server's); the writer and the timer are started there too, each under
        a cancel scope of the connection, which ``destroy()`` and failures
        cancel with the lifecycle's own. A connection costs no nursery.

        The lifecycle runs in *steps*, each in one cancel scope
        (:meth:`_Conn.step`); usually one step lasts the whole connection, so
        an idle connection costs one scope. Reading happens in *sessions* (a
        TLS upgrade comes between two). :meth:`_wake_reader` cancels the step
        only while a session is blocked in ``receive_some``, where Trio
        guarantees that nothing was consumed; the next step picks up where it
        stopped, delivering first a chunk that was received just as the scope
        was cancelled.
        """
        conn.task_nursery = nursery
        started, eof, held = False, False, None
        try:
            while not (started and conn.io_cancelled):
                with conn.step() as scope:
                    if not started:
                        started = True
                        if not await self._start(conn):
                            return
                    if held is not None:
                        chunk, held = held, None
                        await self._wait_resumed()
                        if conn.need_drain:
                            await self._drain_owed(conn)
                        await self._deliver(chunk)
                    while not (eof or scope.cancel_called):
                        upgrade = conn.upgrade
                        if upgrade is not None and not upgrade.done.is_set():
                            await self._secure(conn, upgrade)
                        eof, held = await self._read_session(conn, scope)
                    if scope.cancel_called:
                        continue  # woken (or stopped): the rest in a fresh step
                    if not conn.read_stopped:  # no FIN came from the peer: no 'end'
                        await self._end_of_input(conn)
                    # The writable side ends with end(): the writer (started
                    # then if not before) sends what is queued, then the EOF.
                    await conn.wait_writer_finished()
                    return
        except TransportError as failure:
            self._fail(conn, failure.error)
        except Exception as exc:  # a listener raised
            self._owner._listener_failed(exc)  # pyright: ignore[reportPrivateUsage]  # the internal _Owner protocol
        finally:
            conn.task_nursery = None
            for task_scope in conn.scopes:
                task_scope.cancel()  # the timer, if any (and the writer, if destroyed)
            try:
                await self._teardown(conn)
            finally:
                self._owner._lifecycle_done(self)  # pyright: ignore[reportPrivateUsage]  # the internal _Owner protocol

    async def _start(self, conn: _Conn) -> bool:
        """Connect (unless adopted), start the writer's queued work and the
        timer, emit ``'connect'``; ``False`` if destroyed meanwhile."""
        self._last_activity = trio.current_time()
        if self._timeout:
            self._start_timer(conn)
        if conn.transport is None:
            assert conn.target is not None
            conn.transport, peer = await self._open(conn.target)
            if conn.io_cancelled:
                return False  # destroyed as the connection came up: teardown closes it
            if conn.upgrade is None:
                conn.direct = conn.transport
            self._note_addresses(conn, peer)
            self._apply_socket_options(fresh=True)
            self._sm.apply(Input.CONNECTED)
            conn.flushed()  # drain() waits out the connecting
        self._kick_writer(conn)  # what was queued while connecting, an early end()
        await self._emit("connect")
        return True

    async def _drain_owed(self, conn: _Conn) -> None:
        """The ``'drain'`` owed to a ``write()`` that returned ``False`` but
        went out at once (try-write): emitted before the next ``'data'`` or
        ``'end'``, as Node emits it on the next tick. The writer emits the
        one owed to bytes that had to be queued."""
        if conn.queue or conn.queued or "drain" not in self._events:
            return
        conn.need_drain = False
        conn.flushed()
        await self._emit("drain")

    def _start_task(self, conn: _Conn, fn: Callable[[_Conn], Any]) -> bool:
        """Start one of the connection's tasks (writer, timer) under its own
        cancel scope; ``False`` if the connection is finishing."""
        nursery = conn.task_nursery
        if nursery is None or conn.io_cancelled:
            return False
        scope = trio.CancelScope()
        try:
            nursery.start_soon(self._scoped, fn, conn, scope, name=_TASK_NAME)
        except RuntimeError:  # the nursery is closing
            return False
        conn.scopes.append(scope)
        return True

    async def _scoped(
        self, fn: Callable[[_Conn], Any], conn: _Conn, scope: trio.CancelScope
    ) -> None:
        with scope:
            await self._guarded(fn, conn)

    async def _guarded(self, fn: Callable[[_Conn], Any], conn: _Conn) -> None:
        try:
            await fn(conn)
        except TransportError as failure:
            self._fail(conn, failure.error)
        except Exception as exc:  # a listener raised
            self._owner._listener_failed(exc)  # pyright: ignore[reportPrivateUsage]  # the internal _Owner protocol

    async def _open(self, target: _Target) -> tuple[SocketTransport, Any]:
        """A connected transport, and the address it reached."""
        candidates: list[tuple[int, int, int, Any]]
        if target.path is not None:
            candidates = [(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM, 0, target.path)]
        else:
            numeric = _numeric_candidates(target.host, target.port)
            if numeric is not None:
                candidates = numeric
            else:
                with transport_errors():
                    try:
                        infos = await trio.socket.getaddrinfo(
                            target.host, target.port, type=_stdlib_socket.SOCK_STREAM
                        )
                    except UnicodeError as exc:  # not a valid host name (IDNA): not found
                        raise _stdlib_socket.gaierror(
                            _stdlib_socket.EAI_NONAME, f"invalid host name {target.host!r}: {exc}"
                        ) from exc
                candidates = [(family, kind, proto, addr) for family, kind, proto, _, addr in infos]
        last_error: BaseException | None = None
        for family, kind, proto, address in candidates:
            try:
                plain = _stdlib_socket.socket(family, kind, proto)
            except OSError as exc:  # EMFILE, or a family this host lacks
                last_error = TransportError(translate(exc))
                continue
            plain.setblocking(False)
            try:
                await connect(plain, address)
            except OSError as exc:
                plain.close()
                last_error = TransportError(translate(exc))
                continue
            except BaseException:
                plain.close()
                raise
            return SocketTransport(plain), address
        assert last_error is not None
        raise last_error

    async def _end_of_input(self, conn: _Conn) -> None:
        """The peer's FIN: kept data for a consumer that came meanwhile, the
        decoder's tail, then ``'end'``."""
        if conn.need_drain:
            await self._drain_owed(conn)  # before the kept data and the decoder's tail
        await self._wait_resumed()  # the decoder's tail and 'end' come after data: not while paused
        if self._unconsumed and self._has_consumer():
            await self._flush_unconsumed()
        if self._carry:
            await self._deliver(b"")
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                await self._deliver_decoded(tail)
        if not self._sm.can(Input.PEER_END):
            return  # the stream failed or was destroyed meanwhile (e.g. the writer's EPIPE)
        self._sm.apply(Input.PEER_END)
        if self._feed is not None:
            self._feed.finish(None)
        await self._emit("end")
        if not self._options.allow_half_open and self._sm.state is State.WRITE_ONLY:
            self.end()

    async def _read_session(
        self, conn: _Conn, scope: trio.CancelScope
    ) -> tuple[bool, bytes | None]:
        """One read session: ``(eof, chunk to deliver outside the scope)``."""
        transport = conn.transport
        assert transport is not None
        receive = transport.receive_some
        limit = self._options.high_water_mark
        upgrade = conn.upgrade
        while True:
            if upgrade is not conn.upgrade:  # set_secure() was called
                return False, None
            if self._unconsumed and self._has_consumer():
                if conn.need_drain:
                    await self._drain_owed(conn)
                await self._flush_unconsumed()
            if self._paused or (
                self._unconsumed and self._unconsumed_size >= limit and not self._has_consumer()
            ):
                await self._park_reader()
                continue
            conn.in_receive = True
            try:
                data = await receive(READ_SIZE)
            except (OSError, trio.BrokenResourceError) as exc:
                raise TransportError(translate(exc)) from None
            except trio.ClosedResourceError as exc:
                if conn.wrote_eof:  # we closed a transport without send_eof() after end()
                    conn.read_stopped = True
                    return True, None
                raise TransportError(translate(exc)) from None
            finally:
                conn.in_receive = False
            if not data:
                return True, None
            if type(data) is not bytes:
                data = bytes(data)  # trio's in-memory streams return bytearray
            self._bytes_read += len(data)
            if self._timeout:
                self._last_activity = trio.current_time()
            if scope.cancel_called:
                return False, data
            if self._paused:
                await self._wait_resumed()
            if conn.need_drain:
                await self._drain_owed(conn)
            lock = self._emit_lock
            if (
                self._decoder is None
                and self._sm.state is not State.DESTROYED
                and self._feed is None
                and not self._unconsumed
                and not self._carry
                and (lock is None or not lock.locked())
            ):
                # The common case, inline: bytes straight to the 'data' listeners.
                entries = self._events.get("data")
                if entries is not None:
                    pending = self._run("data", entries, 0, (data,))
                    if pending is not None:
                        await self._finish_emission(pending)
                    continue
            await self._deliver(data)

    def _has_consumer(self) -> bool:
        feed = self._feed
        return "data" in self._events or (feed is not None and feed.alive)

    def _wake_reader(self, *, upgrade: bool = False) -> None:
        """A consumer arrived, the stream resumed, or TLS starts: let the
        reader go on. A receive is interrupted only on a plaintext transport
        (interrupting a TLS read could lose a record)."""
        if self._resume_lot is not None:
            self._resume_lot.unpark_all()
        conn = self._conn
        if (
            conn is not None
            and conn.in_receive
            and conn.step_scope is not None
            and conn.tls is None
            and (upgrade or self._unconsumed)
        ):
            conn.step_scope.cancel()

    async def _secure(self, conn: _Conn, upgrade: _Upgrade) -> None:
        """Upgrade the connection to TLS, then emit ``'secure'``.

        Everything read before ``set_secure()`` was delivered as plaintext by
        now; plaintext nobody consumed is dropped, so it can never come out
        after ``'secure'``. The writer has sent the plaintext written before
        the call and waits; the reader is the only task using the socket.
        """
        if conn.need_drain:
            await self._drain_owed(conn)  # owed to plaintext that went out at once
        # Plaintext the decoder still holds (a split character) ends here too.
        if self._carry:
            await self._deliver(b"")
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                await self._deliver_decoded(tail)
            self._decoder = get_decoder(self._encoding or "utf8")
        if self._unconsumed and self._has_consumer():
            await self._flush_unconsumed()
        self._unconsumed.clear()
        self._unconsumed_size = 0
        await upgrade.writer_ready.wait()
        raw = conn.transport
        assert raw is not None
        tls = make_transport(
            raw,
            upgrade.context,
            server_side=upgrade.server_side,
            server_hostname=upgrade.server_hostname,
            reject_unauthorized=upgrade.reject_unauthorized,
        )
        conn.transport = tls  # closing the stream now closes the socket through it
        with transport_errors():
            await tls.do_handshake()
        conn.tls = tls
        conn.verification = verify(
            tls.ssl_object,
            upgrade.context,
            server_side=upgrade.server_side,
            server_hostname=upgrade.server_hostname,
            reject_unauthorized=upgrade.reject_unauthorized,
        )
        upgrade.done.set()
        await self._emit("secure")

    async def _flush_unconsumed(self) -> None:
        while self._unconsumed and self._has_consumer() and not self._paused:
            chunk = self._unconsumed.pop(0)
            self._unconsumed_size -= len(chunk)
            await self._deliver_to_consumers(chunk)

    async def _deliver(self, data: bytes) -> None:
        if self._carry:
            data, self._carry = self._carry + data, b""
        if self._decoder is not None:
            text = self._decoder.decode(data)
            if text:
                await self._deliver_decoded(text)
            return
        await self._deliver_decoded(data)

    async def _deliver_decoded(self, chunk: bytes | str) -> None:
        if self._unconsumed or not self._has_consumer():
            # Nobody takes data yet: keep it (bounded by high_water_mark, see
            # _read_session) for the first 'data' listener or ``async for``.
            self._unconsumed.append(chunk)
            self._unconsumed_size += len(chunk)
            await self._flush_unconsumed()
            return
        await self._deliver_to_consumers(chunk)

    async def _deliver_to_consumers(self, chunk: bytes | str) -> None:
        if self._sm.state is State.DESTROYED:
            return  # destroy() means close now: nothing more is delivered
        if "data" in self._events:
            await self._emit("data", chunk)
        feed = self._feed
        if feed is not None and not feed.finished and not await feed.put(chunk):
            if self._feed is feed:  # not a new loop started meanwhile
                self._feed = None
            if "data" not in self._events:
                # The loop was left: nobody took this chunk; keep it, first in line.
                self._unconsumed.insert(0, chunk)
                self._unconsumed_size += len(chunk)

    async def _park_reader(self) -> None:
        if self._resume_lot is None:
            self._resume_lot = trio.lowlevel.ParkingLot()
        await self._resume_lot.park()

    async def _wait_resumed(self) -> None:
        while self._paused:
            await self._park_reader()

    def _kick_writer(self, conn: _Conn) -> None:
        """Wake the writer, or start it if it has work (it is started lazily:
        a stream whose writes all go out at once never needs the task)."""
        if conn.writer_running:
            assert conn.writer_lot is not None
            conn.writer_lot.unpark()
            return
        state = self._sm.state
        if conn.task_nursery is None or conn.transport is None or conn.io_cancelled:
            return  # the lifecycle kicks it once the connection is up
        if state in (State.OPENING, State.OPENING_ENDED, State.DESTROYED, State.CLOSED):
            return
        upgrade = conn.upgrade
        if not (
            conn.queue
            or (upgrade is not None and not upgrade.done.is_set())
            or state in (State.READ_ONLY, State.ENDED)
            or (conn.need_drain and "drain" in self._events)
        ):
            return
        if self._start_task(conn, self._write_loop):
            conn.writer_lot = trio.lowlevel.ParkingLot()
            conn.writer_running = True

    async def _write_loop(self, conn: _Conn) -> None:
        conn.writer_task = trio.lowlevel.current_task()
        transport = conn.transport
        if transport is None:  # started just as the connection closed
            conn.finish_writer()
            return
        send_all = transport.send_all
        try:
            while True:
                upgrade = conn.upgrade
                if upgrade is not None and not upgrade.done.is_set():
                    # Plaintext written before set_secure() goes first.
                    while conn.plain_queue:
                        chunk = conn.plain_queue.pop(0)
                        with transport_errors(sending=True):
                            await send_all(chunk)
                        conn.queued -= len(chunk)
                    if not conn.queued:  # nothing written since: no need to wait for TLS
                        conn.flushed()
                        if conn.need_drain:
                            await self._emit_drain(conn)
                    upgrade.writer_ready.set()
                    await upgrade.done.wait()
                    transport = conn.transport
                    if transport is None:  # torn down as the handshake ended
                        return
                    send_all = transport.send_all
                    continue
                queue = conn.queue
                if queue:
                    data = self._take(conn)
                    with transport_errors(sending=True):
                        await send_all(data)
                    conn.queued -= len(data)
                    if self._timeout:
                        self._last_activity = trio.current_time()
                    if not conn.queued:  # nor plaintext moved aside by set_secure()
                        conn.flushed()
                        if conn.need_drain:
                            await self._emit_drain(conn)
                    continue
                if conn.need_drain and self._sm.state is not State.OPENING:
                    # Everything write() took went out at once (try-write).
                    await self._emit_drain(conn)
                    conn.flushed()
                    continue
                if self._sm.state in (State.READ_ONLY, State.ENDED):
                    conn.wrote_eof = True
                    with transport_errors(sending=True):
                        if isinstance(transport, trio.abc.HalfCloseableStream):
                            await transport.send_eof()
                        else:
                            await transport.aclose()
                    return
                assert conn.writer_lot is not None
                await conn.writer_lot.park()
        finally:
            conn.finish_writer()

    async def _emit_drain(self, conn: _Conn) -> None:
        """The writer's ``'drain'``. A listener that writes again owes another
        ``'drain'`` at once when the kernel takes the bytes: such writes share
        a step up to ``STEP_WRITES`` of them or ``STEP_BYTES``, then the
        writer yields so that other tasks run."""
        conn.need_drain = False
        await self._emit("drain")
        conn.step_writes += 1
        if conn.step_writes >= STEP_WRITES or self._bytes_written - conn.step_start >= STEP_BYTES:
            conn.step_writes = 0
            conn.step_start = self._bytes_written
            await trio.lowlevel.checkpoint()

    @staticmethod
    def _take(conn: _Conn) -> bytes | memoryview:
        queue = conn.queue
        if len(queue) == 1:
            conn.queue = []
            return queue[0]
        size = 0
        count = 0
        for chunk in queue:
            if count and size + len(chunk) > STEP_BYTES:
                break
            size += len(chunk)
            count += 1
        if count == len(queue):
            conn.queue = []
        else:
            conn.queue = queue[count:]
        return b"".join(queue[:count]) if count > 1 else queue[0]

    def _start_timer(self, conn: _Conn) -> None:
        if not conn.timer_running and self._start_task(conn, self._timer_loop):
            conn.timer_running = True

    async def _timer_loop(self, conn: _Conn) -> None:
        fired_for: float | None = None
        while True:
            period = self._timeout
            if not period:
                if self._timer_lot is None:
                    self._timer_lot = trio.lowlevel.ParkingLot()
                await self._timer_lot.park()
                continue
            last = self._last_activity
            deadline = last + period
            if trio.current_time() >= deadline:
                if last != fired_for:
                    fired_for = last
                    await self._emit("timeout")
                # One 'timeout' per idle period: look again one period later.
                deadline = trio.current_time() + period
            # A moving deadline: set_timeout() cancels this wait to re-plan.
            with trio.move_on_at(deadline) as wait:
                conn.timer_wait = wait
                await trio.sleep_forever()
            conn.timer_wait = None

    async def _teardown(self, conn: _Conn) -> None:
        """Close the transport, then emit ``'error'`` (if any) and ``'close'``."""
        if self._sm.state not in (State.ENDED, State.DESTROYED):
            self._sm.apply(Input.DESTROY)
        conn.queue.clear()
        conn.queued = 0
        conn.flushed()
        conn.direct = None
        self._local_address(conn)  # it stays readable after 'close'
        transport, conn.transport = conn.transport, None
        if isinstance(transport, SocketTransport):
            transport.close_now()  # no need to wait: 'close' follows at once
        elif transport is not None:
            # Shielded and bounded: also when the owner's scope is cancelled,
            # the transport closes and 'close' is emitted below.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(transport)
        error = conn.error
        unhandled = False
        try:
            if error is not None:
                handled_by_iterator = self._feed is not None and self._feed.finish(error)
                if self.listener_count("error"):
                    await self._emit_final("error", error)
                elif not handled_by_iterator:
                    unhandled = True
            elif self._feed is not None:
                self._feed.finish(None)
        finally:
            # Even when an async 'error' listener was cancelled: 'close' comes.
            self._sm.apply(Input.CLOSED)
            try:
                await self._emit_final("close", error is not None)
            finally:
                conn.set_closed()
                if unhandled:
                    assert error is not None
                    self._owner._unhandled_error(self, error)  # pyright: ignore[reportPrivateUsage]  # the internal _Owner protocol

    async def _emit_final(self, event: str, *args: object) -> None:
        """Emit ``'error'`` / ``'close'``: a listener's exception goes to the owner."""
        try:
            await self._emit(event, *args)
        except Exception as exc:
            self._owner._listener_failed(exc)  # pyright: ignore[reportPrivateUsage]  # the internal _Owner protocol

    def _fail(self, conn: _Conn, error: BaseException) -> None:
        """Record a network failure (the first one wins) and stop the I/O."""
        if isinstance(error, BrokenPipeError):
            raw = getattr(conn.transport, "raw", conn.transport)
            if isinstance(raw, SocketTransport):
                reset = raw.reset_error()
                if reset is not None:
                    error = translate(reset)  # what Node reports: its read sees the reset
        if conn.error is None and not conn.destroyed:
            conn.error = error
            if self._sm.state is not State.DESTROYED:
                self._sm.apply(Input.DESTROY)
        conn.cancel_io()

    async def _emit(self, event: str, *args: object) -> None:
        """Emit *event* after any async listener still running. As Node, no
        ``'drain'`` after ``end()``, also when ``end()`` came while an async
        listener held the emission back."""
        if event == "drain" and self._sm.state in WRITE_ENDED:
            return
        lock = self._emit_lock
        if lock is not None and lock.locked():
            async with lock:
                if event == "drain" and self._sm.state in WRITE_ENDED:
                    return
                pending = self.emit(event, *args)
                if pending is not None:
                    await pending
            return
        pending = self.emit(event, *args)
        if pending is not None:
            await self._finish_emission(pending)

    async def _finish_emission(self, pending: Awaitable[None]) -> None:
        """Await the async rest of an emission, keeping other emitters out."""
        lock = self._emit_lock
        if lock is None:
            lock = self._emit_lock = trio.Lock()
        lock.acquire_nowait()
        try:
            await pending
        finally:
            lock.release()

    # -- connecting --------------------------------------------------------

    @overload
    def connect(self, port: int, host: str = ...) -> Self: ...
    @overload
    def connect(self, port: str | os.PathLike[str]) -> Self: ...
    def connect(self, port: int | str | os.PathLike[str], host: str = "127.0.0.1") -> Self:
        """Start connecting to *port* on *host* (TCP) or to a UNIX socket path.

        Legal when the stream is ``"closed"``, including after an earlier
        connection closed (reconnecting keeps listeners and encoding;
        ``bytes_read`` / ``bytes_written`` start again from 0). The result
        arrives as ``'connect'`` or as ``'error'`` then ``'close'(True)``.
        Outside a running ``async with`` the attempt starts when the block
        starts. Returns the stream.

        Raises:
            TypeError, ValueError: bad port, host or path.
            StreamStateError: the stream is not ``"closed"`` (or still closing).
        """
        if self._block is not None and self._block.shutting_down:
            raise StreamStateError("connect() is not allowed: the stream's block is exiting")
        if self._server_side:
            raise StreamStateError("connect() is not allowed on a stream a server accepted")
        if is_path(port):
            target = _Target(path=os.fspath(port))  # type: ignore[arg-type]  # is_path checked it
            if not target.path:
                raise ValueError("the UNIX socket path is empty")
        else:
            if not isinstance(host, str):
                raise TypeError(f"host must be a str, not {type(host).__name__}")
            target = _Target(port=check_port(port, allow_zero=False), host=host or "127.0.0.1")
        self._sm.apply(Input.CONNECT, "connect()")
        self._conn = conn = _Conn(target=target)
        self._secure_from_first_byte(conn)
        self._unconsumed.clear()
        self._unconsumed_size = 0
        self._bytes_read = 0
        self._bytes_written = 0
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
        state = self._sm.state
        if state not in WRITABLE:
            raise StreamStateError(f"write() is not allowed: the stream is {self._sm.describe()}")
        conn = self._conn
        assert conn is not None
        self._bytes_written += len(chunk)
        # As Node: the answer counts the chunk as buffered, even if it can be
        # sent at once below; 'drain' then follows from the writer task.
        buffered = conn.queued + len(chunk)
        accepted = state is not State.OPENING and (
            buffered < self._options.high_water_mark or not buffered
        )
        if not accepted:
            conn.need_drain = True
        if chunk:
            rest: bytes | memoryview = chunk
            direct = conn.direct
            if direct is not None and not conn.queued and state is not State.OPENING:
                # Nothing queued or in flight: send now, as libuv's try-write.
                try:
                    sent = direct.try_send(chunk)
                except OSError:
                    sent = 0  # the writer meets the error again and reports it
                if self._timeout and sent:
                    self._last_activity = trio.current_time()
                if sent == len(chunk):
                    if not accepted and "drain" in self._events:
                        self._kick_writer(conn)  # to emit 'drain'
                    return accepted
                if sent:
                    rest = memoryview(chunk)[sent:]  # without a copy
            conn.queue.append(rest)
            conn.queued += len(rest)
            self._kick_writer(conn)
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
        if self._sm.can(Input.END):
            self._sm.apply(Input.END)
            conn = self._conn
            assert conn is not None
            direct = conn.direct
            if (
                direct is not None
                and not conn.queued
                and not conn.writer_running
                and self._sm.state is not State.OPENING_ENDED
            ):
                # Nothing queued: FIN now, without waking a writer task.
                try:
                    direct.try_send_eof()
                except OSError:
                    pass  # the writer meets the failure again and reports it
                else:
                    conn.wrote_eof = True
                    conn.finish_writer()
                    return self
            self._kick_writer(conn)
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
        if conn is None or not self._sm.can(Input.DESTROY):
            return self
        self._sm.apply(Input.DESTROY)
        if error is not None and conn.error is None:
            conn.error = error
        conn.destroyed = error is None
        conn.direct = None
        conn.queue.clear()
        conn.queued = 0
        conn.need_drain = False
        conn.cancel_io()
        conn.flushed()
        return self

    # -- TLS -------------------------------------------------------------------

    def set_secure(
        self,
        context: ssl.SSLContext | None = None,
        *,
        server_side: bool | None = None,
        server_hostname: str | None = None,
        reject_unauthorized: bool = True,
    ) -> None:
        """Upgrade this live stream to TLS (STARTTLS); ``'secure'`` follows.

        Bytes written before the call go out in plaintext first, then the
        handshake; bytes written after it are encrypted. Everything read
        from the socket before the call is plaintext and is delivered as
        ``'data'`` before ``'secure'``; only bytes read after the call go
        to TLS. A failed handshake gives ``'error'`` then ``'close'(True)``.

        Args:
            context: the ``ssl.SSLContext``; default: a client context from
                ``ssl.create_default_context()``. A server side needs one
                with its certificate; one that holds CA certificates
                requests a client certificate.
            server_side: default ``True`` for a stream a server accepted.
            server_hostname: the name to verify (and send as SNI); default:
                the host this stream connected to.
            reject_unauthorized: ``False`` lets the handshake complete with a
                peer that does not verify (client side); see
                :meth:`verify_peer` and :attr:`authorization_error`.

        Raises:
            TypeError, ValueError: bad arguments.
            StreamStateError: the stream is not open, or is already secure.
        """
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
        if server_side is not None and not isinstance(server_side, bool):
            raise TypeError(f"server_side must be a bool, not {type(server_side).__name__}")
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise TypeError(f"server_hostname must be a str, not {type(server_hostname).__name__}")
        if not isinstance(reject_unauthorized, bool):
            raise TypeError(
                f"reject_unauthorized must be a bool, not {type(reject_unauthorized).__name__}"
            )
        side = self._server_side if server_side is None else server_side
        if side and context is None:
            raise ValueError(
                "a server-side set_secure() needs an ssl.SSLContext with a certificate"
            )
        conn = self._conn
        if conn is None or self._sm.state not in (State.OPENING, State.OPEN):
            raise StreamStateError(
                f"set_secure() is not allowed: the stream is {self._sm.describe()}"
            )
        if conn.upgrade is not None:
            raise StreamStateError("set_secure() is not allowed: the stream is already secure")
        if server_hostname is None and not side and conn.target is not None:
            server_hostname = conn.target.host if conn.target.path is None else None
        conn.upgrade = _Upgrade(
            context or default_client_context(), side, server_hostname, reject_unauthorized
        )
        conn.direct = None
        conn.plain_queue, conn.queue = conn.queue, []
        self._kick_writer(conn)
        self._wake_reader(upgrade=True)

    @property
    def secure(self) -> bool:
        """Whether the TLS handshake has completed on this connection."""
        return self._conn is not None and self._conn.tls is not None

    def verify_peer(self) -> bool:
        """Whether the peer's certificate verified against the trusted CAs
        (``False`` before a handshake)."""
        verification = None if self._conn is None else self._conn.verification
        return verification is not None and verification.verified

    @property
    def authorization_error(self) -> str | None:
        """Why the peer did not verify (``"CERT_HAS_EXPIRED: ..."``), or ``None``."""
        verification = None if self._conn is None else self._conn.verification
        return None if verification is None else verification.error

    def get_peer_certificate(self) -> dict[str, Any] | None:
        """The peer's certificate (verified or not) as Node's fields, or ``None``."""
        conn = self._conn
        if conn is None or conn.tls is None:
            return None
        return peer_certificate(conn.tls.ssl_object)

    # -- reading ---------------------------------------------------------------

    def pause(self) -> Self:
        """Stop ``'data'``: the socket is not read until :meth:`resume`."""
        self._paused = True
        return self

    def resume(self) -> Self:
        """Restart ``'data'`` after :meth:`pause`."""
        self._paused = False
        self._wake_reader()
        return self

    @property
    def is_paused(self) -> bool:
        """Whether :meth:`pause` is in effect (Node's ``isPaused()``)."""
        return self._paused

    def set_encoding(self, encoding: str | None = None) -> Self:
        """Deliver ``'data'`` as ``str`` decoded with *encoding* (``None``: bytes).

        Raises:
            TypeError: *encoding* is not a str or None.
            ValueError: unknown encoding.
        """
        new = None if encoding is None else get_decoder(encoding)
        held = b"" if self._decoder is None else self._decoder.pending()
        kept = self._unconsumed
        if kept:
            # Kept chunks were not delivered yet: they come in the new
            # encoding too, as Node's setEncoding() converts its buffer.
            # (The list is changed in place: an ``async for`` may hold it.)
            old = self._encoding or "utf8"  # text is only kept while an encoding is set
            raw = [chunk if isinstance(chunk, bytes) else encode(chunk, old) for chunk in kept]
            chunks = raw if new is None else [new.decode(chunk) for chunk in raw]
            kept[:] = [chunk for chunk in chunks if chunk]
            self._unconsumed_size = sum(map(len, kept))
        self._decoder = new
        self._encoding = encoding
        # Bytes the old decoder held (a split character) go first into the new one.
        self._carry = held + self._carry
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
        self._timeout = period
        if callback is not None:
            self.once("timeout", callback)
        conn = self._conn
        if conn is not None and conn.task_nursery is not None:
            self._last_activity = trio.current_time()
            if period:
                self._start_timer(conn)
            if self._timer_lot is not None:
                self._timer_lot.unpark_all()
            if conn.timer_wait is not None:
                conn.timer_wait.cancel()  # a shorter period applies now
        return self

    @property
    def timeout(self) -> float:
        """The idle timeout in milliseconds; ``0`` means none."""
        return self._timeout * 1000

    def set_no_delay(self, no_delay: bool = True) -> Self:
        """Disable (``True``) or enable Nagle's algorithm, now or on connect."""
        if not isinstance(no_delay, bool):
            raise TypeError(f"no_delay must be a bool, not {type(no_delay).__name__}")
        self._options = attrs.evolve(self._options, no_delay=no_delay)
        self._apply_socket_options()
        return self

    def set_keep_alive(self, enable: bool = False, initial_delay: float = 0) -> Self:
        """Enable TCP keep-alive with *initial_delay* ms of idle time, now or on connect."""
        if not isinstance(enable, bool):
            raise TypeError(f"enable must be a bool, not {type(enable).__name__}")
        check_number("initial_delay", initial_delay)
        self._options = attrs.evolve(
            self._options, keep_alive=enable, keep_alive_initial_delay=initial_delay
        )
        self._apply_socket_options()
        return self

    def _apply_socket_options(self, *, fresh: bool = False) -> None:
        """Set ``no_delay`` and ``keep_alive`` on the socket; on a *fresh* one
        (connected or accepted here, so with the kernel's defaults: Nagle on,
        no keep-alive) only what differs from the defaults."""
        sock = None if self._conn is None else _plain_socket(self._conn.transport)
        if sock is None or sock.family not in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            return
        options = self._options
        try:
            if options.no_delay or not fresh:
                sock.setsockopt(
                    _stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, options.no_delay
                )
            if options.keep_alive or not fresh:
                sock.setsockopt(
                    _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_KEEPALIVE, options.keep_alive
                )
            if (
                options.keep_alive
                and options.keep_alive_initial_delay > 0
                and hasattr(_stdlib_socket, "TCP_KEEPIDLE")
            ):
                seconds = max(1, math.ceil(options.keep_alive_initial_delay / 1000))
                sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_KEEPIDLE, seconds)
        except OSError:  # the socket is already closed; the option applies on connect
            pass

    # -- properties -------------------------------------------------------------

    @property
    def ready_state(self) -> str:
        """``"closed"``, ``"opening"``, ``"open"``, ``"readOnly"`` or ``"writeOnly"``."""
        return self._sm.ready_state

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The underlying Trio socket while connected, else ``None``."""
        conn = self._conn
        if conn is None or conn.transport is None:
            return None
        self._local_address(conn)  # read now: the caller may close the socket
        return getattr(conn.transport, "socket", None)

    @property
    def bytes_read(self) -> int:
        """Bytes received on the current (or last) connection."""
        return self._bytes_read

    @property
    def bytes_written(self) -> int:
        """Bytes given to ``write()`` / ``end()`` on this connection, counted at the call."""
        return self._bytes_written

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
        return None if self._conn is None else self._local_address(self._conn)[0]

    @property
    def local_port(self) -> int | None:
        """This side's port (``None`` for UNIX sockets and before connecting)."""
        return None if self._conn is None else self._local_address(self._conn)[1]

    @property
    def encoding(self) -> str | None:
        """The encoding given to :meth:`set_encoding`, or ``None``."""
        return self._encoding

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
        return 0 if self._conn is None else self._conn.queued

    def _note_addresses(self, conn: _Conn, peer: Any = None) -> None:
        """Record the peer's address at once (*peer*, from ``accept()`` or
        ``connect()``, or ``getpeername()``, which fails after a reset); the
        local one is read when first asked for, or at the latest at teardown."""
        sock = _plain_socket(conn.transport)
        if sock is None or sock.family not in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            return
        family = "IPv6" if sock.family == _stdlib_socket.AF_INET6 else "IPv4"
        if peer is None:
            try:
                peer = sock.getpeername()
            except OSError:
                return
        conn.peer = (peer[0], peer[1], family)
        conn.local_unread = True

    @staticmethod
    def _local_address(conn: _Conn) -> tuple[str | None, int | None]:
        if conn.local_unread:
            conn.local_unread = False
            sock = _plain_socket(conn.transport)
            if sock is not None:
                try:
                    local = sock.getsockname()
                except OSError:  # closed under us
                    pass
                else:
                    conn.local = (local[0], local[1])
        return conn.local

    # -- Trio-native extras -----------------------------------------------------

    async def drain(self) -> None:
        """Wait until every queued byte has been handed to the kernel (and the
        ``'drain'`` owed to a ``write()`` that returned ``False`` was emitted).

        Returns at once (after a checkpoint) when nothing is queued.

        Raises:
            OSError: the stream failed before the queue emptied (its error).
            StreamStateError: the stream was destroyed before the queue emptied;
                or called in an async ``'drain'`` listener when it would have
                to wait (the writer waits for that listener: it would never return).
        """
        await trio.lowlevel.checkpoint()
        while True:
            conn = self._conn
            if conn is None:
                return
            if conn.error is not None:
                raise conn.error
            if conn.destroyed:
                raise StreamStateError("drain(): the stream was destroyed")
            state = self._sm.state
            if conn.queued == 0 and conn.need_drain and "drain" not in self._events:
                conn.need_drain = False  # nobody listens for the 'drain' this owed
            if (
                conn.queued == 0
                and state not in (State.OPENING, State.OPENING_ENDED)
                and not (conn.need_drain and state not in WRITE_ENDED)
            ):
                return  # flushed, and the 'drain' a False write() promised came first
            if conn.writer_task is trio.lowlevel.current_task():
                raise StreamStateError(
                    "drain() in an async 'drain' listener cannot wait: the writer that"
                    " would flush the queue is waiting for this listener to return"
                )
            await conn.wait_flushed()

    async def wait_closed(self) -> None:
        """Wait until the current connection has emitted ``'close'``.

        Cancelling the wait leaves the stream as it is.
        """
        await self._wait_fully_closed()

    def __aiter__(self) -> AsyncIterator[bytes | str]:
        """Iterate over received chunks (the same ones ``'data'`` gets).

        Ends at ``'end'``; raises the stream's error (which then counts as
        handled). Reads only as fast as the loop consumes.
        """
        if self._feed is not None and self._feed.alive:
            raise StreamStateError("the stream is already being iterated")
        send, receive = trio.open_memory_channel[Any](0)
        feed = _Feed(send)
        reading_over = self._sm.state in (
            State.CLOSED,
            State.WRITE_ONLY,
            State.ENDED,
            State.DESTROYED,
        )
        if reading_over:
            feed.finish(None)  # nothing more will be read: only what was kept
        self._feed = feed
        self._wake_reader()
        return _ChunkIterator(feed, receive, self._unconsumed if reading_over else None)

    def _add(self, event: str, listener: Callable[..., Any], once: bool) -> None:
        super()._add(event, listener, once)
        if event == "data":
            self._wake_reader()
        elif event == "drain" and self._conn is not None and self._conn.need_drain:
            self._kick_writer(self._conn)  # Node's idiom: once('drain') after a False write()

    # -- typed registration ----------------------------------------------------

    if TYPE_CHECKING:

        @overload  # type: ignore[override]  # narrower, typed per event
        def on(self, event: Literal["data"], listener: DataListener) -> Self: ...
        @overload
        def on(
            self,
            event: Literal["connect", "end", "drain", "timeout", "secure"],
            listener: NoArgListener,
        ) -> Self: ...
        @overload
        def on(self, event: Literal["error"], listener: ErrorListener) -> Self: ...
        @overload
        def on(self, event: Literal["close"], listener: CloseListener) -> Self: ...
        @overload
        def on(self, event: str) -> Callable[[_F], _F]: ...
        def on(self, event: str, listener: Any = None) -> Any: ...  # pyright: ignore[reportIncompatibleMethodOverride]  # narrower, typed per event

        @overload  # type: ignore[override]  # narrower, typed per event
        def once(self, event: Literal["data"], listener: DataListener) -> Self: ...
        @overload
        def once(
            self,
            event: Literal["connect", "end", "drain", "timeout", "secure"],
            listener: NoArgListener,
        ) -> Self: ...
        @overload
        def once(self, event: Literal["error"], listener: ErrorListener) -> Self: ...
        @overload
        def once(self, event: Literal["close"], listener: CloseListener) -> Self: ...
        @overload
        def once(self, event: str) -> Callable[[_F], _F]: ...
        def once(self, event: str, listener: Any = None) -> Any: ...  # pyright: ignore[reportIncompatibleMethodOverride]  # narrower, typed per event

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
    setEncoding = set_encoding
    setTimeout = set_timeout
    setNoDelay = set_no_delay
    setKeepAlive = set_keep_alive
    setSecure = set_secure
    verifyPeer = verify_peer
    getPeerCertificate = get_peer_certificate
    authorizationError = authorization_error
    addListener = EventEmitter.on
    removeListener = EventEmitter.off
    remove_listener = EventEmitter.off
    removeAllListeners = EventEmitter.remove_all_listeners
    listenerCount = EventEmitter.listener_count
    writableLength = write_queue_size
    isPaused = is_paused


class _Feed:
    """The reader's side of ``async for``: a zero-capacity hand-off.

    The stream holds the feed, never the iterator, so leaving the loop
    (``break``) drops the iterator, which closes its end and releases the
    reader.
    """

    __slots__ = ("error", "finished", "send")

    def __init__(self, send: trio.MemorySendChannel[Any]) -> None:
        self.send = send
        self.error: BaseException | None = None
        self.finished = False

    async def put(self, chunk: bytes | str) -> bool:
        """Hand *chunk* to the consumer; ``False`` if the consumer is gone."""
        try:
            await self.send.send(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.finished = True
            return False
        return True

    @property
    def alive(self) -> bool:
        """Whether a consumer still iterates (the loop was not left)."""
        return not self.finished and self.send.statistics().open_receive_channels > 0

    def finish(self, error: BaseException | None) -> bool:
        """End the iteration (raising *error* there); ``False`` if already ended
        or nobody iterates any more."""
        if not self.alive:
            self.finished = True
            return False
        self.finished = True
        self.error = error
        self.send.close()
        return True


class _ChunkIterator:
    """``async for chunk in stream``."""

    __slots__ = ("_feed", "_kept", "_receive")

    def __init__(
        self,
        feed: _Feed,
        receive: trio.MemoryReceiveChannel[Any],
        kept: list[bytes | str] | None,
    ) -> None:
        self._feed = feed
        self._receive = receive
        self._kept = kept  # after the end of reading: the chunks nobody took

    def __aiter__(self) -> _ChunkIterator:
        return self

    async def __anext__(self) -> bytes | str:
        if self._kept:
            await trio.lowlevel.checkpoint()
            return self._kept.pop(0)
        try:
            return await self._receive.receive()  # type: ignore[no-any-return]  # chunks only
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        error, self._feed.error = self._feed.error, None
        if error is not None:
            raise error
        raise StopAsyncIteration

    def __del__(self) -> None:
        # Leaving ``async for`` drops the iterator: release the reader.
        self._receive.close()
