"""The calls protocols are built on: framed pull reads, pipes and files.

The middle layer of the facade between :class:`~trio_netstream._controls.StreamControls`
and :class:`~trio_netstream.Stream`: each method checks its arguments and
hands over to the module that does the work (``_pull`` for
``read_until`` / ``readline`` / ``read_exactly`` / ``read``, ``_pipe`` for
``pipe`` / ``unpipe``, ``_sendfile`` for ``send_file``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._controls import StreamControls
from ._errors import StreamStateError
from ._pipe import Pipes
from ._state import WRITABLE

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._stream import Stream

__all__ = ["StreamIO", "not_running"]

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

    async def send_file(self, file: Any, offset: int = 0, count: int | None = None) -> None:
        """Send a regular file's bytes after everything written before."""
        raise NotImplementedError
