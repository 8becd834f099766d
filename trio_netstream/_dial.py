"""Dialing and binding: where to connect or listen, and the sockets for it.

Both sides of the library resolve addresses and make sockets here:
:func:`getaddrinfo_named` and :func:`numeric_candidates` for a stream's
``connect()`` (whose attempts are ``_attempts``'s), :func:`bind_listener`
for a server's ``listen()``. The address policy
(which candidates, in which order) is kept in small pure functions apart
from the I/O: :func:`numeric_candidates` answers IP literals without a
checkpoint or a resolver call.
"""

from __future__ import annotations

import errno
import math
import os
import socket as _stdlib_socket
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from ._errors import node_code
from ._options import is_path

if TYPE_CHECKING:
    from ._options import StreamOptions

__all__ = [
    "Candidate",
    "Target",
    "bind_listener",
    "getaddrinfo_named",
    "listener_address",
    "numeric_candidates",
    "set_socket_options",
]

Candidate = tuple[int, int, int, Any]  # family, type, proto, address


@attrs.define(eq=False)
class Target:
    """Where to connect: a TCP host and port, or a UNIX socket path."""

    port: int | None = None
    host: str = "127.0.0.1"
    path: str | None = None

    @property
    def hostname(self) -> str | None:
        """The name to verify over TLS: the host, or ``None`` for a UNIX path."""
        return self.host if self.path is None else None


def numeric_candidates(host: str, port: int | None) -> list[Candidate] | None:
    """Where to connect for an IP literal, without a checkpoint; ``None`` for a name."""
    for family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
        try:  # the common literals, without getaddrinfo()
            packed = _stdlib_socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        address = _stdlib_socket.inet_ntop(family, packed)  # as getaddrinfo() spells it
        where = (address, port) if family == _stdlib_socket.AF_INET else (address, port, 0, 0)
        return [(family, _stdlib_socket.SOCK_STREAM, _stdlib_socket.IPPROTO_TCP, where)]
    try:  # the rest: "127.1", scoped IPv6 ("fe80::1%eth0")
        infos = _stdlib_socket.getaddrinfo(
            host, port, type=_stdlib_socket.SOCK_STREAM, flags=_stdlib_socket.AI_NUMERICHOST
        )
    except (_stdlib_socket.gaierror, UnicodeError):
        return None
    return [(family, kind, proto, address) for family, kind, proto, _, address in infos]


async def getaddrinfo_named(
    host: str, port: int | None, *, flags: int = 0, family: int = 0
) -> list[Any]:
    """``trio.socket.getaddrinfo()`` for a stream socket; a failure names the
    host, as Node's ``getaddrinfo ENOTFOUND nosuch.invalid``.

    Raises:
        socket.gaierror: the lookup failed (its ``errno``, ``.code`` and
            ``.hostname`` set; the resolver's error as ``__cause__``).
    """
    try:
        return await trio.socket.getaddrinfo(
            host, port, family, _stdlib_socket.SOCK_STREAM, 0, flags
        )
    except _stdlib_socket.gaierror as exc:
        failed: _stdlib_socket.gaierror = exc
        why = exc.strerror
    except UnicodeError as exc:  # not a valid host name (IDNA): not found
        failed = _stdlib_socket.gaierror(_stdlib_socket.EAI_NONAME, str(exc))
        failed.__cause__ = exc
        why = f"invalid host name: {exc}"
    code = node_code(failed)
    named = _stdlib_socket.gaierror(failed.errno, f"getaddrinfo {code} {host} ({why})")
    named.code = code  # type: ignore[attr-defined]  # OSError instances take attributes
    named.hostname = host  # type: ignore[attr-defined]  # as Node's error.hostname
    raise named from failed


def _listen_unix(path: str, backlog: int) -> _stdlib_socket.socket:
    listener = _stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    listener.setblocking(False)
    try:
        listener.bind(path)
        listener.listen(backlog)
    except BaseException:
        listener.close()
        raise
    return listener


def _listen_tcp(
    family: int, address: Any, backlog: int, *, reuse_port: bool, ipv6_only: bool
) -> _stdlib_socket.socket:
    listener = _stdlib_socket.socket(family, _stdlib_socket.SOCK_STREAM)
    listener.setblocking(False)
    try:
        listener.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEPORT, 1)
        if family == _stdlib_socket.AF_INET6:  # "::" takes IPv4 too, unless ipv6_only
            listener.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, ipv6_only)
        listener.bind(address)
        listener.listen(backlog)
    except BaseException:
        listener.close()
        raise
    return listener


