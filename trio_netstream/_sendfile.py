"""``send_file()``: a regular file's bytes, in order with the writes.

How this works
--------------

``send_file(file, offset, count)`` checks its arguments and makes a
:class:`FileJob` (:func:`open_job`) that owns a descriptor of its own: a
path is opened, a file object's descriptor is duplicated, so the caller's
object is never read through, moved or closed. The range is checked
against the file's size at the call.

The job goes to the writer (``_writer.queue_file``), taking the bytes
queued before the call with it. From then on the file's bytes count as
queued (``Flow.queued``; ``bytes_written`` counts them at the call, as it
counts a ``write()``), so everything the write side already does holds:
``write()`` queues behind the file instead of trying the kernel, and
returns ``False`` over the high-water mark; ``end()``'s FIN waits for it;
``drain()`` waits for it. The writer sends the jobs in order before the rest
of its queue (:meth:`FileJob.send`): the bytes that came with the job, then
the file, with ``os.sendfile`` on the library's own socket transport (TCP
or UNIX, no TLS), waiting in ``wait_writable`` while the kernel's buffer is
full; otherwise (TLS, a wrapped Trio stream) read in pieces with
``os.pread`` and sent through the transport. Either way one piece is in
memory at most, and the writer yields to the scheduler between pieces.

The call waits like ``drain()`` (:func:`wait_sent`): it returns once the
writer has handed the last byte to the kernel, and raises the stream's
error (``StreamStateError`` after ``destroy()``). Cancelled while the job
still waits its turn, the job is withdrawn: nothing of the file went out
and the stream is as if the call had not been made. Cancelled once the
writer has taken the job, the stream is destroyed: a byte stream cannot
take back half a file, and what was written after it must not follow a
truncated file.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import trio

from ._connection import check_drain_may_wait
from ._errors import StreamStateError, TransportError, transport_errors
from ._flow import STEP_BYTES
from ._options import check_int
from ._socket import SocketTransport
from ._writer import queue_file, withdraw_file

if TYPE_CHECKING:
    from ._connection import Connection
    from ._flow import Flow

__all__ = ["FileJob", "check_arguments", "open_job", "send_file", "wait_sent"]

#: What one ``os.sendfile`` call offers the kernel before the writer yields.
ZERO_COPY_PIECE = 1024 * 1024
#: What one read of the file sends through TLS (or a wrapped stream).
READ_PIECE = STEP_BYTES


class FileJob:
    """One ``send_file()``: its descriptor, the range left to send, and the
    bytes queued before the call (sent first)."""

    __slots__ = ("before", "count", "done", "fd", "offset", "plain", "started")

    def __init__(self, fd: int, offset: int, count: int, *, plain: bool) -> None:
        self.fd = fd  # ours: closed by close()
        self.offset = offset
        self.count = count  # bytes left to send
        self.plain = plain  # made before any TLS was asked for: sent in plaintext
        self.before: list[bytes | memoryview] = []
        self.started = False  # the writer took it
        self.done = False  # every byte went to the kernel

    def close(self) -> None:
        """Close the job's descriptor. Idempotent."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    async def send(self, conn: Connection, transport: trio.abc.Stream) -> None:
        """The writer's part: the bytes queued before the call, then the file.
        Returns early if the connection is stopped meanwhile.

        Raises:
            TransportError: a send failed, the file could not be read, or it
                ended before the count (it shrank meanwhile).
        """
        flow = conn.flow
        while self.before:
            chunk = self.before.pop(0)
            with transport_errors(sending=True):
                await transport.send_all(chunk)
            if conn.stopped:
                return
            flow.sent(len(chunk))
        if isinstance(transport, SocketTransport):
            await self._zero_copy(conn, transport)
        else:
            await self._by_pieces(conn, transport)

    async def _zero_copy(self, conn: Connection, transport: SocketTransport) -> None:
        sock = transport.plain
        while self.count:
            with transport_errors(sending=True):
                try:
                    sent = os.sendfile(
                        sock.fileno(), self.fd, self.offset, min(self.count, ZERO_COPY_PIECE)
                    )
                except BlockingIOError:
                    await transport.wait_writable()
                    continue
            if not sent:
                raise TransportError(self._ended_early())
            self._went(conn.flow, sent)
            await trio.lowlevel.checkpoint()
            if conn.stopped:
                return

    async def _by_pieces(self, conn: Connection, transport: trio.abc.Stream) -> None:
        while self.count:
            with transport_errors(sending=True):
                piece = os.pread(self.fd, min(self.count, READ_PIECE), self.offset)
                if piece:
                    await transport.send_all(piece)
            if not piece:
                raise TransportError(self._ended_early())
            if conn.stopped:
                return
            self._went(conn.flow, len(piece))

    def _went(self, flow: Flow, size: int) -> None:
        self.offset += size
        self.count -= size
        flow.sent(size)
        if flow.idle_period:
            flow.last_activity = trio.current_time()

    def _ended_early(self) -> EOFError:
        return EOFError(
            f"send_file(): the file ended {self.count} bytes before the count"
            " (it shrank while it was being sent)"
        )


