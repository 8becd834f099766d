"""The calls protocols are built on: framed pull reads, pipes and files.

The middle layer of the facade between :class:`~trio_netstream._controls.StreamControls`
and :class:`~trio_netstream.Stream`: each method checks its arguments and
hands over to the module that does the work (``_pull`` for
``read_until`` / ``readline`` / ``read_exactly`` / ``read``, ``_pipe`` for
``pipe`` / ``unpipe``, ``_sendfile`` for ``send_file``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from trio.lowlevel import current_task

from ._connection import descends_from
from ._controls import StreamControls
from ._errors import StreamStateError
from ._options import check_int
from ._pipe import Pipes
from ._pull import (
    YIELD_BYTES,
    check_max_size,
    check_separator,
    owed_checkpoint,
    prepare,
    pull,
    too_long,
    upgrading,
)
from ._sendfile import check_arguments, send_file
from ._state import WRITABLE

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._stream import Stream

__all__ = ["StreamIO", "not_running"]

#: The default ``max_size`` of the pull reads.
MAX_SIZE = 65536

#: What :meth:`StreamIO.pipe` returns: the destination it was given.
Destination = TypeVar("Destination", bound="Stream")


def not_running(call: str) -> StreamStateError:
    """What *call* raises where it would wait for a client stream whose tasks
    do not run: it is not in its ``async with`` block."""
    return StreamStateError(
        f"{call} would wait forever: the stream is not running. Run it in its"
        " block first: `async with net.create_connection(...) as stream:` (or"
        " `async with stream:`), and wait inside the block"
    )


class StreamIO(StreamControls):
    """Framed reads, pipes and files (see :class:`~trio_netstream.Stream`)."""

    __slots__ = ("_pipes",)

    _pipes: Any  # the pipes this stream feeds (``_pipe``), or None

    @property
    def _idle_client(self) -> bool:
        """A client stream outside its block: no task of it runs, so waiting
        for it would never end. (A server-side stream runs in its server's.)"""
        return self._nursery is None and not self._server_side

    # -- pull reads (_pull) ------------------------------------------------

    async def read_until(self, separator: bytes, *, max_size: int = MAX_SIZE) -> bytes:
        """The received bytes up to and including *separator*.

        A pull consumer, like ``async for``: the socket is read while a pull
        read waits (also while paused), and after the first one only then.
        Returns ``bytes`` whatever :meth:`set_encoding` says. Mixes with the
        other pull reads and ``async for``: no byte is lost or repeated.

        Args:
            separator: non-empty ``bytes``.
            max_size: the most bytes to return, *separator* included.

        Raises:
            EOFError: the input ended before *separator*; ``.partial`` holds
                the bytes that came (they are taken).
            ValueError: *max_size* bytes came without *separator* (they stay
                readable), or an empty separator / a *max_size* below 1.
            TypeError: an argument of the wrong type.
            StreamStateError: a ``'data'`` listener is attached, another pull
                read of this stream waits, or the stream is not running.
            OSError: the stream failed (its error; handled when raised while
                waiting, as in ``async for``).

        A call answered from bytes already received is a checkpoint only
        once per 64 KiB returned (as asyncio's and anyio's buffered readers,
        see docs/behaviour.md); a call that waits is one. Cancelling it takes
        nothing: the bytes stay readable.
        """
        if type(separator) is not bytes or not separator:
            separator = check_separator(separator)
        if type(max_size) is not int or max_size < 1:
            max_size = check_max_size(max_size)
        if self._flow.pull_budget >= YIELD_BYTES:
            await owed_checkpoint(self._flow)
        line = self._take_until(separator, max_size, "read_until()")
        if line is None:
            return await self._until(separator, max_size)
        return line

    async def readline(self, *, max_size: int = MAX_SIZE) -> bytes:
        """``read_until(b"\\n", max_size=max_size)``: a line with its ``\\n``."""
        # The default is this very int object: no check for it (per line, it counts).
        if max_size is not MAX_SIZE and (type(max_size) is not int or max_size < 1):
            max_size = check_max_size(max_size)
        flow = self._flow
        if not flow.pull_ready:  # also once per YIELD_BYTES: the owed checkpoint
            return await self._until(b"\n", max_size, "readline()")
        # _take_until(), inline. (No search is under way: scanned is 0.)
        kept = flow.kept
        size = kept.find(b"\n", 0, max_size) + 1
        if not size or size > 4096:
            return await self._until(b"\n", max_size, "readline()")
        budget = flow.pull_budget = flow.pull_budget + size
        if budget >= YIELD_BYTES:
            flow.pull_ready = False
        flow.kept_taken += size
        line = bytes(kept[:size])
        del kept[:size]
        return line

    def _take_until(self, separator: bytes, limit: int, call: str) -> bytes | None:
        """The kept bytes up to *separator*, if they are there (the fast path
        of :meth:`read_until`: nothing to wait for, and no schedule point)."""
        flow = self._flow
        if not flow.pull_ready or "data" in self._events:
            prepare(self, self._conn, flow, call)
        found = flow.kept.find(separator, flow.scanned, limit)
        if found < 0:
            return None
        size = found + len(separator)
        flow.pull_budget += size
        return flow.take_bytes(size)

    async def _until(self, separator: bytes, limit: int, call: str = "read_until()") -> bytes:
        """:meth:`read_until`'s slow path: wait for the separator."""
        flow = self._flow
        if flow.pull_budget >= YIELD_BYTES:
            await owed_checkpoint(flow)
        prepare(self, self._conn, flow, call)
        try:
            return await self._wait_until(separator, limit, call)
        except BaseException:
            flow.scanned = 0  # how far *this* separator was searched: no longer
            raise

    async def _wait_until(self, separator: bytes, limit: int, call: str) -> bytes:
        flow = self._flow
        while True:
            if not upgrading(self._conn):
                line = self._take_until(separator, limit, call)
                if line is not None:
                    return line
                kept = flow.kept
                if len(kept) >= limit:
                    raise too_long(separator, limit)
                flow.scanned = max(0, len(kept) - len(separator) + 1)
            await self._pull(repr(separator))

    async def read_exactly(self, n: int) -> bytes:
        """Exactly *n* received bytes (a pull read, see :meth:`read_until`).

        Raises:
            EOFError: the input ended first; ``.partial`` holds what came.
            TypeError, ValueError: *n* is not an int, or is negative.
            StreamStateError, OSError: as :meth:`read_until`.
        """
        n = check_int("n", n)
        flow = self._flow
        if flow.pull_budget >= YIELD_BYTES:
            await owed_checkpoint(flow)
        prepare(self, self._conn, flow, "read_exactly()")
        while len(flow.kept) < n or upgrading(self._conn):
            await self._pull(f"{n} bytes")
        flow.pull_budget += n
        return flow.take_bytes(n)

    async def read(self, max_size: int = MAX_SIZE) -> bytes:
        """What was received: at least one byte, at most *max_size*; ``b""``
        at the end of the input (a pull read, see :meth:`read_until`).

        Raises:
            TypeError, ValueError: *max_size* is not an int, or below 1.
            StreamStateError, OSError: as :meth:`read_until`.
        """
        limit = check_max_size(max_size)
        flow = self._flow
        if flow.pull_budget >= YIELD_BYTES:
            await owed_checkpoint(flow)
        prepare(self, self._conn, flow, "read()")
        while not flow.kept or upgrading(self._conn):
            if await self._pull("", eof_ok=True) is not None:
                return b""
        size = min(limit, len(flow.kept))
        flow.pull_budget += size
        return flow.take_bytes(size)

    async def _pull(self, what: str, *, eof_ok: bool = False) -> bytes | None:
        """Wait for more bytes (see :func:`~trio_netstream._pull.pull`)."""
        if self._idle_client and not self._flow.sm.reading_over:
            raise not_running("a pull read")
        conn = self._conn
        if conn is not None and not conn.closed and descends_from(current_task(), conn.reader_task):
            raise StreamStateError(
                "a pull read cannot wait in a listener the stream's reader runs (it"
                " waits for the listener to return): read in another task"
            )
        return await pull(conn, self._flow, what, eof_ok=eof_ok)

    # -- pipes (_pipe) -----------------------------------------------------

    def pipe(self, destination: Destination, *, end: bool = True) -> Destination:
        """Write every chunk of this stream to *destination* (Node's ``readable.pipe``).

        Each ``'data'`` chunk is written to *destination* (a ``str`` chunk with
        this stream's encoding, so the bytes arrive unchanged); while its
        ``write()`` returns ``False`` this stream is paused, and resumed on its
        ``'drain'``. At this stream's ``'end'``, ``destination.end()`` is called
        unless *end* is ``False``. An error on either side destroys neither:
        it is that stream's own ``'error'``; the ``'close'`` of *destination*
        ends the pipe. ``stream.pipe(stream)`` echoes. Piping to one
        destination twice writes every chunk twice, as in Node.

        The call resumes this stream (as Node's starts the flow), unless the
        destination's queue is at its high-water mark: then it is paused until
        the destination's ``'drain'``. On a stream whose ``'end'`` has come it
        only ends *destination* (unless *end* is ``False``). It emits nothing
        (no ``'pipe'`` event, see docs/behaviour.md); the pipe adds ``'data'``,
        ``'end'`` and ``'close'`` listeners here and ``'drain'`` and ``'close'``
        listeners on *destination*.

        Args:
            destination: the :class:`~trio_netstream.Stream` to write to.
            end: end *destination* at this stream's ``'end'`` (default ``True``).

        Returns:
            *destination*, so pipes chain (``a.pipe(b).pipe(a)``).

        Raises:
            TypeError: *destination* is not a Stream, or *end* is not a bool.
            StreamStateError: *destination* cannot be written to (ended, closed,
                never connected), or a pull read of this stream is waiting.
                Nothing changed.
        """
        if not isinstance(destination, StreamIO):
            raise TypeError(f"pipe() needs a Stream to write to, not {type(destination).__name__}")
        if not isinstance(end, bool):
            raise TypeError(f"end must be a bool, not {type(end).__name__}")
        target = destination._flow.sm
        if target.state not in WRITABLE:
            raise StreamStateError(f"pipe(): the destination is {target.describe()}: not writable")
        pipes: Pipes | None = self._pipes
        if pipes is None:
            pipes = self._pipes = Pipes(cast("Stream", self))  # the only subclass
        source = self._flow.sm
        pipes.add(destination, end, input_over=source.reading_over and source.live)
        return destination

    def unpipe(self, destination: Stream | None = None) -> Self:
        """Stop piping to *destination* (``None``: to every destination).

        Later chunks are not written to it, nor is it ended at ``'end'``. As
        in Node, a stream left without destinations is paused (:meth:`resume`
        restarts it), and a stream the pipe held for *destination*'s
        ``'drain'`` is let go. Removes one pipe to *destination* (the first
        made) if there are several; does nothing if there is none. Emits
        nothing.

        Args:
            destination: a destination given to :meth:`pipe`, or ``None``.

        Returns:
            This stream.

        Raises:
            TypeError: *destination* is neither a Stream nor ``None``.
        """
        if destination is not None and not isinstance(destination, StreamIO):
            raise TypeError(f"unpipe() takes a Stream or None, not {type(destination).__name__}")
        pipes: Pipes | None = self._pipes
        if pipes is not None:
            pipes.unpipe(destination)
        return self

    # -- files (_sendfile) -------------------------------------------------

    async def send_file(
        self,
        file: str | os.PathLike[str] | BinaryIO,
        offset: int = 0,
        count: int | None = None,
    ) -> None:
        """Send *count* bytes of a regular file from *offset*, after everything
        written before the call and before everything written after it.

        Zero-copy (``os.sendfile``) on a plaintext TCP or UNIX stream; over
        TLS (``ssl=`` or :meth:`set_secure`) and on a wrapped Trio stream the
        file is read in pieces and sent as writes are. Until it is sent the
        file's bytes count as queued (``write_queue_size``): a ``write()``
        made meanwhile queues behind it and returns ``False`` over the
        high-water mark (``'drain'`` follows once all is sent), and
        :meth:`drain` waits for it. ``bytes_written`` counts the file's
        bytes at the call, as it counts a ``write()``'s.

        Args:
            file: a path (``str`` or ``os.PathLike``), opened and closed here;
                or a binary file object, neither closed nor moved (the file
                is read at absolute offsets, whatever its position).
            offset: where to start, from the start of the file.
            count: how many bytes; ``None``: to the end of the file as it is
                at the call.

        Returns:
            Once every byte was handed to the kernel (after a checkpoint).

        Raises:
            TypeError: *file* is neither a path nor a file object, or
                *offset* / *count* is not an ``int``.
            ValueError: a negative *offset* or *count*; a text-mode,
                unreadable or descriptor-less file object; not a regular file.
            EOFError: the range goes past the end of the file.
            StreamStateError: after ``end()`` or ``destroy()``, before
                ``connect()``, outside a client stream's block, where it would
                wait for itself (as :meth:`drain`), or when the stream is
                destroyed before the file is sent.
            OSError: the path cannot be opened (these are raised at the call,
                which then changed nothing); or the stream failed first: its
                error, also emitted as ``'error'`` then ``'close'(True)``
                (raising it here does not handle it, as with :meth:`drain`).

        Causes no event itself. Cancelled while the file waits its turn, the
        call is withdrawn and nothing of the file is sent; once its sending
        has begun, the stream is destroyed (half a file cannot be taken back).
        """
        check_arguments(file, offset, count)
        flow = self._flow
        if flow.sm.state not in WRITABLE:
            state = flow.sm.describe()
            raise StreamStateError(f"send_file() is not allowed: the stream is {state}")
        conn = self._conn
        assert conn is not None
        if self._idle_client:
            raise not_running("send_file()")
        await send_file(conn, file, offset, count, self.destroy)
