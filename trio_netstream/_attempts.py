"""Connecting a client stream: the lookup, then the connection attempts.

:func:`dial` resolves the target (``'lookup'``), orders the addresses and
runs the attempts, emitting ``'connectionAttempt'``,
``'connectionAttemptFailed'`` and ``'connectionAttemptTimeout'`` through the
connection (in the order of Node v20's ``net``). With several addresses and
``auto_select_family`` (the default) the attempts race as in RFC 8305
(Happy Eyeballs): the families interleaved, each attempt started
``auto_select_family_attempt_timeout`` after the previous one or as soon as
it fails, the first to connect wins. Each racing attempt is a task of the
stream's own nursery; the task calling :func:`dial` owns every socket, so a
loser's is closed before the winner is returned (its task, cancelled, then
ends without a trace). A single address (an IP literal, a UNIX path)
connects inline: no task, no timer.

The address policy (filtering by family, interleaving) is pure
(:func:`order`); the I/O is in :func:`dial`.
"""

from __future__ import annotations

import errno
import math
import socket as _stdlib_socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._dial import Candidate, Target, getaddrinfo_named, numeric_candidates
from ._errors import TransportError, translate
from ._socket import SocketTransport, connect

if TYPE_CHECKING:
    from ._options import StreamOptions

__all__ = ["dial", "order"]

Emit = Callable[..., Awaitable[None]]

#: What resolvers say when a name has no address (of the family asked for).
_NO_SUCH_ADDRESS = {
    getattr(_stdlib_socket, name)
    for name in ("EAI_NONAME", "EAI_ADDRFAMILY", "EAI_NODATA")
    if hasattr(_stdlib_socket, name)
}
_FAMILIES = {0: _stdlib_socket.AF_UNSPEC, 4: _stdlib_socket.AF_INET, 6: _stdlib_socket.AF_INET6}


def _not_found(host: str, why: str, cause: BaseException | None) -> OSError:
    """Node's ``ENOTFOUND`` for *host*, saying *why*."""
    failed = _stdlib_socket.gaierror(
        _stdlib_socket.EAI_NONAME, f"getaddrinfo ENOTFOUND {host} ({why})"
    )
    failed.code = "ENOTFOUND"  # type: ignore[attr-defined]  # OSError instances take attributes
    failed.hostname = host  # type: ignore[attr-defined]  # as Node's error.hostname
    failed.__cause__ = cause
    return failed


async def _say(emit: Emit, event: str, *args: object) -> None:
    """Emit *event* (*emit* emits nothing once the stream is destroyed; the
    dialing then stops at its next checkpoint, which the destruction
    cancelled)."""
    await emit(event, *args)


def _version(family: int) -> int:
    return 6 if family == _stdlib_socket.AF_INET6 else 4


def order(candidates: list[Candidate]) -> list[Candidate]:
    """RFC 8305's order: the families interleaved, the resolver's first family
    first, each family in the resolver's order."""
    if len(candidates) < 2:
        return candidates
    first = candidates[0][0]
    ours = [c for c in candidates if c[0] == first]
    others = [c for c in candidates if c[0] != first]
    ordered: list[Candidate] = []
    for pair in zip(ours, others, strict=False):
        ordered.extend(pair)
    shorter = min(len(ours), len(others))
    ordered.extend(ours[shorter:] or others[shorter:])
    return ordered


class Attempt:
    """One connection attempt: its address, its socket (owned by the caller
    of :func:`dial`), and how it ended."""

    __slots__ = ("address", "done", "error", "family", "scope", "sock")

    def __init__(self, family: int, address: Any) -> None:
        self.family = family
        self.address = address
        self.sock: _stdlib_socket.socket | None = None
        self.scope: trio.CancelScope | None = None  # a racing attempt's task's
        self.done = False
        self.error: BaseException | None = None

    @property
    def ip(self) -> str:
        return str(self.address[0])

    @property
    def port(self) -> int:
        return int(self.address[1])

    def event_args(self) -> tuple[str, int, int]:
        """``(ip, port, family)`` as Node's attempt events give them."""
        return self.ip, self.port, _version(self.family)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None and sock.fileno() >= 0:
            trio.lowlevel.notify_closing(sock)
            sock.close()


