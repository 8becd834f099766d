"""The reader: receive, decode, deliver; Node's orderings around it.

The reader runs inside the connection's lifecycle task, in *sessions* (a
TLS upgrade comes between two): receive a chunk, count it, decode it, and
deliver it to the consumers: the ``'data'`` listeners and an ``async for``
(the feed kept in the stream's flow). A chunk
nobody takes yet is *kept* in the flow for the first consumer (up to the
high-water mark, then the socket is not read). While paused, or while an
async listener runs, the socket is not read: that is the backpressure.

What must come before an event the reader emits (the owed drain, the kept
chunks, the decoder's tail) is the flow's table
:data:`~trio_netstream._flow.BEFORE`, carried out by :func:`settle`; the
common case (bytes, a sync ``'data'`` listener, nothing kept) is inlined in
:func:`read_session`.
"""

from __future__ import annotations

import errno
import math
from functools import partial
from typing import TYPE_CHECKING

import trio

from ._errors import TransportError, translate, transport_errors
from ._flow import BEFORE, Chunk, Step
from ._pull import served, wake_puller
from ._socket import SocketTransport
from ._state import Input
from ._tls import TLSTransport, make_transport, verify

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._connection import Connection, Upgrade

__all__ = [
    "READ_SIZE",
    "deliver",
    "end_of_input",
    "has_consumer",
    "pushes",
    "quiet_read",
    "read_session",
    "reads_quietly",
    "secure",
    "settle",
]

#: Bytes asked of the transport per read (at or below glibc's mmap threshold).
READ_SIZE = 64 * 1024


def pushes(conn: Connection) -> bool:
    """Chunks go to a ``'data'`` listener or a live ``async for`` (one not
    set aside by a waiting pull read)."""
    flow = conn.flow
    feed = flow.feed
    return conn.host.listener_count("data") > 0 or (
        feed is not None and flow.puller is None and feed.alive
    )


def has_consumer(conn: Connection) -> bool:
    """Somebody takes what is read: chunks are pushed, or a pull read waits."""
    return conn.flow.puller is not None or pushes(conn)


def reads_for_nobody(conn: Connection) -> bool:
    """Nobody takes what would be read, and nothing more may be kept for
    them: the kept bytes reached the high-water mark, or pull reads consume
    this stream (they read only while called) and this side did not end (it
    can no longer upgrade to TLS, and the peer's end must be seen)."""
    flow = conn.flow
    return (flow.kept_full or (flow.pulled and not flow.sm.write_ended)) and not has_consumer(conn)


async def settle(conn: Connection, event: str) -> None:
    """Do what Node's ordering rules put before *event* (``BEFORE[event]``)."""
    flow = conn.flow
    for step in BEFORE[event]:
        if step is Step.RESUMED:
            await conn.wait_resumed()
        elif step is Step.OWED_DRAIN:
            if flow.need_drain:
                await owed_drain(conn)
        elif step is Step.KEPT:
            if flow.kept and pushes(conn):
                await flush_kept(conn)
        elif step is Step.TAIL:
            if flow.kept or not pushes(conn):
                flow.unread(flow.undecoded())  # for whoever reads next, raw, in front
            else:
                for chunk in flow.take_tail():
                    await _to_consumers(conn, chunk)
        else:
            flow.end_plaintext()


async def owed_drain(conn: Connection) -> None:
    """The ``'drain'`` owed to a ``write()`` that returned ``False`` but went
    out at once (try-write). The writer emits the one owed to queued bytes."""
    if conn.flow.drain_due(conn.listens("drain")):
        conn.flushed()
        await conn.emit("drain")


