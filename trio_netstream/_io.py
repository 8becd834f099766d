"""The calls protocols are built on: framed pull reads, pipes and files.

The middle layer of the facade between :class:`~trio_netstream._controls.StreamControls`
and :class:`~trio_netstream.Stream`: each method checks its arguments and
hands over to the module that does the work (``_pull`` for
``read_until`` / ``readline`` / ``read_exactly`` / ``read``, ``_pipe`` for
``pipe`` / ``unpipe``, ``_sendfile`` for ``send_file``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._controls import StreamControls
from ._errors import StreamStateError

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

    async def send_file(self, file: Any, offset: int = 0, count: int | None = None) -> None:
        """Send a regular file's bytes after everything written before."""
        raise NotImplementedError
