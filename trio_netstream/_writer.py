"""The writer: the connection's task that sends the write queue.

``write()`` hands bytes to the kernel itself when nothing is queued
(try-write); what it cannot send is queued in the flow, and the writer is
started (lazily: a stream whose writes all go out at once never needs it)
or woken. The writer sends the queue in *steps* (chunks joined up to
``STEP_BYTES``), emits the owed ``'drain'`` once the queue is empty, and,
once this side has ended and the queue is empty, sends the EOF (FIN, or
close_notify then FIN over TLS) and finishes.

After every send it checks that the connection was not stopped meanwhile
(``destroy()``, or a failure seen by the reader): the flow's queue is then
gone, and nothing may be counted or emitted.

On ``set_secure()`` the writer sends the plaintext written before the call,
tells the reader it is ready, and waits for the handshake before it sends
what was written after the call.

``send_file()`` hands the writer a *file job* (``_sendfile.FileJob``) that
carries the bytes queued before the call with it: the writer sends the
jobs in order before the queue (a job made before ``set_secure()`` before
the plaintext hand-over), each with :meth:`FileJob.send
<trio_netstream._sendfile.FileJob.send>`. While a job is pending its bytes
count as queued, so ``write()`` queues behind it.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import trio

from ._errors import TransportError, transport_errors
from ._state import State

if TYPE_CHECKING:
    from ._connection import Connection, Upgrade
    from ._sendfile import FileJob

__all__ = [
    "Writer",
    "emit_drain",
    "finish_writer",
    "kick_writer",
    "let_a_failing_send_report",
    "queue_file",
    "send_eof_now",
    "wait_writer_finished",
    "withdraw_file",
]


#: What a send meets when the peer is gone.
_PEER_GONE = (errno.EPIPE, errno.ECONNRESET)


class Writer:
    """The state of a connection's writable side, made when first needed."""

    __slots__ = ("done", "files", "finished", "lot", "started", "task")

    def __init__(self) -> None:
        self.started = False  # the task was started (it is never started twice)
        self.finished = False  # the EOF was sent, or the task ended
        self.done: trio.Event | None = None
        self.lot: trio.lowlevel.ParkingLot | None = None
        self.task: trio.lowlevel.Task | None = None  # runs the 'drain' listeners it emits
        self.files: list[FileJob] = []  # send_file() jobs not yet taken, in order


def _writer(conn: Connection) -> Writer:
    writer = conn.writer
    if writer is None:
        writer = conn.writer = Writer()
    return writer


def finish_writer(conn: Connection) -> None:
    """The writable side is over (EOF sent, or the writer ended)."""
    writer = _writer(conn)
    writer.finished = True
    if writer.done is not None:
        writer.done.set()


async def wait_writer_finished(conn: Connection) -> None:
    writer = _writer(conn)
    if not writer.finished:
        if writer.done is None:
            writer.done = trio.Event()
        await writer.done.wait()


def _has_work(conn: Connection) -> bool:
    flow = conn.flow
    upgrade = conn.upgrade
    return bool(
        flow.queue
        or (conn.writer is not None and conn.writer.files)
        or (upgrade is not None and not upgrade.done.is_set())
        or flow.sm.sending_eof
        or (flow.need_drain and conn.listens("drain"))
    )


def send_eof_now(conn: Connection) -> bool:
    """``end()`` with nothing queued and no writer task: FIN now, without
    starting one; ``False`` if the writer must do it."""
    direct = conn.direct
    flow = conn.flow
    writer = conn.writer
    if direct is None or flow.queued or flow.sm.connecting or (writer and writer.started):
        return False
    try:
        direct.try_send_eof()
    except OSError:
        return False  # the writer meets the failure again and reports it
    conn.wrote_eof = True
    finish_writer(conn)
    return True


def kick_writer(conn: Connection) -> None:
    """Wake the writer, or start it if it has work."""
    writer = conn.writer
    if writer is not None and writer.started:
        assert writer.lot is not None
        writer.lot.unpark()
        return
    if conn.task_nursery is None or conn.transport is None or conn.stopped:
        return  # the lifecycle kicks it once the connection is up
    if conn.send_failed_first:
        return  # nothing more goes out: the reader reports the failure
    if not conn.flow.sm.live or not _has_work(conn):
        return
    if conn.start_task(_write_loop):
        writer = _writer(conn)
        writer.lot = trio.lowlevel.ParkingLot()
        writer.started = True


async def emit_drain(conn: Connection) -> None:
    """The writer's ``'drain'``. A listener that writes again owes another
    ``'drain'`` at once when the kernel takes the bytes: such writes share a
    step (``Flow.step_done``), then the writer yields so that other tasks run."""
    flow = conn.flow
    flow.need_drain = False
    # drain() may return now: an async listener that awaits it may be what
    # holds this emission back.
    conn.flushed()
    await conn.emit("drain")
    if flow.step_done():
        await trio.lowlevel.checkpoint()