async def read_session(conn: Connection, scope: trio.CancelScope) -> tuple[bool, bytes | None]:
    """One read session: ``(eof, chunk to deliver outside the scope)``."""
    transport = conn.transport
    assert transport is not None
    receive = transport.receive_some
    flow = conn.flow
    emitter = conn.host
    upgrade = conn.upgrade
    while upgrade is conn.upgrade:  # until set_secure() is called
        if reads_quietly(conn):
            return False, None  # the lifecycle reads on outside this step
        if flow.kept and pushes(conn):
            if flow.need_drain:
                await owed_drain(conn)
            await flush_kept(conn)
        if (flow.paused and flow.puller is None) or reads_for_nobody(conn):
            await conn.park_reader()
            continue
        conn.in_receive = True
        try:
            data = await receive(READ_SIZE)
        except (OSError, trio.BrokenResourceError) as exc:
            raise TransportError(translate(exc)) from None
        except trio.ClosedResourceError as exc:
            if not conn.wrote_eof:
                raise TransportError(translate(exc)) from None
            conn.read_stopped = True  # we closed a transport without send_eof() after end()
            return True, None
        finally:
            conn.in_receive = False
        if not data:
            return True, None
        if type(data) is not bytes:
            data = bytes(data)  # trio's in-memory streams return bytearray
        flow.bytes_read += len(data)
        if flow.idle_period:
            flow.last_activity = trio.current_time()
        if scope.cancel_called:
            return False, data
        # BEFORE["data"], inlined:
        if flow.paused and flow.puller is None:
            await conn.wait_resumed()
        if flow.need_drain:
            await owed_drain(conn)
        if (
            flow.decoder is None
            and not conn.stopped
            and flow.feed is None
            and not flow.kept
            and not flow.carry
            and conn.emission_free
            and emitter.listener_count("data")
        ):
            # The common case, inline: bytes straight to the 'data' listeners.
            pending = emitter.emit("data", data)
            if pending is not None:
                await conn.finish_emission(pending)
            continue
        await deliver(conn, data)
    return False, None


def reads_quietly(conn: Connection) -> bool:
    """Whether the reader may read without a cancel scope (:func:`quiet_read`):
    a plaintext socket of ours whose chunks go straight to sync-so-far
    ``'data'`` listeners, nothing kept, owed or in the way."""
    flow = conn.flow
    return (
        conn.direct is not None
        and conn.upgrade is None
        and not conn.stopped
        and not flow.paused
        and flow.puller is None
        and flow.decoder is None
        and flow.feed is None
        and not flow.kept
        and not flow.carry
        and not flow.need_drain
        and conn.emission_free
        and conn.host.listener_count("data") > 0
    )


async def quiet_read(conn: Connection) -> tuple[bool, bytes | None]:
    """Read and deliver while :func:`reads_quietly`, outside any cancel scope:
    ``(eof, chunk to deliver in a step)``, like :func:`read_session`.

    An idle connection then costs no cancel scope (about 700 bytes: a scope,
    its status and that status's two sets), and a chunk no scope check.
    Nothing here can be stuck where ``stop()`` (``destroy()``, a failure) or
    ``wake_reader()`` must reach it: the only wait is the epoll wait below,
    which they end with ``trio.lowlevel.notify_closing`` (see
    :func:`wake_quiet_reader`); the rest is synchronous or a yield, after
    which the conditions are asked again. An async listener's emission
    is finished in a step of its own, so that ``destroy()`` cancels it.
    """
    transport = conn.direct
    assert isinstance(transport, SocketTransport)
    flow = conn.flow
    emitter = conn.host
    still = partial(reads_quietly, conn)  # made once, not per chunk
    while still():
        try:
            data = await _quiet_receive(conn, transport, still)
        except trio.ClosedResourceError as exc:
            if not conn.wrote_eof:
                raise TransportError(translate(exc)) from None
            conn.read_stopped = True  # closed under us after end() (read_session's rule)
            return True, None
        except trio.BrokenResourceError as exc:
            raise TransportError(translate(exc)) from None
        if data is None:
            return False, None
        if not data:
            return True, None
        flow.bytes_read += len(data)
        if flow.idle_period:
            flow.last_activity = trio.current_time()
        if not still():
            return False, data
        pending = emitter.emit("data", data)
        if pending is not None:
            with conn.step():
                await conn.finish_emission(pending)
    return False, None


async def _quiet_receive(
    conn: Connection, transport: SocketTransport, still: Callable[[], bool]
) -> bytes | None:
    """The next chunk for :func:`quiet_read` (``b""`` at EOF), waiting in
    epoll for it; ``None`` once *still* (:func:`reads_quietly`) says no
    (asked after every yield and wait) or when woken by ``notify_closing``:
    the caller looks at why. Transport failures are raised (Trio's exceptions)."""
    data = await transport.receive_ready(READ_SIZE, still)
    while data is None:
        if not still():
            return None
        conn.quiet_wait = True
        try:
            await trio.lowlevel.wait_readable(transport.plain)
        except trio.ClosedResourceError:
            return None  # woken (or the socket closed: the next read says so)
        finally:
            conn.quiet_wait = False
        await trio.lowlevel.checkpoint_if_cancelled()
        if conn.stopped or conn.upgrade is not None:
            return None  # destroyed, or TLS bytes (set_secure()) as it woke
        # Read what woke it now, as a receive does after its wait (no
        # schedule point more: a failing send may be about to report the
        # reset this read finds as an EOF); a chunk the conditions no
        # longer let through goes to the step.
        data = transport.recv_nowait(READ_SIZE)
    return data


