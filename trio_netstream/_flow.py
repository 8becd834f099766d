"""The flow core: Node's backpressure and ordering rules, with no I/O.

How this works
--------------

One :class:`Flow` per stream holds, as plain data, everything the stream's
sync API (``write``, ``end``, ``pause``, ``set_encoding``...) and its
connection's tasks share: the ready state (a
:class:`~trio_netstream._state.StateMachine`), the write queue and its
accounting (queued bytes, the high-water mark, the *owed drain*, the
writer's *step* budget), the read side (paused, the *kept chunks* waiting
for a consumer, the decoder and its *carry*), the byte counters and the
idle-timeout figures. It does no I/O and never waits: the Trio pumps
around it (``_reader``, ``_writer``, ``_timer``, driven by
``_connection``) ask it what is due, do the I/O, and await the listeners.

The rules that order a connection's events are written here once:

* **The owed drain.** A ``write()`` that returned ``False`` owes a
  ``'drain'``. If its bytes had to be queued, the writer emits it once the
  queue is empty; if the kernel took them at once, it is emitted before the
  next ``'data'`` or ``'end'`` (Node emits it on the next tick)
  (:meth:`Flow.drain_due`).
* **No 'drain' after end()** (:meth:`Flow.allows`), nor after a failure.
* **What comes before an event** the reader emits is the table
  :data:`BEFORE`: before ``'data'``, the stream is resumed and the owed
  drain emitted; before ``'end'``, also the kept chunks (to a consumer that
  came meanwhile) and the decoder's tail; before ``'secure'``, the owed
  drain, the kept plaintext and the decoder's tail, and then plaintext ends
  (nothing read before a TLS upgrade is ever delivered after ``'secure'``).
* **Kept bytes are raw.** What was received and not delivered yet is kept
  as bytes and decoded when a ``'data'`` listener or ``async for`` takes
  it; the pull reads (``read_until``...) take it as it came. When nobody
  takes chunks, the decoder's tail goes back in front of the kept bytes
  (:meth:`Flow.undecoded`) instead of being delivered.
* **'close' is final**: the connection refuses every emission once it
  emitted ``'close'`` (``_connection``).

This module imports no Trio.
"""

from __future__ import annotations

import enum
from typing import Any

from ._encoding import Decoder, encode, get_decoder
from ._state import StateMachine

__all__ = ["BEFORE", "STEP_BYTES", "STEP_WRITES", "Flow", "Step"]

#: What one step of the writer sends before other tasks run: queued chunks
#: are joined into sends of at most this size, and writes made by 'drain'
#: listeners share a step until they reach this many bytes ...
STEP_BYTES = 256 * 1024
#: ... or this many writes.
STEP_WRITES = 4


class Step(enum.Enum):
    """What the reader does before it emits an event (see :data:`BEFORE`)."""

    RESUMED = "wait until the stream is resumed"
    OWED_DRAIN = "emit the owed 'drain' if it is due"
    KEPT = "deliver the kept chunks, if a consumer takes them"
    TAIL = "deliver what the decoder still holds (nobody takes chunks: keep it raw)"
    PLAINTEXT_OVER = "drop plaintext nobody took; a fresh decoder for TLS"


#: Node's ordering rules: what comes, in order, before each event the reader
#: emits. The read loop's fast path inlines ``BEFORE["data"]``.
BEFORE: dict[str, tuple[Step, ...]] = {
    "data": (Step.RESUMED, Step.OWED_DRAIN),
    "end": (Step.OWED_DRAIN, Step.RESUMED, Step.KEPT, Step.TAIL),
    "secure": (Step.OWED_DRAIN, Step.KEPT, Step.TAIL, Step.PLAINTEXT_OVER),
}


Chunk = bytes | str