async def _write_loop(conn: Connection) -> None:
    writer = _writer(conn)
    writer.task = trio.lowlevel.current_task()
    try:
        transport = conn.transport
        flow = conn.flow
        while transport is not None and not conn.stopped:
            upgrade = conn.upgrade
            job = writer.files[0] if writer.files else None
            if upgrade is not None and not upgrade.done.is_set() and not (job and job.plain):
                transport = await _hand_over(conn, upgrade, transport)
                continue
            if job is not None:
                await _send_file(conn, writer.files.pop(0), transport)
                continue
            if flow.queue:
                data = flow.take()
                with transport_errors(sending=True):
                    await transport.send_all(data)
                if conn.stopped:
                    return  # destroyed or failed meanwhile: the queue is gone
                if flow.idle_period:
                    flow.last_activity = trio.current_time()
                if flow.sent(len(data)):  # nor plaintext moved aside by set_secure()
                    conn.flushed()
                    if flow.need_drain:
                        await emit_drain(conn)
                continue
            if flow.need_drain and not flow.sm.connecting:
                # Everything write() took went out at once (try-write).
                await emit_drain(conn)
                continue
            if flow.sm.sending_eof:
                conn.wrote_eof = True
                await _send_eof(conn, transport)
                return
            assert writer.lot is not None
            await writer.lot.park()
    finally:
        finish_writer(conn)


async def _send_file(conn: Connection, job: FileJob, transport: trio.abc.Stream) -> None:
    """Send *job* (what was queued before it, then the file); then wake its
    ``send_file()`` call. The job is the writer's from here: it closes it."""
    job.started = True
    try:
        await job.send(conn, transport)
    finally:
        job.close()
    if not conn.stopped:
        job.done = True
        conn.flushed()  # send_file() (and drain()) waiters


def queue_file(conn: Connection, job: FileJob) -> None:
    """``send_file()``: *job* goes after every job and byte queued before it
    (those bytes go with it), before everything written after it."""
    flow = conn.flow
    job.before, flow.queue = flow.queue, []
    flow.queued += job.count
    flow.bytes_written += job.count  # at the call, as write() counts
    _writer(conn).files.append(job)
    kick_writer(conn)


def withdraw_file(conn: Connection, job: FileJob) -> None:
    """Take back a job the writer has not taken (a cancelled ``send_file()``):
    nothing of the file went out; its bytes no longer count, and the bytes
    that went with it rejoin the queue in their place."""
    writer = conn.writer
    if writer is None or job not in writer.files:
        return
    index = writer.files.index(job)
    del writer.files[index]
    if conn.stopped or conn.send_failed_first:
        return  # the queue is gone (and counts nothing more)
    flow = conn.flow
    if index < len(writer.files):
        writer.files[index].before[:0] = job.before
    else:
        flow.queue[:0] = job.before
    flow.queued -= job.count
    flow.bytes_written -= job.count
    if not flow.queued:
        conn.flushed()
    kick_writer(conn)


async def _send_eof(conn: Connection, transport: trio.abc.Stream) -> None:
    """``end()``'s FIN (after close_notify over TLS). When the peer closed
    first, the peer may be gone by now: as Node, ``ENOTCONN`` from the
    final ``shutdown()`` is no failure, nor (once the peer's ``'end'``
    came) the ``EPIPE`` or ``ECONNRESET`` of a close_notify it no longer
    reads; the close stays clean."""
    try:
        with transport_errors(sending=True):
            if isinstance(transport, trio.abc.HalfCloseableStream):
                await transport.send_eof()
            else:
                await transport.aclose()
    except TransportError as failure:
        code = getattr(failure.error, "errno", None)
        peer_ended = conn.flow.sm.state is State.ENDED
        if code != errno.ENOTCONN and not (peer_ended and code in _PEER_GONE):
            raise


async def let_a_failing_send_report(conn: Connection) -> None:
    """At the end of input, let a send that is failing right now report it
    first (one scheduler step): a reset found by a send leaves the reader
    only an end of file (the kernel reports a reset once), which must not
    pass for the peer's ``'end'``."""
    writer = conn.writer
    if writer is not None and writer.started and conn.flow.queued:  # a send is under way
        await trio.lowlevel.checkpoint()


async def _hand_over(
    conn: Connection, upgrade: Upgrade, transport: trio.abc.Stream
) -> trio.abc.Stream | None:
    """``set_secure()``: the plaintext written before it goes first; then the
    reader does the handshake. Returns the TLS transport (``None`` if the
    connection was torn down meanwhile)."""
    flow = conn.flow
    while flow.plain_queue:
        chunk = flow.plain_queue.pop(0)
        with transport_errors(sending=True):
            await transport.send_all(chunk)
        if conn.stopped:
            return None
        flow.sent(len(chunk))
    if not flow.queued:  # nothing written since: no need to wait for TLS
        conn.flushed()
        if flow.need_drain:
            await emit_drain(conn)
    upgrade.writer_ready.set()
    await upgrade.done.wait()
    return conn.transport
