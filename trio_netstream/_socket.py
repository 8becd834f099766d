"""The plaintext socket transport: a Trio stream that calls the socket directly.

``trio.SocketStream`` wraps every call in a conflict detector, an error
translator and the socket wrapper's own non-blocking helper. This transport
does the same work with the stdlib socket object itself, keeps Trio's
cancellation rules (a checkpoint on every call; a cancelled receive consumed
nothing) and adds :meth:`SocketTransport.try_send`, the synchronous
non-blocking send that ``write()`` uses when nothing is queued (libuv's
try-write). Errors are the socket's own ``OSError``s; the stream translates
them (``_errors``).

The Trio socket wrapping the same object is kept as :attr:`socket`, for
users and socket options; closing notifies Trio first
(``trio.lowlevel.notify_closing``), so tasks waiting on the descriptor wake.

A receive that finds the socket empty right after a large read (a bulk
flow: the rest is usually microseconds away) first yields to Trio's
scheduler a few times, trying again each time, before it waits in epoll.
Sleeping there costs the *sender* a wake-up of this process on every
chunk; on the benchmark's VM, trying first took the median of loopback
bulk with Nagle on from 3.0 to 4.8 GB/s (docs/behaviour.md has the
figures with ``no_delay``). Other tasks run at every yield; the number of
tries adapts (it doubles after a spell found data, halves after one found
none), and connections that read small chunks (request/response, idle)
sleep at once. TLS reads through this transport too.
"""

from __future__ import annotations

import errno
import os
import socket as _stdlib_socket
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import trio

__all__ = ["SocketTransport", "connect"]


