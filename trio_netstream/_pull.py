"""Pull reads: ``read_until``, ``read_exactly``, ``read``.

How this works
--------------

Received bytes that no consumer took yet are *kept*, raw, in the stream's
flow (one ``bytearray``, :attr:`Flow.kept <trio_netstream._flow.Flow.kept>`).
A pull read looks there first: when the bytes it needs are kept, it takes
them and returns at once. Otherwise it becomes the flow's *puller* (a
:class:`Waiter`), wakes the reader and waits. The reader reads the socket
while a pull read waits (also while the stream is paused: pause() stops
``'data'``, not the reads a caller asks for), appends what it receives to
the kept bytes and wakes the waiter, which is then *served*: it is no
longer the puller, and looks again. ``'end'`` and the stream's close wake
it too (with the stream's error, which then counts as handled, as in
``async for``).

The first pull read marks the flow *pulled*: from then on the socket is
read only while somebody takes the bytes (a pull read waiting, a ``'data'``
listener or an ``async for``), so what the peer sends after, say, a
STARTTLS command stays in the kernel until the caller reads it or calls
``set_secure()``.

Searching is incremental: :attr:`Flow.scanned` records how far the kept
bytes were searched for the separator, so a peer that sends one byte per
segment costs a constant amount of work per byte, not a new search of the
whole buffer. Taking bytes off the front of a ``bytearray`` does not move
the rest (CPython keeps an offset), so a call costs what it returns.

Scheduling: a pull read that waits for the socket is a checkpoint. One
answered from the bytes already received is not, except once per
:data:`YIELD_BYTES` returned that way (then a full checkpoint, before
anything is taken): asyncio's ``StreamReader`` and anyio's
``BufferedByteReceiveStream`` do not checkpoint there at all, and a Trio
checkpoint costs several times a short line's own work (measured: 5.7 µs
for ``checkpoint()``, 0.36 µs for ``checkpoint_if_cancelled()``, against
about 1 µs for a whole ``readline()``). The kept bytes are bounded (the
high-water mark, or ``max_size``, plus one read), so a loop of pull reads
reaches a checkpoint at least once per buffer, and a cancellation is seen
within 64 KiB of returned bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import trio

from ._errors import StreamStateError
from ._options import check_int

if TYPE_CHECKING:
    from ._connection import Connection
    from ._emitter import EventEmitter
    from ._flow import Flow

__all__ = [
    "YIELD_BYTES",
    "Waiter",
    "check_max_size",
    "check_separator",
    "prepare",
    "pull",
    "owed_checkpoint",
    "served",
    "too_long",
    "upgrading",
    "wake_puller",
]

#: Bytes pull reads may return without a schedule point.
YIELD_BYTES = 64 * 1024


class Waiter:
    """A pull read waiting for bytes."""

    __slots__ = ("error", "event")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.error: BaseException | None = None


def served(flow: Flow) -> None:
    """The reader kept new bytes: the waiting pull read looks again."""
    waiter = flow.puller
    flow.puller = None
    waiter.event.set()


def wake_puller(flow: Flow, error: BaseException | None) -> bool:
    """The input is over (``'end'``, or the close with *error*): wake the
    waiting pull read; whether there was one (it raises *error*)."""
    waiter = flow.puller
    if waiter is None:
        return False
    flow.puller = None
    if not waiter.event.statistics().tasks_waiting:
        return False  # cancelled meanwhile: it will not raise *error*
    waiter.error = error
    waiter.event.set()
    return True


def check_max_size(max_size: object) -> int:
    return check_int("max_size", max_size, 1)


def check_separator(separator: object) -> bytes:
    if isinstance(separator, bytes):
        value = separator
    elif isinstance(separator, bytearray):
        value = bytes(separator)  # a copy: the caller may change theirs
    elif isinstance(separator, memoryview):
        value = cast("memoryview[int]", separator).tobytes()
    else:
        raise TypeError(f"separator must be bytes, not {type(separator).__name__}")
    if not value:
        raise ValueError("separator must not be empty")
    return value


def too_long(separator: bytes, limit: int) -> ValueError:
    """``max_size`` bytes came without *separator*."""
    return ValueError(
        f"read_until(): no {separator!r} in the first {limit} bytes (max_size); they stay readable"
    )


def eof_error(what: str, partial: bytes) -> EOFError:
    """The end of input before *what*: ``EOFError`` with ``.partial``."""
    error = EOFError(f"the stream ended before {what} ({len(partial)} bytes came)")
    error.partial = partial  # type: ignore[attr-defined]  # as asyncio's IncompleteReadError
    return error


def prepare(host: EventEmitter, conn: Connection | None, flow: Flow, call: str) -> None:
    """What every pull read does first: refuse where chunks are pushed, mark
    the flow pulled, and take back what the decoder or ``async for`` held."""
    if host.listener_count("data"):
        raise StreamStateError(
            f"{call} cannot read while a 'data' listener is attached (remove it, or"
            " read in the listener)"
        )
    if flow.puller is not None:
        raise StreamStateError(f"{call}: another read of this stream is waiting")
    if not flow.pulled:
        flow.pulled = True
        if conn is not None:
            # A plaintext receive under way would read bytes nobody asked for
            # (the peer's ClientHello after a STARTTLS): interrupt it.
            conn.wake_reader(interrupt=True)
    if flow.carry or flow.decoder is not None:
        flow.unread(flow.undecoded())
    withdraw(flow)
    if flow.feed is not None and not flow.feed.alive:
        flow.feed = None  # a loop that was left: nothing to take back from it
    flow.pull_ready = (
        flow.feed is None
        and flow.decoder is None
        and not flow.carry
        and not upgrading(conn)
        and flow.pull_budget < YIELD_BYTES
    )


def upgrading(conn: Connection | None) -> bool:
    """``set_secure()`` was called and the handshake is not done: a pull
    read waits (what is kept is plaintext, for 'data' or nobody)."""
    if conn is None:
        return False
    upgrade = conn.upgrade
    return upgrade is not None and not upgrade.done.is_set()


def withdraw(flow: Flow) -> bool:
    """Take back the chunk the reader is handing to ``async for`` (a pull
    read inside the loop gets it instead); whether there was one."""
    feed = flow.feed
    chunk = None if feed is None else feed.withdraw()
    if chunk is None:
        return False
    flow.put_back(chunk)
    return True


async def pull(
    conn: Connection | None, flow: Flow, what: str, *, eof_ok: bool = False
) -> bytes | None:
    """Wait until more bytes are kept. Returns ``None`` when some came; at
    the end of the input returns ``b""`` if *eof_ok*, else raises
    ``EOFError`` with ``.partial`` (all that is kept).

    Raises:
        OSError: the stream failed (its error; handled when raised while waiting).
        EOFError: see above.
    """
    if conn is not None and conn.error is not None and conn.closed:
        raise conn.error
    if conn is None or flow.sm.reading_over:
        await trio.lowlevel.checkpoint()
        if eof_ok:
            return b""
        raise eof_error(what, flow.take_bytes(len(flow.kept)))
    if withdraw(flow):
        return None
    waiter = flow.puller = Waiter()
    flow.pull_ready = False  # another pull read must meet the waiter in prepare()
    flow.pull_budget = 0  # waiting is a checkpoint
    kept = len(flow.kept)
    try:
        conn.wake_reader()
        await waiter.event.wait()
    finally:
        if flow.puller is waiter:
            flow.puller = None
    withdraw(flow)  # what the reader went on to hand to async for comes first
    if waiter.error is not None:
        raise waiter.error
    if len(flow.kept) == kept and flow.sm.reading_over:
        return await pull(conn, flow, what, eof_ok=eof_ok)
    return None


async def owed_checkpoint(flow: Flow) -> None:
    """The checkpoint pull reads owe once per :data:`YIELD_BYTES` they
    returned without waiting (a cancel point: before anything is taken)."""
    flow.pull_budget = 0
    await trio.lowlevel.checkpoint()
