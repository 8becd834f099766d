"""One connection of a stream: its tasks, cancel scopes and transport.

How this works
--------------

A :class:`Connection` is made by every ``connect()`` (and by adoption:
``wrap()``, a server's accept), so reconnecting a stream starts clean. It
owns the connection's Trio side; the rules live in the stream's
:class:`~trio_netstream._flow.Flow`, which it shares with the stream's sync
API. Its tasks run in the nursery of the block that owns the stream (the
stream's own ``async with``, or its server's):

* :meth:`Connection.run`, the **lifecycle**: connect (``_dial``) or adopt,
  emit ``'connect'``, run the reader (``_reader``) inline, then
  :meth:`teardown`: close the transport, emit ``'error'`` (if any) and
  ``'close'``;
* the **writer** (``_writer``), started when there is something to send;
* the **timer** (``_timer``), started when ``set_timeout`` is used.

The lifecycle runs in *steps*, each in one cancel scope (:meth:`step`); the
writer and the timer each run in a scope of their own. A network failure
(:meth:`fail`) or ``destroy()`` (:meth:`stop`) cancels them all. A
listener's exception is not a network failure: it goes to the stream's
*owner* (:class:`Owner`), which cancels its block and re-raises it.

Every event of the connection goes through :meth:`Connection.emit`, which
asks the flow whether it is allowed (no ``'drain'`` after ``end()``) and
refuses everything once ``'close'`` was emitted: ``'close'`` is final by
construction, whatever task is still unwinding. Emission is ordered and
never concurrent: an async listener holds the others back (the
stream's emission lock, kept in its flow).
"""

from __future__ import annotations

import socket as _stdlib_socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ._attempts import dial
from ._dial import set_socket_options
from ._errors import StreamStateError, TransportError, translate
from ._pull import wake_puller
from ._reader import (
    deliver,
    end_of_input,
    has_consumer,
    quiet_read,
    read_session,
    reads_quietly,
    secure,
    settle,
)
from ._socket import SocketTransport
from ._state import Input
from ._timer import start_timer
from ._writer import kick_writer, let_a_failing_send_report, wait_writer_finished

if TYPE_CHECKING:
    from ._flow import Flow
    from ._options import StreamOptions
    from ._proxy import ProxyHeader
    from ._timer import Timer
    from ._tls import TLSTransport, Verification
    from ._writer import Writer

__all__ = [
    "TASK_NAME",
    "Connection",
    "Owner",
    "Upgrade",
    "apply_socket_options",
    "check_drain_may_wait",
    "descends_from",
    "local_address",
    "note_addresses",
    "plain_socket",
]

_INET = (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6)

# The name of a connection's Trio tasks (a constant: Trio would otherwise
# build one from the function's name for every task).
TASK_NAME = "trio_netstream connection"


class Owner(Protocol):
    """Who a stream reports to: its own ``async with`` block, or its server."""

    def listener_failed(self, exc: BaseException) -> None:
        """A listener raised: cancel the owner's block and re-raise *exc* from it."""

    def unhandled_error(self, stream: object, exc: BaseException) -> None:
        """An ``'error'`` nobody listened to."""

    def connection_done(self, stream: object) -> None:
        """The connection's lifecycle has ended (after ``'close'``)."""

    async def secured(self, stream: object) -> None:
        """A TLS server's stream finished its handshake (after its ``'secure'``)."""

    async def tls_failed(self, stream: object, exc: BaseException) -> bool:
        """A TLS server's stream failed before its handshake completed;
        whether that failure is handled (``'tlsClientError'`` listened to)."""
        ...


class Host(Protocol):
    """What a connection needs of its stream besides the flow: its
    listeners, and ``end()`` (``allow_half_open=False``)."""

    def emit(self, event: str, *args: object) -> Awaitable[None] | None: ...

    def listener_count(self, event: str) -> int: ...

    def end(self) -> object: ...


@attrs.define(eq=False, slots=True)
class Upgrade:
    """A requested TLS upgrade (``set_secure()`` or the ``ssl`` option)."""

    context: ssl.SSLContext
    server_side: bool
    server_hostname: str | None
    reject_unauthorized: bool
    writer_ready: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)
    tls: TLSTransport | None = None  # once the handshake completed
    verification: Verification | None = None
    alpn_protocols: tuple[str, ...] | None = None
    handshake_timeout: float = 120_000  # ms; 0: none
    session: ssl.SSLSession | None = None  # to resume (client)
    first_byte: bool = False  # the ssl option, not set_secure()