_STREAM_NONBLOCK = _stdlib_socket.SOCK_STREAM | getattr(_stdlib_socket, "SOCK_NONBLOCK", 0)


async def _connect(attempt: Attempt, options: StreamOptions) -> None:
    """Make, bind and connect the attempt's socket; a failure is its error.
    (``connect()`` checkpoints first: a racing task cancelled before it ran
    closes the socket it just made.)"""
    try:
        # Non-blocking from the start where the platform can (no fcntl more).
        sock = attempt.sock = _stdlib_socket.socket(attempt.family, _STREAM_NONBLOCK)
        if sock.gettimeout() != 0.0:
            sock.setblocking(False)
        if options.local_address is not None or options.local_port is not None:
            _bind(sock, attempt.family, options)
        await connect(sock, attempt.address)
    except (OSError, trio.ClosedResourceError) as exc:
        attempt.error = translate(exc)
        attempt.close()
    except BaseException:  # cancelled: the dialing task may be gone already
        attempt.close()
        raise
    attempt.done = True


def _bind(sock: _stdlib_socket.socket, family: int, options: StreamOptions) -> None:
    any_address = "::" if family == _stdlib_socket.AF_INET6 else "0.0.0.0"
    if family == _stdlib_socket.AF_INET6:
        # The port is this family's: an IPv4 attempt may bind it too.
        sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1)
    sock.bind((options.local_address or any_address, options.local_port or 0))


async def _lookup(target: Target, options: StreamOptions, emit: Emit) -> list[Candidate]:
    """The addresses to try, ``'lookup'`` emitted for a host name."""
    if target.path is not None:
        return [(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM, 0, target.path)]
    numeric = numeric_candidates(target.host, target.port)
    if numeric is not None:
        return numeric
    try:
        infos = await getaddrinfo_named(target.host, target.port, family=_FAMILIES[options.family])
    except OSError as exc:
        failed: OSError = exc
        if options.family and exc.errno in _NO_SUCH_ADDRESS:
            failed = _not_found(
                target.host, f"no IPv{options.family} address (family={options.family})", exc
            )
        await _say(emit, "lookup", failed, None, None, target.host)
        raise TransportError(failed) from None
    candidates = [(family, kind, proto, address) for family, kind, proto, _, address in infos]
    local = options.local_address
    if local is not None:  # only the local address's family can connect from it
        wanted = _stdlib_socket.AF_INET6 if ":" in local else _stdlib_socket.AF_INET
        candidates = [c for c in candidates if c[0] == wanted]
    if not candidates:
        why = "no address" if local is None else f"no address of local_address {local}'s family"
        failed = _not_found(target.host, why, None)
        await _say(emit, "lookup", failed, None, None, target.host)
        raise TransportError(failed)
    family, _, _, address = candidates[0]
    await _say(emit, "lookup", None, address[0], _version(family), target.host)
    return candidates


async def dial(
    target: Target, options: StreamOptions, emit: Emit, nursery: trio.Nursery
) -> tuple[SocketTransport, Any]:
    """A connected transport to *target*, and the address it reached.

    Raises:
        TransportError: the lookup failed, every attempt failed (the last
            failure, with ``.attempts``), or ``connect_timeout`` ran out
            (``TimeoutError``, ``ETIMEDOUT``).
    """
    attempts: list[Attempt] = []
    timeout = options.connect_timeout
    try:
        if timeout is None:
            return await _attempts(target, options, emit, nursery, attempts)
        with trio.move_on_after(timeout / 1000):
            return await _attempts(target, options, emit, nursery, attempts)
    finally:
        for attempt in attempts:  # the losers, or every one when cancelled
            if attempt.scope is not None:
                attempt.scope.cancel()
            attempt.close()
    raise _timed_out(target, timeout, attempts)


async def _attempts(
    target: Target,
    options: StreamOptions,
    emit: Emit,
    nursery: trio.Nursery,
    attempts: list[Attempt],
) -> tuple[SocketTransport, Any]:
    candidates = order(await _lookup(target, options, emit))
    if len(candidates) == 1 or not options.auto_select_family:
        return await _one_at_a_time(candidates, options, emit, attempts)
    return await _race(candidates, options, emit, nursery, attempts)