def check_arguments(file: object, offset: object, count: object) -> None:
    """``send_file()``'s argument types and signs (nothing is opened).

    Raises:
        TypeError: *file* is neither a path nor a file object; *offset* or
            *count* is not an ``int``.
        ValueError: a text-mode file; a negative *offset* or *count*.
    """
    text_mode = isinstance(file, io.TextIOBase)  # the wrong mode: a ValueError, as socket.sendfile
    if text_mode:
        raise ValueError("send_file() needs a file opened in binary mode ('rb'), not text mode")
    if not isinstance(file, (str, os.PathLike)) and not callable(getattr(file, "fileno", None)):
        raise TypeError(
            "send_file() takes a path (str or os.PathLike) or a binary file object,"
            f" not {type(file).__name__}"
        )
    for name, value in (("offset", offset), ("count", count)):
        if value is None and name == "count":
            continue
        check_int(name, value)


def _descriptor(file: Any) -> int:
    """A descriptor of *file* the job owns: a path opened for reading (never
    blocking: a FIFO is refused after), or a file object's duplicated."""
    if isinstance(file, (str, os.PathLike)):
        path = cast("str | os.PathLike[str]", file)  # isinstance() leaves it unknown
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    readable = getattr(file, "readable", None)
    if callable(readable) and not readable():
        raise ValueError("send_file() needs a file open for reading")
    try:
        fd = file.fileno()
    except (OSError, ValueError) as exc:
        raise ValueError(f"send_file() needs a file with a descriptor: {exc}") from exc
    if not isinstance(fd, int):
        raise TypeError(f"fileno() returned {type(fd).__name__}, not an int")
    return os.dup(fd)


def _count(fd: int, offset: int, count: int | None) -> int:
    """The count to send from *fd* (the end of the file for ``None``)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("send_file() needs a regular file (not a directory, pipe or device)")
    size = info.st_size
    if count is None:
        count = max(size - offset, 0)
    if offset + count > size:
        raise EOFError(
            f"send_file(): {count} bytes from offset {offset} go past the end"
            f" of the file ({size} bytes)"
        )
    return count


def open_job(file: Any, offset: int, count: int | None, *, plain: bool) -> FileJob:
    """The job for a checked call (:func:`check_arguments`): the range is
    checked against the file's size now.

    Raises:
        ValueError: not a regular file, not readable, or no descriptor.
        EOFError: the range goes past the end of the file.
        OSError: the path cannot be opened.
    """
    fd = _descriptor(file)
    try:
        count = _count(fd, offset, count)
    except Exception:
        os.close(fd)
        raise
    return FileJob(fd, offset, count, plain=plain)


async def wait_sent(conn: Connection, job: FileJob, destroy: Callable[[], object]) -> None:
    """Wait until the writer has sent *job*; on the way out without that,
    withdraw it (not taken yet) or destroy the stream (taken: cancelled
    with the file half sent).

    Raises:
        OSError: the stream failed (its error).
        StreamStateError: the stream was destroyed first.
    """
    try:
        await trio.lowlevel.checkpoint()
        while not job.done:
            if conn.error is not None:
                raise conn.error
            if conn.send_failed_first and conn.send_error is not None:
                raise conn.send_error  # the reader reports it once the data before it is in
            if conn.stopped:
                raise StreamStateError("send_file(): the stream was destroyed")
            await conn.wait_flushed()
    finally:
        if not job.started:
            withdraw_file(conn, job)
            job.close()
        elif not (job.done or conn.stopped or conn.send_failed_first):
            destroy()  # cancelled: the writer would go on with a file nobody waits for


async def send_file(
    conn: Connection,
    file: Any,
    offset: int,
    count: int | None,
    destroy: Callable[[], object],
) -> None:
    """``Stream.send_file()`` once its arguments and the stream's state were
    checked (see :meth:`~trio_netstream.Stream.send_file`)."""
    check_drain_may_wait(conn, "send_file()")
    job = open_job(file, offset, count, plain=conn.upgrade is None)
    if conn.send_failed_first and conn.send_error is not None:
        job.close()  # nothing more goes out: the reader reports this failure
        await trio.lowlevel.checkpoint()
        raise conn.send_error
    if not job.count:
        job.close()
        await trio.lowlevel.checkpoint()
        return
    queue_file(conn, job)
    await wait_sent(conn, job, destroy)