async def connect(sock: _stdlib_socket.socket, address: Any) -> None:
    """Connect the non-blocking stdlib *sock* to *address*, as Trio's
    ``socket.connect`` does (a cancel point; cancellable while the handshake
    is in flight; the caller closes the socket on failure), without making a
    Trio socket wrapper. A handshake that is over when ``connect()`` is asked
    again (over loopback it usually is) costs no wait in epoll, and no
    schedule point either: its one caller, the dial, goes on to the
    connection's first read, which waits.

    Raises:
        OSError: the connection failed (``ECONNREFUSED``, ``ENOENT``, ...).
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    code = sock.connect_ex(address)
    if code == errno.EINPROGRESS:
        # Asking again answers 0 (connected; EISCONN outside Linux), the
        # failure, or EALREADY.
        code = sock.connect_ex(address)
        if code == errno.EISCONN:
            code = 0
        elif code in (errno.EALREADY, errno.EINPROGRESS):
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ERROR)
            if code == 0:
                return  # the wait was the checkpoint
    if code != 0:
        raise OSError(code, f"Error connecting to {address!r}: {os.strerror(code)}")


_DEFAULT_RECEIVE = 64 * 1024
BULK_READ = 16 * 1024  # a read at least this large makes the next empty receive spin
MAX_SPINS = 16  # scheduler steps a receive may spend trying before it waits
PROBE_EVERY = 8  # while reads after a reply yield first, one in this many does not


def _recv_now(sock: _stdlib_socket.socket, size: int) -> bytes | None:
    """``recv()`` without waiting; ``None`` if nothing has arrived.

    The ``BlockingIOError`` is caught here, not in the coroutine: a traceback
    through a coroutine gives its frame a frame object for the rest of its
    life, about 200 bytes on every idle connection.
    """
    try:
        return sock.recv(size)
    except BlockingIOError:
        return None


class SocketTransport(trio.abc.HalfCloseableStream):
    """A connected stdlib socket as a ``trio.abc.HalfCloseableStream``."""

    __slots__ = (
        "_bulk",
        "_eof_sent",
        "_probes",
        "_replied",
        "_sending",
        "_sock",
        "_spins",
        "_trio_socket",
        "_yield_first",
    )

    def __init__(
        self, sock: _stdlib_socket.socket, trio_socket: trio.socket.SocketType | None = None
    ):
        if sock.gettimeout() != 0.0:  # (setblocking() makes a system call even then)
            sock.setblocking(False)
        self._sock = sock
        self._trio_socket = trio_socket  # made when first asked for: idle connections are lighter
        self._eof_sent = False
        self._sending = False  # a send_all() is waiting for room (one sender at a time)
        self._bulk = False  # the last read was large: more is likely on its way
        self._spins = MAX_SPINS
        self._replied = False  # try_send() sent since the last read
        self._yield_first = False  # after a reply, yield before reading (see receive_ready)
        self._probes = 0

    @property
    def plain(self) -> _stdlib_socket.socket:
        """The stdlib socket itself (for options and addresses)."""
        return self._sock

    @property
    def socket(self) -> trio.socket.SocketType:
        """The Trio socket wrapping the same descriptor."""
        if self._trio_socket is None:
            self._trio_socket = trio.socket.from_stdlib_socket(self._sock)
        return self._trio_socket

    def close_now(self) -> None:
        """Close at once, waking any task waiting on the descriptor first. Idempotent."""
        if self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    def try_send(self, data: bytes) -> int:
        """Send what the kernel takes now, without waiting; how many bytes went.

        Raises:
            OSError: the socket failed (not ``EAGAIN``, which returns 0).
        """
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            return 0
        self._replied = True
        return sent

    def reset_error(self) -> ConnectionResetError | None:
        """The reset a read would report now (without consuming data), if any.

        After a failed send (``EPIPE``), Node reports the ``ECONNRESET`` its
        read sees; this lets the stream do the same.
        """
        try:
            self._sock.recv(1, _stdlib_socket.MSG_PEEK | _stdlib_socket.MSG_DONTWAIT)
        except ConnectionResetError as exc:
            return exc
        except OSError:
            return None
        return None

    def recv_nowait(self, size: int) -> bytes | None:
        """What has arrived (at most *size* bytes, ``b""`` at EOF), without
        waiting or yielding; ``None`` if nothing has.

        Raises:
            trio.ClosedResourceError, trio.BrokenResourceError: the socket
                was closed or failed (the ``OSError`` is the cause).
        """
        try:
            data = _recv_now(self._sock, size)
        except OSError as exc:
            raise self._broken(exc) from exc
        if data is not None:
            self._bulk = len(data) >= BULK_READ
        return data

    async def receive_ready(self, size: int, still: Callable[[], bool]) -> bytes | None:
        """:meth:`receive_some` up to its wait: the checkpoint, the read, and
        after a large read the scheduler steps that try again; ``None`` where
        it would wait in epoll (the caller waits itself: see
        ``_reader.quiet_read``), or where, after a yield, *still* says the
        caller may no longer read (``set_secure()`` meanwhile: what comes
        next is TLS). No cancel scope interrupts these yields, so *still*
        is asked after each, before reading."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._replied and not self._bulk:
            return await self._after_reply(size, still)
        data = self.recv_nowait(size)
        if data is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
        elif self._bulk:
            try:
                data = await self._spin(self._sock, size, still)
            except OSError as exc:
                raise self._broken(exc) from exc
            if data is not None:
                self._bulk = len(data) >= BULK_READ
        return data

    async def _after_reply(self, size: int, still: Callable[[], bool]) -> bytes | None:
        """The first read after this side answered (``try_send()``): right
        away, or after one scheduler step, whichever found the peer's next
        message last time. A peer on the same core has often answered by the
        time the send returns (the kernel ran it); one on another core or
        host has not, and a read that finds nothing costs a failed ``recv``
        and a re-armed epoll registration, where one step (other
        connections' work) often lets the answer arrive: then, as Trio's
        ``send_all`` does, yield first. While yielding first, one reply in
        :data:`PROBE_EVERY` reads right away again, to notice a peer that
        answers at once. Either way the read is a schedule point."""
        self._replied = False
        if self._yield_first:
            self._probes += 1
            if self._probes % PROBE_EVERY:
                return await self._yield_then_recv(size, still)
        data = self.recv_nowait(size)
        if data is not None:
            self._yield_first = False
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        if self._yield_first:  # a probe that found nothing: the step as usual
            return await self._yield_then_recv(size, still)
        self._yield_first = True
        return None

    async def _yield_then_recv(self, size: int, still: Callable[[], bool]) -> bytes | None:
        await trio.lowlevel.cancel_shielded_checkpoint()
        if not still():
            return None
        data = self.recv_nowait(size)
        self._yield_first = data is not None
        return data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        sock = self._sock
        size = _DEFAULT_RECEIVE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = _recv_now(sock, size)
            if data is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
            elif self._bulk:
                data = await self._spin(sock, size)
            while data is None:
                await trio.lowlevel.wait_readable(sock)
                # Woken, but cancelled before running on (set_secure() from
                # another task): read nothing, as a cancelled receive must.
                await trio.lowlevel.checkpoint_if_cancelled()
                data = _recv_now(sock, size)
        except OSError as exc:
            raise self._broken(exc) from exc
        self._bulk = len(data) >= BULK_READ
        return data

    def _broken(self, exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
        """A socket call failed: Trio's exception for it (the ``OSError`` is its
        cause, which the stream reports)."""
        if self._sock.fileno() < 0:
            return trio.ClosedResourceError("the transport was closed")
        return trio.BrokenResourceError(f"the socket failed: {exc}")

    async def _spin(
        self, sock: _stdlib_socket.socket, size: int, still: Callable[[], bool] | None = None
    ) -> bytes | None:
        """Yield to the scheduler up to ``_spins`` times, reading after each
        (unless *still* says no more); ``None`` if nothing came (the caller
        waits in epoll then)."""
        spins = self._spins
        for _ in range(spins):
            await trio.lowlevel.checkpoint()
            if still is not None and not still():
                return None
            data = _recv_now(sock, size)
            if data is not None:
                self._spins = min(spins * 2, MAX_SPINS)
                return data
        self._spins = max(spins // 2, 1)
        return None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self._sock
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._eof_sent or self._sending:
            raise self._not_now()
        try:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            total = len(data)
            if sent == total:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            self._sending = True
            try:
                with memoryview(data) as view:
                    while sent < total:
                        await self.wait_writable()
                        try:
                            sent += sock.send(view[sent:])
                        except BlockingIOError:
                            continue
            finally:
                self._sending = False
        except OSError as exc:
            raise self._broken(exc) from exc

    def _not_now(self) -> trio.ClosedResourceError | trio.BusyResourceError:
        if self._sending:
            return trio.BusyResourceError("another task is sending on this transport")
        return trio.ClosedResourceError("can't send data after sending EOF")

    async def wait_send_all_might_not_block(self) -> None:
        if self._sock.fileno() < 0:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("the transport was closed")
        if self._sending:
            await trio.lowlevel.checkpoint()
            raise trio.BusyResourceError("another task is sending on this transport")
        self._sending = True
        try:
            await self.wait_writable()
        finally:
            self._sending = False

    async def wait_writable(self) -> None:
        """``trio.lowlevel.wait_writable`` on the socket, waiting again when
        the wake-up was not its closing: the stream wakes a reader waiting
        on the descriptor with ``notify_closing`` (``_reader.quiet_read``),
        which wakes every task waiting on it.

        Raises:
            trio.ClosedResourceError: the socket was closed meanwhile.
        """
        while True:
            try:
                await trio.lowlevel.wait_writable(self._sock)
            except trio.ClosedResourceError:
                if self._sock.fileno() < 0:
                    raise
            else:
                return

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this transport")
        try:
            self.try_send_eof()
        except OSError as exc:
            raise self._broken(exc) from exc

    def try_send_eof(self) -> None:
        """Send FIN now (it never waits). Idempotent.

        Raises:
            OSError: the socket failed.
        """
        if not self._eof_sent:
            self._sock.shutdown(_stdlib_socket.SHUT_WR)
            self._eof_sent = True  # after: a failed shutdown is met (and reported) again

    def discard_unread(self, limit: int = 1024 * 1024) -> None:
        """Read off (at most *limit*) bytes that arrived and will not be read,
        so that closing sends a FIN, not a reset. Never waits."""
        with suppress(OSError):
            while limit > 0:
                data = _recv_now(self._sock, min(limit, _DEFAULT_RECEIVE))
                if not data:
                    return
                limit -= len(data)

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()