def _where(attempt: Attempt) -> tuple[Any, int | None]:
    """``(ip, port)`` of a TCP attempt, ``(path, None)`` of a UNIX one."""
    if attempt.family == _stdlib_socket.AF_UNIX:
        return attempt.address, None
    return attempt.ip, attempt.port


def _timed_out(target: Target, timeout: float, attempts: list[Attempt]) -> TransportError:
    """``connect_timeout`` ran out: ``TimeoutError`` (``ETIMEDOUT``); the
    attempts still running when it did are listed with it."""
    where = target.path if target.path is not None else f"{target.host}:{target.port}"
    error = TimeoutError(
        errno.ETIMEDOUT, f"connect ETIMEDOUT {where} (not connected within {timeout:g} ms)"
    )
    error.code = "ETIMEDOUT"  # type: ignore[attr-defined]  # OSError instances take attributes
    error.attempts = [(*_where(a), a.error or error) for a in attempts]  # type: ignore[attr-defined]
    return TransportError(error)


def _won(attempt: Attempt) -> tuple[SocketTransport, Any]:
    sock, attempt.sock = attempt.sock, None
    assert sock is not None
    return SocketTransport(sock), attempt.address


def _all_failed(attempts: list[Attempt], last: Attempt) -> TransportError:
    """The last attempt to fail's error, listing every attempt in start order."""
    error = last.error
    assert error is not None
    error.attempts = [(*_where(a), a.error) for a in attempts]  # type: ignore[attr-defined]
    return TransportError(error)


async def _one_at_a_time(
    candidates: list[Candidate], options: StreamOptions, emit: Emit, attempts: list[Attempt]
) -> tuple[SocketTransport, Any]:
    """Each address in turn, until one connects."""
    for family, _, _, address in candidates:
        attempt = Attempt(family, address)
        attempts.append(attempt)
        tcp = family != _stdlib_socket.AF_UNIX
        if tcp:
            await _say(emit, "connectionAttempt", *attempt.event_args())
        await _connect(attempt, options)
        if attempt.error is None:
            return _won(attempt)
        if tcp:
            await _say(emit, "connectionAttemptFailed", *attempt.event_args(), attempt.error)
    raise _all_failed(attempts, attempts[-1])


async def _race(
    candidates: list[Candidate],
    options: StreamOptions,
    emit: Emit,
    nursery: trio.Nursery,
    attempts: list[Attempt],
) -> tuple[SocketTransport, Any]:
    """RFC 8305: staggered attempts, the first to connect wins."""
    delay = options.auto_select_family_attempt_timeout / 1000
    pending = list(reversed(candidates))
    finished: list[Attempt] = []
    lot = trio.lowlevel.ParkingLot()

    async def run(attempt: Attempt, scope: trio.CancelScope) -> None:
        with scope:
            await _connect(attempt, options)
        if attempt.done:
            finished.append(attempt)
            lot.unpark_all()

    async def start() -> float:
        family, _, _, address = pending.pop()
        attempt = Attempt(family, address)
        attempts.append(attempt)
        await _say(emit, "connectionAttempt", *attempt.event_args())
        attempt.scope = trio.CancelScope()
        nursery.start_soon(run, attempt, attempt.scope)
        return trio.current_time() + delay

    next_start = await start()
    last_failed: Attempt | None = None
    while True:
        while finished:
            attempt = finished.pop(0)
            if attempt.error is None:
                return _won(attempt)
            last_failed = attempt
            await _say(emit, "connectionAttemptFailed", *attempt.event_args(), attempt.error)
            if attempt is attempts[-1] and pending:
                next_start = await start()  # the latest failed: the next at once
        if not pending and all(a.done for a in attempts):
            assert last_failed is not None
            raise _all_failed(attempts, last_failed)
        if pending and trio.current_time() >= next_start:
            await _say(emit, "connectionAttemptTimeout", *attempts[-1].event_args())
            next_start = await start()
            continue
        with trio.move_on_at(next_start if pending else math.inf):
            await lot.park()
