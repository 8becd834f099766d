"""``async for chunk in stream``: the reader's hand-off to a pull consumer.

The stream's flow holds the :class:`Feed`, never the iterator, so leaving the loop (``break``) drops
the iterator, which closes its end of the channel and releases the reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["ChunkIterator", "Feed", "open_feed"]


class Feed:
    """The reader's side of ``async for``: a zero-capacity hand-off."""

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


class ChunkIterator:
    """``async for chunk in stream``."""

    __slots__ = ("_feed", "_kept", "_receive")

    def __init__(
        self, feed: Feed, receive: trio.MemoryReceiveChannel[Any], kept: Flow | None
    ) -> None:
        self._feed = feed
        self._receive = receive
        self._kept = kept  # after the end of reading: the chunks nobody took

    def __aiter__(self) -> ChunkIterator:
        return self

    async def __anext__(self) -> bytes | str:
        if self._kept is not None and self._kept.kept:
            await trio.lowlevel.checkpoint()
            return self._kept.take_kept()
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


def open_feed(flow: Flow) -> tuple[Feed, ChunkIterator]:
    """A new feed and its iterator; after the end of reading, the iterator
    gives only the chunks *flow* kept."""
    send, receive = trio.open_memory_channel[Any](0)
    feed = Feed(send)
    reading_over = flow.sm.reading_over
    if reading_over:
        feed.finish(None)  # nothing more will be read: only what was kept
    return feed, ChunkIterator(feed, receive, flow if reading_over else None)