def descends_from(task: trio.lowlevel.Task | None, ancestor: trio.lowlevel.Task | None) -> bool:
    """Whether *task* is *ancestor* or was started in a nursery it opened."""
    if ancestor is None:
        return False
    while task is not None:
        if task is ancestor:
            return True
        nursery = task.parent_nursery
        task = None if nursery is None else nursery.parent_task
    return False


def plain_socket(transport: object) -> Any:
    """The socket under *transport* for options and addresses (the stdlib one
    of our own transport, so no Trio wrapper is made), or ``None``."""
    raw = getattr(transport, "raw", transport)  # under TLS
    if isinstance(raw, SocketTransport):
        return raw.plain
    return getattr(raw, "socket", None)  # e.g. a wrapped trio.SocketStream


class Connection:
    """One connection's Trio side (see the module's docstring)."""

    __slots__ = (
        "accepted",
        "closed",
        "closed_event",
        "destroyed",
        "direct",
        "error",
        "flow",
        "flushed_lot",
        "host",
        "in_receive",
        "local",
        "local_unread",
        "options",
        "over",
        "owner",
        "peer",
        "proxy",
        "quiet_wait",
        "read_stopped",
        "reader_task",
        "resume_lot",
        "scopes",
        "send_error",
        "send_failed_first",
        "step_scope",
        "stopped",
        "target",
        "task_nursery",
        "timer",
        "transport",
        "upgrade",
        "writer",
        "wrote_eof",
    )

    def __init__(
        self,
        host: Host,
        flow: Flow,
        owner: Owner,
        options: StreamOptions,
        *,
        target: Any = None,
        transport: trio.abc.Stream | None = None,
    ) -> None:
        self.host = host
        self.flow = flow
        self.owner = owner
        self.options = options  # the stream's, replaced by set_no_delay()...
        self.target = target  # a _dial.Target, or None for an adopted transport
        self.accepted = False  # a server accepted it
        self.transport = transport
        # Set while write() may hand bytes to the kernel itself (try-write).
        self.direct = transport if isinstance(transport, SocketTransport) else None
        self.upgrade: Upgrade | None = None
        self.proxy: ProxyHeader | None = None  # a server's PROXY protocol header
        self.error: BaseException | None = None
        self.destroyed = False  # destroy() without an error
        self.stopped = False  # destroy() or a failure: the I/O is cancelled
        self.over = False  # 'close' is being emitted: nothing more is
        self.closed = False  # 'close' was emitted (its listeners returned)
        self.wrote_eof = False
        self.read_stopped = False
        self.in_receive = False  # blocked in receive_some(), under step_scope
        self.quiet_wait = False  # waiting in epoll outside any scope (_reader.quiet_read)
        self.send_error: BaseException | None = None  # the best error a send met
        self.send_failed_first = False  # the reader reports send_error at its end
        self.task_nursery: trio.Nursery | None = None
        self.reader_task: trio.lowlevel.Task | None = None  # the lifecycle's
        self.step_scope: trio.CancelScope | None = None
        self.scopes: tuple[trio.CancelScope, ...] = ()  # the writer's, the timer's
        # Made when first needed: an idle connection carries none of them.
        self.writer: Writer | None = None
        self.timer: Timer | None = None
        self.resume_lot: trio.lowlevel.ParkingLot | None = None
        self.flushed_lot: trio.lowlevel.ParkingLot | None = None
        self.closed_event: trio.Event | None = None
        self.peer: tuple[str | None, int | None, str | None] = (None, None, None)
        self.local: tuple[str | None, int | None] = (None, None)
        self.local_unread = False  # getsockname() is called when first needed

    # -- the lifecycle ---------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Run the connection from connect (or adoption) to ``'close'``.

        *nursery* is the one this task runs in (the stream's block, or the
        server's); the writer and the timer start there too: a connection
        costs no nursery. A plaintext socket's chunks for sync listeners are
        read outside any scope (``_reader.quiet_read``: an idle connection
        costs none); the rest runs in steps (:meth:`step`). :meth:`wake_reader`
        cancels a step only while its reader is blocked in ``receive_some``
        (nothing consumed); the next step delivers first a chunk received
        just as the scope was cancelled.
        """
        self.task_nursery = nursery
        self.reader_task = trio.lowlevel.current_task()
        try:
            # Accepted or adopted, and nobody awaits 'connect': it starts without a step.
            started = self.transport is not None and not self.listens("connect")
            if started and not _begin(self):
                return
            eof, held = False, None
            while not (started and self.stopped):
                if started and not eof and held is None and reads_quietly(self):
                    self.step_scope = None  # what stop() cancels is over
                    eof, held = await quiet_read(self)
                    continue  # stopped, or what comes now needs a step
                with self.step() as scope:
                    if not started:
                        started = True
                        if not await _start(self):
                            return
                    if held is not None:
                        chunk, held = held, None
                        await settle(self, "data")
                        await deliver(self, chunk)
                    quiet = False
                    while not (eof or scope.cancel_called or quiet):
                        upgrade = self.upgrade
                        if upgrade is not None and not upgrade.done.is_set():
                            await secure(self, upgrade)
                        eof, held = await read_session(self, scope)
                        quiet = not eof and held is None and reads_quietly(self)
                    if scope.cancel_called or quiet:
                        continue  # woken (or stopped), or quiet reads again: a fresh step
                    await let_a_failing_send_report(self)
                    reader_owes_failure(self)
                    if not self.read_stopped:  # no FIN came from the peer: no 'end'
                        await end_of_input(self)
                    await wait_writer_finished(self)  # end(): what is queued, then the EOF
                    reader_owes_failure(self)  # a send that failed meanwhile
                    return
        except TransportError as failure:
            self.fail(failure.error)
        except Exception as exc:  # a listener raised
            self.owner.listener_failed(exc)
        finally:
            _wind_down(self)
            try:
                await self.teardown()
            finally:
                self.owner.connection_done(self.host)

    async def teardown(self) -> None:
        """Close the transport, then emit ``'error'`` (if any) and ``'close'``."""
        sm = self.flow.sm
        if not sm.closing:
            sm.apply(Input.DESTROY)
        self.flow.drop_writes()
        self.flushed()
        self.direct = None
        local_address(self)  # it stays readable after 'close'
        transport, self.transport = self.transport, None
        if isinstance(transport, SocketTransport):
            transport.close_now()  # no need to wait: 'close' follows at once
        elif transport is not None:
            # Shielded and bounded: also when the owner's scope is cancelled,
            # the transport closes and 'close' is emitted below.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(transport)
        error = self.error
        unhandled = False
        try:
            if error is not None:
                feed = self.flow.feed
                handled = feed is not None and feed.finish(error)
                handled = wake_puller(self.flow, error) or handled
                if _handshaking_for_a_server(self):
                    handled = await self.owner.tls_failed(self.host, error) or handled
                if self.listens("error"):
                    await self.emit_final("error", error)
                elif not handled:
                    unhandled = True
            else:
                if self.flow.feed is not None:
                    self.flow.feed.finish(None)
                wake_puller(self.flow, None)
        finally:
            await self._close(error, unhandled)

    async def _close(self, error: BaseException | None, unhandled: bool) -> None:
        """``'close'``, the last event: even when an async ``'error'``
        listener was cancelled."""
        self.flow.sm.apply(Input.CLOSED)
        self.over = True  # from here on, the connection's tasks emit nothing
        try:
            await self.emit_final("close", error is not None)
        finally:
            self.closed = True
            if self.closed_event is not None:
                self.closed_event.set()
            if unhandled:
                assert error is not None
                self.owner.unhandled_error(self.host, error)

    # -- emission ------------------------------------------------------

    def listens(self, event: str) -> bool:
        return self.host.listener_count(event) > 0

    def allowed(self, event: str) -> bool:
        """Whether the connection's tasks may emit *event* now: nothing once
        ``'close'`` came, and the flow's rules."""
        return not self.over and self.flow.allows(event)

    @property
    def emission_free(self) -> bool:
        """No async listener of the stream is running: an emission may start."""
        lock = self.flow.emit_lock
        return lock is None or not lock.locked()

    async def emit(self, event: str, *args: object) -> None:
        """Emit *event* of this connection; refused after ``'close'`` (and
        ``'drain'`` after ``end()``), also when that came while an async
        listener held the emission back."""
        if self.over or not self.flow.allows(event):
            return
        lock = self.flow.emit_lock
        if lock is None or not lock.locked():  # the common case, without a coroutine more
            pending = self.host.emit(event, *args)
            if pending is not None:
                await self.finish_emission(pending)
            return
        await self._emit_in_turn(event, args, final=False)

    async def emit_final(self, event: str, *args: object) -> None:
        """Emit ``'error'`` / ``'close'``: a listener's exception goes to the owner."""
        try:
            await self._emit_in_turn(event, args, final=True)
        except Exception as exc:
            self.owner.listener_failed(exc)

    async def _emit_in_turn(self, event: str, args: tuple[object, ...], *, final: bool) -> None:
        """One emission at a time: after any async listener still running
        (then asking :meth:`allowed` again, unless *final*)."""
        lock = self.flow.emit_lock
        if lock is not None and lock.locked():
            async with lock:
                if final or self.allowed(event):
                    pending = self.host.emit(event, *args)
                    if pending is not None:
                        await pending
            return
        pending = self.host.emit(event, *args)
        if pending is not None:
            await self.finish_emission(pending)

    async def finish_emission(self, pending: Awaitable[None]) -> None:
        """Await the async rest of an emission, keeping other emitters out.
        The lock is the stream's (kept in its flow), made at the first
        async listener."""
        lock = self.flow.emit_lock
        if lock is None:
            lock = self.flow.emit_lock = trio.Lock()
        lock.acquire_nowait()
        try:
            await pending
        finally:
            lock.release()

    # -- cancellation --------------------------------------------------

    def stop(self) -> None:
        """Stop the connection's I/O (``destroy()`` or a failure)."""
        self.stopped = True
        self.direct = None
        if self.step_scope is not None:
            self.step_scope.cancel()
        for scope in self.scopes:
            scope.cancel()
        wake_quiet_reader(self)

    def step(self) -> trio.CancelScope:
        """The cancel scope of the lifecycle's next step, which :meth:`stop`
        cancels (at once, if the I/O is already stopped)."""
        scope = trio.CancelScope()
        if self.stopped:
            scope.cancel()
        self.step_scope = scope
        return scope

    def fail(self, error: BaseException) -> None:
        """Record a network failure (the first one wins) and stop the I/O.
        Once ``'close'`` is coming, a late failure changes nothing."""
        if self.over:
            return
        if self.error is None and not self.destroyed:
            self.error = error
            if not self.flow.sm.destroyed:
                self.flow.sm.apply(Input.DESTROY)
        self.flow.drop_writes()
        self.stop()
        self.flushed()

    # -- tasks -----------------------------------------------------------

    def start_task(self, fn: Callable[[Connection], Awaitable[None]]) -> bool:
        """Start one of the connection's tasks (writer, timer) under its own
        cancel scope; ``False`` if the connection is finishing."""
        nursery = self.task_nursery
        if nursery is None or self.stopped:
            return False
        scope = trio.CancelScope()
        try:
            nursery.start_soon(self._scoped, fn, scope, name=TASK_NAME)
        except RuntimeError:  # the nursery is closing
            return False
        self.scopes = (*self.scopes, scope)
        return True

    async def _scoped(
        self, fn: Callable[[Connection], Awaitable[None]], scope: trio.CancelScope
    ) -> None:
        with scope:
            await self.guarded(fn(self))

    async def guarded(self, work: Awaitable[None]) -> None:
        """Run *work*: a network failure fails the connection, a listener's
        exception goes to the owner."""
        try:
            await work
        except TransportError as failure:  # the writer's (the timer sends nothing)
            send_failed(self, failure.error)
        except Exception as exc:  # a listener raised
            self.owner.listener_failed(exc)

    # -- waking and waiting ------------------------------------------------

    def flushed(self) -> None:
        """Wake ``drain()`` waiters."""
        if self.flushed_lot is not None:
            self.flushed_lot.unpark_all()

    async def wait_flushed(self) -> None:
        if self.flushed_lot is None:
            self.flushed_lot = trio.lowlevel.ParkingLot()
        await self.flushed_lot.park()

    async def wait_closed(self) -> None:
        if not self.closed:
            if self.closed_event is None:
                self.closed_event = trio.Event()
            await self.closed_event.wait()

    async def park_reader(self) -> None:
        reader_owes_failure(self)  # nothing would wake it
        if self.resume_lot is None:
            self.resume_lot = trio.lowlevel.ParkingLot()
        await self.resume_lot.park()

    async def wait_resumed(self) -> None:
        """Until the stream is resumed, or a pull read waits (they read while paused)."""
        while self.flow.paused and self.flow.puller is None:
            await self.park_reader()

    def wake_reader(self, *, interrupt: bool = False) -> None:
        """A consumer arrived, the stream resumed, TLS starts or pull reads
        begin: let the reader go on. A receive under way is interrupted when
        kept bytes wait for a new consumer, or on *interrupt*; not under TLS
        (that could lose a record)."""
        if self.resume_lot is not None:
            self.resume_lot.unpark_all()
        wake_quiet_reader(self)
        if (
            self.in_receive
            and self.step_scope is not None
            and (self.upgrade is None or self.upgrade.tls is None)
            and (interrupt or self.flow.kept)
        ):
            self.step_scope.cancel()


async def _start(conn: Connection) -> bool:
    """Connect (unless adopted), start the writer's queued work and the
    timer, emit ``'connect'``; ``False`` if destroyed meanwhile."""
    if conn.transport is not None:
        if not _begin(conn):
            return False
        await conn.emit("connect")
        return True
    _start_timer(conn)
    assert conn.task_nursery is not None
    conn.transport, peer = await dial(
        conn.target, conn.options, partial(_emit_dialing, conn), conn.task_nursery
    )
    if conn.stopped:
        return False  # destroyed as the connection came up: teardown closes it
    if conn.upgrade is None:
        conn.direct = conn.transport
    note_addresses(conn, peer)
    apply_socket_options(conn, fresh=True)
    conn.flow.sm.apply(Input.CONNECTED)
    conn.flushed()  # drain() waits out the connecting
    kick_writer(conn)  # what was queued while connecting, an early end()
    await conn.emit("connect")
    return True


def _begin(conn: Connection) -> bool:
    """The start of an accepted or adopted connection (no connecting):
    the timer, the writer's queued work; ``False`` if a ``'connection'``
    listener destroyed it (then ``'close'`` is all it emits)."""
    _start_timer(conn)
    if conn.stopped and conn.accepted:
        return False
    kick_writer(conn)
    return True


def _start_timer(conn: Connection) -> None:
    flow = conn.flow
    if flow.idle_period:  # (set_timeout() later starts the period itself: replan())
        flow.last_activity = trio.current_time()
        start_timer(conn)


def _wind_down(conn: Connection) -> None:
    """The lifecycle is over (``'close'`` comes next): the writer and the
    timer are done too, whatever they were doing counts for nothing now."""
    conn.task_nursery = None
    conn.step_scope = None
    conn.stopped = True
    conn.direct = None
    for task_scope in conn.scopes:
        task_scope.cancel()  # the timer, if any (and the writer, if destroyed)


def wake_quiet_reader(conn: Connection) -> None:
    """End the reader's wait in epoll outside any scope (``_reader.quiet_read``)
    with ``trio.lowlevel.notify_closing``: it looks again at what changed. A
    writer waiting on the descriptor wakes too, and waits again
    (:meth:`SocketTransport.wait_writable`)."""
    if conn.quiet_wait:
        conn.quiet_wait = False
        transport = conn.transport
        if isinstance(transport, SocketTransport):
            trio.lowlevel.notify_closing(transport.plain)


async def _emit_dialing(conn: Connection, event: str, *args: object) -> None:
    """The connecting events: none once the stream is destroyed."""
    if not conn.stopped:
        await conn.emit(event, *args)


def _handshaking_for_a_server(conn: Connection) -> bool:
    """A TLS server's stream (``ssl=`` on the server) whose handshake did not
    complete: its failure is the server's ``'tlsClientError'``."""
    upgrade = conn.upgrade
    return conn.accepted and upgrade is not None and upgrade.first_byte and upgrade.tls is None


def send_failed(conn: Connection, error: BaseException, *, in_write: bool = False) -> None:
    """A send found the peer gone: the writer's (via :meth:`Connection.guarded`),
    or ``write()``'s try-write with *in_write*, which only records it (the
    writer meets it again).

    On a TCP socket whose reader takes data, the bytes the peer sent
    before its reset are still readable, and reading no longer waits (a
    reset socket is always readable): the reader delivers them, then
    reports the failure, so no received byte is lost (Node loses them).
    A reset outranks the ``EPIPE`` that later sends meet (the kernel
    reports a reset once: to a read, or to the peek an ``EPIPE`` makes
    here). Otherwise the connection fails now."""
    if isinstance(error, BrokenPipeError) and not isinstance(conn.send_error, ConnectionResetError):
        raw = getattr(conn.transport, "raw", conn.transport)
        reset = raw.reset_error() if isinstance(raw, SocketTransport) else None
        if reset is not None:
            error = translate(reset)  # what Node reports: its read sees the reset
    if conn.send_error is None or (
        isinstance(error, ConnectionResetError)
        and not isinstance(conn.send_error, ConnectionResetError)
    ):
        conn.send_error = error
    conn.direct = None  # the writer meets it from now on
    if conn.send_failed_first:
        return
    sock = plain_socket(conn.transport)
    if (
        isinstance(error, (BrokenPipeError, ConnectionResetError))
        and sock is not None
        and sock.family in _INET
        and conn.upgrade is None
        and not conn.flow.paused
        and not conn.flow.sm.reading_over  # the reader is still reading
        and has_consumer(conn)
    ):
        conn.send_failed_first = True
        conn.flow.drop_writes()
        conn.flushed()
    elif not in_write:
        conn.fail(conn.send_error)


def reader_owes_failure(conn: Connection) -> None:
    """Raise the send failure the reader reports (after the data before
    it): at the end of input, or where it would wait for ``resume()``."""
    if conn.send_failed_first:
        assert conn.send_error is not None
        raise TransportError(conn.send_error)


def check_drain_may_wait(conn: Connection, call: str = "drain()") -> None:
    """Raise :class:`StreamStateError` where *call* (``drain()``, or
    ``send_file()``) would wait for itself: in the writer's own ``'drain'``
    listener (or a task it started), the writer waits for that listener;
    and while a TLS upgrade is pending, in the lifecycle's own listener
    (``'connect'``, ``'data'``) or a task it started, the handshake waits
    for it, and the bytes *call* waits for go after the handshake: a file
    always, ``drain()``'s when written after ``set_secure()``."""
    task = trio.lowlevel.current_task()
    writer = conn.writer
    if writer is not None and descends_from(task, writer.task):
        raise StreamStateError(
            f"{call} in an async 'drain' listener cannot wait: the writer that"
            " would send is waiting for this listener to return"
        )
    upgrade = conn.upgrade
    if upgrade is None or upgrade.done.is_set() or not descends_from(task, conn.reader_task):
        return
    # drain(): what was queued before set_secure() went aside, so bytes in
    # the queue were written after it and wait for the handshake.
    if call != "drain()" or any(conn.flow.queue):
        raise StreamStateError(
            f"{call} cannot wait here: what it waits for goes out after the TLS"
            " handshake, which waits for this listener to return"
        )


def note_addresses(conn: Connection, peer: Any = None) -> None:
    """Record the peer's address at once (*peer*, from ``accept()`` or
    ``connect()``, or ``getpeername()``, which fails after a reset); the
    local one is read when first asked for, or at the latest at teardown."""
    sock = plain_socket(conn.transport)
    if sock is None or sock.family not in _INET:
        return
    family = "IPv6" if sock.family == _stdlib_socket.AF_INET6 else "IPv4"
    if peer is None:
        try:
            peer = sock.getpeername()
        except OSError:
            return
    conn.peer = (peer[0], peer[1], family)
    conn.local_unread = True


def local_address(conn: Connection) -> tuple[str | None, int | None]:
    if conn.local_unread:
        conn.local_unread = False
        sock = plain_socket(conn.transport)
        if sock is not None:
            try:
                local = sock.getsockname()
            except OSError:  # closed under us
                pass
            else:
                conn.local = (local[0], local[1])
    return conn.local


def apply_socket_options(conn: Connection, *, fresh: bool = False) -> None:
    """Apply the stream's socket options (``_dial.set_socket_options``)."""
    sock = plain_socket(conn.transport)
    if sock is not None and sock.family in _INET:
        set_socket_options(sock, conn.options, fresh=fresh)
