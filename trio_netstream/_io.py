"""The calls protocols are built on: framed pull reads, pipes and files.

The middle layer of the facade between :class:`~trio_netstream._controls.StreamControls`
and :class:`~trio_netstream.Stream`: each method checks its arguments and
hands over to the module that does the work (``_pull`` for
``read_until`` / ``readline`` / ``read_exactly`` / ``read``, ``_pipe`` for
``pipe`` / ``unpipe``, ``_sendfile`` for ``send_file``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, BinaryIO

from ._controls import StreamControls
from ._errors import StreamStateError
from ._sendfile import check_arguments, send_file
from ._state import WRITABLE

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["StreamIO", "not_running"]


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

    async def read_until(self, separator: bytes, *, max_size: int = 65536) -> bytes:
        """The received bytes up to and including *separator*."""
        raise NotImplementedError

    async def readline(self, *, max_size: int = 65536) -> bytes:
        """``read_until(b"\\n")``."""
        return await self.read_until(b"\n", max_size=max_size)

    async def read_exactly(self, n: int) -> bytes:
        """Exactly *n* received bytes."""
        raise NotImplementedError

    async def read(self, max_size: int = 65536) -> bytes:
        """What was received: at least one byte, at most *max_size*; ``b""`` at EOF."""
        raise NotImplementedError

    # -- pipes (_pipe) -----------------------------------------------------

    def pipe(self, destination: Any, *, end: bool = True) -> Any:
        """Write every chunk of this stream to *destination* (Node's ``readable.pipe``)."""
        raise NotImplementedError

    def unpipe(self, destination: Any = None) -> Self:
        """Stop piping to *destination* (``None``: to every destination)."""
        raise NotImplementedError

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