class Flow:
    """The flow state of one stream (see the module's docstring)."""

    __slots__ = (
        "bytes_read",
        "bytes_written",
        "carry",
        "decoder",
        "emit_lock",
        "encoding",
        "feed",
        "high_water_mark",
        "idle_period",
        "kept",
        "kept_sizes",
        "kept_taken",
        "last_activity",
        "need_drain",
        "paused",
        "plain_queue",
        "pull_budget",
        "pull_ready",
        "pulled",
        "puller",
        "queue",
        "queued",
        "scanned",
        "sm",
        "source",
        "step_start",
        "step_writes",
    )

    def __init__(self, high_water_mark: int) -> None:
        self.sm = StateMachine()
        self.high_water_mark = high_water_mark
        # Writing: chunks not yet handed to the kernel, and their size.
        self.queue: list[bytes | memoryview] = []
        self.queued = 0
        # Written before set_secure() (made then: an idle stream has none).
        self.plain_queue: list[bytes | memoryview] | None = None
        self.need_drain = False  # the owed drain
        self.step_writes = 0  # 'drain's emitted since the writer last yielded
        self.step_start = 0  # bytes_written when it last yielded
        # Reading.
        self.paused = False
        # Received bytes not delivered yet, raw (decoded when a 'data'
        # listener or ``async for`` takes them): for a consumer that has not
        # come yet, and the buffer of the pull reads (``_pull``).
        self.kept = bytearray()
        # The chunks kept, as the socket gave them (a list: an idle stream's
        # empty deque would cost 760 bytes, a list 56).
        self.kept_sizes: list[int] = []
        self.kept_taken = 0  # bytes pull reads took off the front, not yet off kept_sizes
        self.scanned = 0  # how far read_until() searched kept for its separator
        self.pulled = False  # pull reads consume this connection (see wants_input)
        self.puller: Any = None  # the pull read waiting for bytes
        self.pull_budget = 0  # bytes pull reads returned since their last schedule point
        # Nothing for a pull read to do before it takes kept bytes (no decoder,
        # no carry, no async for, no 'data' listener, none waiting): set by
        # _pull.prepare(), cleared by whatever changes one of those.
        self.pull_ready = False
        # The raw bytes of the last chunk decoded (with what the decoder held
        # before it), so that a chunk nobody took goes back as it came.
        self.source: bytes | None = None
        self.decoder: Decoder | None = None
        self.encoding: str | None = None
        self.carry = b""  # bytes an earlier decoder held, for the current one
        self.bytes_read = 0
        self.bytes_written = 0
        # Trio objects of the stream that the core only keeps (one object per
        # stream fewer): the lock of an async emission, the ``async for`` feed.
        self.emit_lock: Any = None
        self.feed: Any = None
        # The idle timeout, in seconds of Trio's clock.
        self.idle_period = 0.0
        self.last_activity = 0.0

    def reset(self) -> None:
        """A new connection (``connect()``): nothing queued, kept or counted."""
        self.queue = []
        self.queued = 0
        self.plain_queue = None
        self.need_drain = False
        self.step_writes = self.step_start = 0
        self.kept = bytearray()
        self.kept_sizes.clear()
        self.kept_taken = 0
        self.scanned = 0
        self.pulled = self.pull_ready = False
        self.bytes_read = self.bytes_written = 0
        # Decoding starts afresh: half a character of the last connection
        # is not the start of this one's first.
        self.carry = b""
        if self.decoder is not None:
            self.decoder = get_decoder(self.encoding or "utf8")

    # -- writing ---------------------------------------------------------

    def count_write(self, size: int, connecting: bool | None = None) -> bool:
        """Account a ``write()`` of *size* bytes; ``False`` (and a drain owed)
        while *connecting* (default: as the state says) or once the queue
        reaches the high-water mark. As Node, the answer counts the chunk as
        buffered even if it goes out at once."""
        if connecting is None:
            connecting = self.sm.connecting
        self.bytes_written += size
        buffered = self.queued + size
        accepted = not connecting and (buffered < self.high_water_mark or not buffered)
        if not accepted:
            self.need_drain = True
        return accepted

    def enqueue(self, chunk: bytes | memoryview) -> None:
        self.queue.append(chunk)
        self.queued += len(chunk)

    def take(self) -> bytes | memoryview:
        """The next send: queued chunks joined up to :data:`STEP_BYTES`."""
        queue = self.queue
        if len(queue) == 1:
            self.queue = []
            return queue[0]
        size = count = 0
        for chunk in queue:
            if count and size + len(chunk) > STEP_BYTES:
                break
            size += len(chunk)
            count += 1
        self.queue = [] if count == len(queue) else queue[count:]
        return b"".join(queue[:count]) if count > 1 else queue[0]

    def sent(self, size: int) -> bool:
        """*size* queued bytes went out; whether the queue is now empty."""
        self.queued -= size
        return not self.queued

    def set_plaintext_aside(self) -> None:
        """``set_secure()``: what is queued goes out as plaintext first."""
        self.plain_queue, self.queue = self.queue, []

    def drop_writes(self) -> None:
        """``destroy()`` or a failure: queued bytes and the owed drain are gone."""
        self.queue = []
        self.plain_queue = None
        self.queued = 0
        self.need_drain = False

    def drain_due(self, listened: bool) -> bool:
        """The owed drain is due now: everything went out and somebody listens.
        Taking it clears it."""
        if self.need_drain and not self.queued and listened:
            self.need_drain = False
            return True
        return False

    def step_done(self) -> bool:
        """After a writer's ``'drain'``: whether the writer must yield now."""
        self.step_writes += 1
        if self.step_writes >= STEP_WRITES or self.bytes_written - self.step_start >= STEP_BYTES:
            self.step_writes = 0
            self.step_start = self.bytes_written
            return True
        return False

    def allows(self, event: str) -> bool:
        """Node's rule: no ``'drain'`` once this side ended (or failed)."""
        return event != "drain" or not self.sm.write_ended

    @property
    def flushed(self) -> bool:
        """Whether ``drain()`` may return: nothing queued, connected, and the
        ``'drain'`` a ``False`` write promised was emitted (or nobody listens)."""
        sm = self.sm
        return (
            not self.queued and not sm.connecting and not (self.need_drain and not sm.write_ended)
        )

    # -- reading ---------------------------------------------------------

    def decode(self, data: bytes) -> Chunk | None:
        """What *data* delivers (the carry first; ``None``: nothing yet)."""
        if self.carry:
            data, self.carry = self.carry + data, b""
        decoder = self.decoder
        if decoder is None:
            return data
        self.source = decoder.pending() + data
        return decoder.decode(data) or None

    def take_tail(self) -> list[Chunk]:
        """What the decoder still holds, as the last chunks of a plaintext run."""
        self.source = None  # a tail put back is encoded again
        tail: list[Chunk] = []
        if self.carry:
            chunk = self.decode(b"")
            if chunk:
                tail.append(chunk)
        if self.decoder is not None:
            rest = self.decoder.flush()
            if rest:
                tail.append(rest)
        return tail

    def end_plaintext(self) -> None:
        """Before TLS: plaintext nobody took is dropped; decoding starts afresh."""
        self.kept = bytearray()
        self.kept_sizes.clear()
        self.kept_taken = 0
        self.scanned = 0
        if self.decoder is not None:
            self.decoder = get_decoder(self.encoding or "utf8")

    def keep(self, data: bytes) -> None:
        """Keep received *data* (raw) for a consumer."""
        self.kept += data
        self.kept_sizes.append(len(data))

    def chunk_sizes(self) -> list[int]:
        """The sizes of the kept chunks, as the socket gave them (what pull
        reads took off the front is taken off them here, lazily)."""
        sizes = self.kept_sizes
        taken = self.kept_taken
        if taken:
            self.kept_taken = 0
            while taken:
                if sizes[0] > taken:
                    sizes[0] -= taken
                    break
                taken -= sizes.pop(0)
        return sizes

    def unread(self, data: bytes) -> None:
        """Put *data* back in front of what is kept (joining the first chunk)."""
        if data:
            sizes = self.chunk_sizes()
            self.kept[0:0] = data
            if sizes:
                sizes[0] += len(data)
            else:
                sizes.append(len(data))
            self.scanned = 0

    def take_bytes(self, size: int) -> bytes:
        """The first *size* kept bytes, raw (a pull read's)."""
        kept = self.kept
        self.scanned = 0
        if size == len(kept):
            data = bytes(kept)
            kept.clear()
            self.kept_sizes.clear()
            self.kept_taken = 0
            return data
        # Short takes (lines): one slice and one bytes object are the
        # cheapest; long ones copy once through a view.
        data = bytes(kept[:size]) if size <= 4096 else bytes(memoryview(kept)[:size])
        del kept[:size]  # moves nothing: CPython keeps an offset
        self.kept_taken += size
        return data

    def take_chunk(self, *, final: bool = False) -> Chunk | None:
        """The first kept chunk, decoded (``None``: nothing to deliver yet);
        *final*: the input is over, so the last one comes with what the
        decoder still holds."""
        raw = self.take_bytes(self.chunk_sizes()[0]) if self.kept else b""
        chunk = self.decode(raw) if raw else None
        if not final or self.kept:
            return chunk
        parts = ([chunk] if chunk else []) + self.take_tail()
        if not parts:
            return None
        if isinstance(parts[0], str):
            return "".join(part for part in parts if isinstance(part, str))
        return b"".join(part for part in parts if isinstance(part, bytes))

    def put_back(self, chunk: Chunk) -> None:
        """The last decoded *chunk*, which nobody took, goes back in front of
        what is kept, raw again: the bytes it was decoded from (with what the
        decoder held before them), and the decoder starts afresh."""
        self.scanned = 0
        self.chunk_sizes()
        source = self.source
        if isinstance(chunk, bytes) or source is None:
            # Bytes are raw already; a decoder's tail is encoded back.
            raw = chunk if isinstance(chunk, bytes) else encode(chunk, self.encoding or "utf8")
            self.unread(self.undecoded())
        else:
            raw, self.source = source, None
            self.carry = b""
            self.decoder = get_decoder(self.encoding or "utf8")  # its tail is in *raw*
        if raw:
            self.kept[0:0] = raw
            self.kept_sizes.insert(0, len(raw))

    def undecoded(self) -> bytes:
        """Take the bytes fed to the decoder that it has not decoded yet (it
        starts afresh): they come before everything kept."""
        held = self.carry
        self.carry = b""
        decoder = self.decoder
        if decoder is not None:
            pending = decoder.pending()
            if pending:
                held = pending + held
                self.decoder = get_decoder(self.encoding or "utf8")
        return held

    @property
    def kept_full(self) -> bool:
        """Kept bytes reached the high-water mark: stop reading until a consumer comes."""
        return len(self.kept) >= self.high_water_mark and bool(self.kept)

    def set_encoding(self, encoding: str | None) -> None:
        """Decode with *encoding* from now on (``None``: bytes). Kept bytes
        were not decoded yet: they come in the new encoding (as Node's
        ``setEncoding()`` converts its buffer); bytes the old decoder held (a
        split character) go first into the new one.

        Raises:
            TypeError, ValueError: an unknown encoding (nothing changes).
        """
        new = None if encoding is None else get_decoder(encoding)
        self.pull_ready = False
        held = b"" if self.decoder is None else self.decoder.pending()
        self.decoder = new
        self.encoding = encoding
        self.carry = held + self.carry
