"""Option value objects shared by streams and servers, checked once at construction."""

from __future__ import annotations

import math
import os
import socket as _socket
import ssl as _ssl
from collections.abc import Iterable, Mapping
from typing import Any, cast

import attrs

from ._tls import check_session, default_client_context

__all__ = [
    "check_int",
    "NODE_OPTION_NAMES",
    "SERVER_OPTION_NAMES",
    "STREAM_OPTION_NAMES",
    "ServerOptions",
    "StreamOptions",
    "alpn_list",
    "check_option_names",
    "check_port",
    "check_timeout_ms",
    "check_tls_options",
    "ip_version",
    "is_path",
    "server_options",
    "stream_options",
]

DEFAULT_HIGH_WATER_MARK = 16 * 1024


def _bool(name: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, not {type(value).__name__}")

    return check


def check_number(name: str, value: object) -> float:
    """A finite, non-negative int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return float(value)


def check_timeout_ms(value: object) -> float:
    """Validate a ``set_timeout`` period in milliseconds."""
    return check_number("timeout", value)


def check_port(port: object, *, allow_zero: bool, name: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{name} must be an int, not {type(port).__name__}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"{name} must be in {low}..65535, not {port}")
    return port


def is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """An int (not a bool) of at least *minimum*.

    Raises:
        TypeError: not an int. ValueError: below *minimum*.
    """
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return value


def _non_negative_int(name: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        check_int(name, value)

    return check


def _number(name: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        check_number(name, value)

    return check


def _check_ssl(_inst: object, _attr: object, value: object) -> None:
    if value is not None and not isinstance(value, (bool, _ssl.SSLContext)):
        raise TypeError(f"ssl must be an ssl.SSLContext or a bool, not {type(value).__name__}")


def _check_hostname(_inst: object, _attr: object, value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"server_hostname must be a str, not {type(value).__name__}")


def _check_family(_inst: object, _attr: object, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"family must be an int (0, 4 or 6), not {type(value).__name__}")
    if value not in (0, 4, 6):
        raise ValueError(f"family must be 0 (any), 4 or 6, not {value}")


def ip_version(address: str) -> int | None:
    """4 or 6 for an IP address literal, ``None`` for anything else."""
    for version, family in ((4, _socket.AF_INET), (6, _socket.AF_INET6)):
        try:
            _socket.inet_pton(family, address)
        except (OSError, ValueError):
            continue
        return version
    return None


def _check_local_address(inst: Any, _attr: object, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"local_address must be a str, not {type(value).__name__}")
    version = ip_version(value)
    if version is None:
        raise ValueError(f"local_address must be an IP address, not {value!r}")
    if inst.family not in (0, version):
        raise ValueError(f"local_address {value!r} is IPv{version}, but family={inst.family}")


def _check_local_port(_inst: object, _attr: object, value: Any) -> None:
    if value is not None:
        check_port(value, allow_zero=True, name="local_port")


def _check_attempt_timeout(_inst: object, _attr: object, value: Any) -> None:
    ms = check_number("auto_select_family_attempt_timeout", value)
    if ms < 10:
        raise ValueError(f"auto_select_family_attempt_timeout must be >= 10 (ms), not {value!r}")


def _check_connect_timeout(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and check_number("connect_timeout", value) == 0:
        raise ValueError("connect_timeout must be > 0 (ms), or None for no limit")


def alpn_list(value: object) -> tuple[str, ...] | None:
    """``alpn_protocols`` checked: ``None``, or a list (or tuple) of protocol
    names, each 1 to 255 ASCII characters (an empty list offers none)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"alpn_protocols must be a list of str, not {type(value).__name__}")
    names = cast("list[object] | tuple[object, ...]", value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"alpn_protocols must be a list of str, not of {type(name).__name__}")
        if not name.isascii() or not 1 <= len(name) <= 255:
            raise ValueError(
                f"an ALPN protocol name is 1 to 255 ASCII characters, not {name[:40]!r}"
                + ("..." if len(name) > 40 else "")
            )
    return tuple(cast("list[str] | tuple[str, ...]", names)) or None


def check_tls_options(
    reject_unauthorized: object, handshake_timeout: object, session: object
) -> None:
    """The TLS options that ``set_secure()`` takes too (``alpn_list`` aside)."""
    if not isinstance(reject_unauthorized, bool):
        raise TypeError(
            f"reject_unauthorized must be a bool, not {type(reject_unauthorized).__name__}"
        )
    check_number("handshake_timeout", handshake_timeout)
    if session is not None and not isinstance(session, _ssl.SSLSession):
        raise TypeError(f"session must be an ssl.SSLSession, not {type(session).__name__}")


def _check_tls(inst: Any, _attr: object, _value: object) -> None:
    check_tls_options(inst.reject_unauthorized, inst.handshake_timeout, inst.session)
    if inst.session is not None and isinstance(inst.ssl, _ssl.SSLContext):
        check_session(inst.ssl, inst.session)
    elif inst.session is not None and inst.ssl is True:
        check_session(default_client_context(), inst.session)


def _check_max(inst: object, attr: object, value: int | None) -> None:
    if value is not None:
        _non_negative_int("max_connections")(inst, attr, value)