async def _passive_candidates(
    host: str | None, port: int, ipv6_only: bool
) -> list[tuple[int, Any]]:
    """Where to listen: every address (IPv6 first, dual stack) or *host*'s."""
    if host is None:
        candidates: list[tuple[int, Any]] = []
        if _stdlib_socket.has_ipv6:
            candidates.append((_stdlib_socket.AF_INET6, ("::", port)))
        if not ipv6_only:
            candidates.append((_stdlib_socket.AF_INET, ("0.0.0.0", port)))
        return candidates
    infos = await getaddrinfo_named(host, port, flags=_stdlib_socket.AI_PASSIVE)
    return [(family, address) for family, _, _, _, address in infos]


async def bind_listener(
    port: int | str | os.PathLike[str],
    host: str | None,
    backlog: int,
    reuse_port: bool,
    sock: _stdlib_socket.socket | None,
    ipv6_only: bool = False,
) -> _stdlib_socket.socket:
    """A bound, listening, non-blocking stdlib socket (accepted from directly):
    *sock* adopted, a UNIX path, or the first TCP candidate that binds.

    Raises:
        OSError: binding or listening failed (``EADDRINUSE``...).
    """
    if sock is not None:
        sock.setblocking(False)
        if not sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ACCEPTCONN):
            sock.listen(backlog)
        return sock
    if is_path(port):
        path = os.fspath(cast("str | os.PathLike[str]", port))
        try:
            return _listen_unix(path, backlog)
        except OSError as exc:
            raise _listen_error(exc, path)  # with exc as its cause
    assert isinstance(port, int)
    last_error: OSError | None = None
    for family, address in await _passive_candidates(host, port, ipv6_only):
        try:
            return _listen_tcp(family, address, backlog, reuse_port=reuse_port, ipv6_only=ipv6_only)
        except OSError as exc:
            last_error = _listen_error(exc, f"{address[0]}:{address[1]}")
            if exc.errno == errno.EADDRINUSE:
                break  # the port is taken: another family will not help
    if last_error is None:  # ipv6_only where IPv6 is missing
        raise OSError(errno.EAFNOSUPPORT, "listen EAFNOSUPPORT: IPv6 is not available here")
    raise last_error


def _listen_error(exc: OSError, where: str) -> OSError:
    """*exc* as Node words it, naming the address (*exc* is the cause):
    ``listen EADDRINUSE: address already in use 127.0.0.1:8124``."""
    if exc.errno is None:
        return exc
    code = node_code(exc) or str(exc.errno)
    why = os.strerror(exc.errno)
    named = OSError(exc.errno, f"listen {code}: {why[:1].lower()}{why[1:]} {where}")
    named.__cause__ = exc
    return named


def listener_address(listener: _stdlib_socket.socket) -> tuple[str, int] | str:
    """A listening socket's address as ``server.address()`` gives it."""
    name = listener.getsockname()
    if listener.family == _stdlib_socket.AF_UNIX:
        return name if isinstance(name, str) else os.fsdecode(name)
    return (name[0], name[1])


def set_socket_options(
    sock: _stdlib_socket.socket, options: StreamOptions, *, fresh: bool = False
) -> None:
    """Set ``no_delay`` and ``keep_alive`` on a TCP socket; on a *fresh* one
    (connected or accepted here, so with the kernel's defaults: Nagle on,
    no keep-alive) only what differs from the defaults."""
    try:
        if options.no_delay or not fresh:
            sock.setsockopt(
                _stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, options.no_delay
            )
        if options.keep_alive or not fresh:
            sock.setsockopt(
                _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_KEEPALIVE, options.keep_alive
            )
        if (
            options.keep_alive
            and options.keep_alive_initial_delay > 0
            and hasattr(_stdlib_socket, "TCP_KEEPIDLE")
        ):
            seconds = max(1, math.ceil(options.keep_alive_initial_delay / 1000))
            sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_KEEPIDLE, seconds)
    except OSError:  # the socket is already closed; the option applies on connect
        pass
