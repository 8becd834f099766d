"""``async for chunk in stream``: the reader's hand-off to a pull consumer.

The stream's flow holds the :class:`Feed`, never the iterator, so leaving the loop (``break``) drops
the iterator, which closes its end of the channel and releases the reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ._emitter import EventEmitter
    from ._flow import Flow

__all__ = ["ChunkIterator", "Feed", "open_feed"]


class Feed:
    """The reader's side of ``async for``: a zero-capacity hand-off."""

    __slots__ = ("error", "finished", "receive", "send")

    def __init__(
        self, send: trio.MemorySendChannel[Any], receive: trio.MemoryReceiveChannel[Any]
    ) -> None:
        self.send = send
        self.receive = receive  # to take back a chunk in flight (withdraw)
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

    def withdraw(self) -> bytes | str | None:
        """Take back the chunk the reader is handing over, if it is (a pull
        read takes it instead)."""
        receive = self.receive
        if not self.send.statistics().tasks_waiting_send:
            return None
        try:
            return receive.receive_nowait()  # type: ignore[no-any-return]  # chunks only
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None

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

    __slots__ = ("_feed", "_flow", "_host", "_receive")

    def __init__(
        self, feed: Feed, receive: trio.MemoryReceiveChannel[Any], flow: Flow, host: EventEmitter
    ) -> None:
        self._feed = feed
        self._receive = receive
        self._flow = flow
        self._host = host

    def __aiter__(self) -> ChunkIterator:
        return self

    async def __anext__(self) -> bytes | str:
        receive = self._receive
        try:
            chunk = receive.receive_nowait()  # the reader is handing one over
        except trio.WouldBlock:
            chunk = self._take_kept()
            if chunk is None:
                try:
                    return await receive.receive()  # type: ignore[no-any-return]  # chunks only
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return await self._after_the_end()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return await self._after_the_end()
        await trio.lowlevel.checkpoint()
        return chunk  # type: ignore[no-any-return]  # chunks only

    def _take_kept(self) -> bytes | str | None:
        """What was kept (after a pull read, or nobody took it yet), unless a
        'data' listener gets it first from the reader."""
        flow = self._flow
        if not flow.kept or self._host.listener_count("data"):
            return None
        return flow.take_chunk(final=flow.sm.reading_over)

    async def _after_the_end(self) -> bytes | str:
        flow = self._flow
        if flow.kept or flow.carry or flow.decoder is not None:
            chunk = flow.take_chunk(final=True)
            if chunk:
                await trio.lowlevel.checkpoint()
                return chunk
        error, self._feed.error = self._feed.error, None
        if error is not None:
            raise error
        raise StopAsyncIteration

    def __del__(self) -> None:
        # Leaving ``async for`` drops the iterator: a chunk the reader was
        # handing over goes back first in line, and the reader is released.
        chunk = self._feed.withdraw()
        if chunk is not None and not self._host.listener_count("data"):
            self._flow.put_back(chunk)
        self._receive.close()


def open_feed(flow: Flow, host: EventEmitter) -> tuple[Feed, ChunkIterator]:
    """A new feed and its iterator; after the end of reading, the iterator
    gives only what *flow* kept."""
    send, receive = trio.open_memory_channel[Any](0)
    feed = Feed(send, receive)
    if flow.sm.reading_over:
        feed.finish(None)  # nothing more will be read: only what was kept
    return feed, ChunkIterator(feed, receive, flow, host)