@attrs.frozen(kw_only=True)
class StreamOptions:
    """Options of one stream (the options shared by streams and servers)."""

    allow_half_open: bool = attrs.field(default=True, validator=_bool("allow_half_open"))
    no_delay: bool = attrs.field(default=False, validator=_bool("no_delay"))
    keep_alive: bool = attrs.field(default=False, validator=_bool("keep_alive"))
    keep_alive_initial_delay: float = attrs.field(
        default=0, validator=_number("keep_alive_initial_delay")
    )
    high_water_mark: int = attrs.field(
        default=DEFAULT_HIGH_WATER_MARK, validator=_non_negative_int("high_water_mark")
    )
    ssl: object = attrs.field(default=None, validator=_check_ssl)
    server_hostname: str | None = attrs.field(default=None, validator=_check_hostname)
    timeout: float = attrs.field(default=0, validator=_number("timeout"))
    # Connecting (clients only):
    family: int = attrs.field(default=0, validator=_check_family)
    local_address: str | None = attrs.field(default=None, validator=_check_local_address)
    local_port: int | None = attrs.field(default=None, validator=_check_local_port)
    auto_select_family: bool = attrs.field(default=True, validator=_bool("auto_select_family"))
    auto_select_family_attempt_timeout: float = attrs.field(
        default=250, validator=_check_attempt_timeout
    )
    connect_timeout: float | None = attrs.field(default=None, validator=_check_connect_timeout)
    # TLS (with ssl=; set_secure() takes them too):
    reject_unauthorized: bool = True
    alpn_protocols: tuple[str, ...] | None = attrs.field(default=None, converter=alpn_list)
    handshake_timeout: float = 120_000
    session: _ssl.SSLSession | None = attrs.field(default=None, validator=_check_tls)


@attrs.frozen(kw_only=True)
class ServerOptions:
    """Options of a server: its own, plus the options of every accepted stream."""

    stream: StreamOptions
    max_connections: int | None = attrs.field(default=None, validator=_check_max)
    proxy_protocol: bool = attrs.field(default=False, validator=_bool("proxy_protocol"))

    def __attrs_post_init__(self) -> None:
        if self.stream.ssl is True:
            raise ValueError("ssl=True is a client option; a server needs an ssl.SSLContext")
        if self.stream.server_hostname is not None:
            raise ValueError("server_hostname is a client option")
        if self.stream.session is not None:
            raise ValueError("session is a client option (a session to resume)")


STREAM_OPTION_NAMES = tuple(field.name for field in attrs.fields(StreamOptions))
#: Options about connecting, which a server's accepted streams do not take.
CLIENT_ONLY = (
    "family",
    "local_address",
    "local_port",
    "auto_select_family",
    "auto_select_family_attempt_timeout",
    "connect_timeout",
)

SERVER_OPTION_NAMES = (
    *(name for name in STREAM_OPTION_NAMES if name not in CLIENT_ONLY),
    "max_connections",
    "proxy_protocol",
    "proxy_trusted",
)

#: Node's spelling of the options this library has (an options dict takes
#: either spelling; keyword arguments take the Python one).
NODE_OPTION_NAMES = {
    "allowHalfOpen": "allow_half_open",
    "noDelay": "no_delay",
    "keepAlive": "keep_alive",
    "keepAliveInitialDelay": "keep_alive_initial_delay",
    "highWaterMark": "high_water_mark",
    "servername": "server_hostname",
    "maxConnections": "max_connections",
    "reusePort": "reuse_port",
    "ipv6Only": "ipv6_only",
    "rejectUnauthorized": "reject_unauthorized",
    "ALPNProtocols": "alpn_protocols",
    "handshakeTimeout": "handshake_timeout",
    "localAddress": "local_address",
    "localPort": "local_port",
    "autoSelectFamily": "auto_select_family",
    "autoSelectFamilyAttemptTimeout": "auto_select_family_attempt_timeout",
}

# Node options this library has no option for, and what to do instead.
_INSTEAD = {"lookup": "install a resolver with trio.socket.set_custom_hostname_resolver()"}


def check_option_names(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """Raise ``TypeError`` naming the first of *given* that is not in *known*.

    *what* names the options in the message (``"stream"``, ``"server"``).
    """
    allowed = set(known)
    for name in given:
        if name in allowed:
            continue
        message = f"unknown {what} option {name!r}"
        python = NODE_OPTION_NAMES.get(name)
        if python in allowed:
            message += f": {name!r} is Node's name, use {python}="
        elif name in _INSTEAD:
            message += f": {_INSTEAD[name]}"
        else:
            message += f" (the {what} options are: {', '.join(sorted(allowed))})"
        raise TypeError(message)


def server_options(
    options: Mapping[str, Any], max_connections: int | None, proxy_protocol: bool = False
) -> ServerOptions:
    """A server's options; a connecting option (a client's) is a ``ValueError``."""
    for name in CLIENT_ONLY:
        if name in options:
            raise ValueError(f"{name} is a client option (how a stream connects)")
    session = options.get("session")
    if session is not None:
        if not isinstance(session, _ssl.SSLSession):
            raise TypeError(f"session must be an ssl.SSLSession, not {type(session).__name__}")
        raise ValueError("session is a client option (a session to resume)")
    check_option_names(options, SERVER_OPTION_NAMES, "server")
    return ServerOptions(
        stream=StreamOptions(**options),
        max_connections=max_connections,
        proxy_protocol=proxy_protocol,
    )


_DEFAULT_STREAM_OPTIONS: list[StreamOptions] = []  # made when first needed


def stream_options(options: Mapping[str, Any]) -> StreamOptions:
    """The options of one stream, with a clear ``TypeError`` for an unknown name."""
    if not options:  # the common case: the defaults, checked once
        if not _DEFAULT_STREAM_OPTIONS:
            _DEFAULT_STREAM_OPTIONS.append(StreamOptions())
        return _DEFAULT_STREAM_OPTIONS[0]
    check_option_names(options, STREAM_OPTION_NAMES, "stream")
    return StreamOptions(**options)