async def deliver(conn: Connection, data: bytes) -> None:
    """Deliver *data*: decoded to the consumers of chunks, or kept (raw) for
    a pull read or a consumer to come."""
    flow = conn.flow
    if flow.kept or flow.puller is not None or not pushes(conn):
        # Nobody takes chunks now (or some wait before these): keep them,
        # bounded by the high-water mark (see read_session) unless a pull
        # read waits for them.
        flow.keep(data)
        if flow.puller is not None:
            served(flow)
        else:
            await flush_kept(conn)
        return
    chunk = flow.decode(data)
    if chunk is not None:
        await _to_consumers(conn, chunk)


async def flush_kept(conn: Connection) -> None:
    flow = conn.flow
    while flow.kept and pushes(conn) and not flow.paused:
        chunk = flow.take_chunk()
        if chunk is not None:
            await _to_consumers(conn, chunk)


async def _to_consumers(conn: Connection, chunk: Chunk) -> None:
    if conn.stopped:
        return  # destroy() means close now: nothing more is delivered
    host = conn.host
    flow = conn.flow
    if host.listener_count("data"):
        await conn.emit("data", chunk)
    feed = flow.feed
    if feed is not None and not feed.finished and not await feed.put(chunk):
        if flow.feed is feed:  # not a new loop started meanwhile
            flow.feed = None
        if not host.listener_count("data"):
            # The loop was left: nobody took this chunk; keep it, first in line.
            flow.put_back(chunk)


async def end_of_input(conn: Connection) -> None:
    """The peer's FIN: what comes before ``'end'``, then ``'end'``."""
    await settle(conn, "end")
    sm = conn.flow.sm
    if not sm.can(Input.PEER_END):
        return  # the stream failed or was destroyed meanwhile (e.g. the writer's EPIPE)
    sm.apply(Input.PEER_END)
    if conn.flow.feed is not None:
        conn.flow.feed.finish(None)
    wake_puller(conn.flow, None)
    await conn.emit("end")
    if not conn.options.allow_half_open and sm.half_open:
        conn.host.end()


async def secure(conn: Connection, upgrade: Upgrade) -> None:
    """Upgrade the connection to TLS, then emit ``'secure'``.

    Everything read before ``set_secure()`` was delivered as plaintext by
    now (``BEFORE["secure"]``); plaintext nobody consumed is dropped, so it
    can never come out after ``'secure'``. The writer has sent the plaintext
    written before the call and waits; the reader is the only task using
    the socket.
    """
    await settle(conn, "secure")
    await upgrade.writer_ready.wait()
    raw = conn.transport
    assert raw is not None
    tls = make_transport(
        raw,
        upgrade.context,
        server_side=upgrade.server_side,
        server_hostname=upgrade.server_hostname,
        reject_unauthorized=upgrade.reject_unauthorized,
        alpn_protocols=upgrade.alpn_protocols,
        session=upgrade.session,
    )
    conn.transport = tls  # closing the stream now closes the socket through it
    await _handshake(tls, upgrade.handshake_timeout)
    upgrade.tls = tls
    upgrade.verification = verify(
        tls.ssl_object,
        upgrade.context,
        server_side=upgrade.server_side,
        server_hostname=upgrade.server_hostname,
        reject_unauthorized=upgrade.reject_unauthorized,
    )
    upgrade.done.set()
    wake_puller(conn.flow, None)  # a pull read waiting for the handshake looks again
    await conn.emit("secure")
    if conn.accepted and upgrade.first_byte:
        await conn.owner.secured(conn.host)


async def _handshake(tls: TLSTransport, limit_ms: float) -> None:
    """The TLS handshake, within *limit_ms* (``0``: no limit).

    Raises:
        TransportError: it failed, or took too long (``TimeoutError``,
            ``ERR_TLS_HANDSHAKE_TIMEOUT``, as Node's).
    """
    with trio.move_on_after(limit_ms / 1000 if limit_ms else math.inf) as scope:
        with transport_errors():
            await tls.do_handshake()
    if scope.cancelled_caught:
        error = TimeoutError(errno.ETIMEDOUT, f"TLS handshake timeout ({limit_ms:g} ms)")
        error.code = "ERR_TLS_HANDSHAKE_TIMEOUT"  # type: ignore[attr-defined]  # as Node's
        raise TransportError(error)
