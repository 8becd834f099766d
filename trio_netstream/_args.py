"""Node's argument forms for ``create_connection()``, ``connect()`` and
``listen()``, brought to one shape before anything is checked.

Node (``normalizeArgs`` in ``lib/net.js``) takes ``(port[, host][, listener])``,
``(path[, listener])`` and ``(options[, listener])``: a trailing function
is the listener; a string that is a number is a port, any other string a
pipe path; an options object names the address (``port``, ``host``,
``path``) beside the options, in camelCase. These functions do the same,
so the rest of the library sees a port (``int``), a host and a path as
before, and options by their Python names. Checking the values is left to
the callers (``check_port``, the option validators).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs

from ._options import NODE_OPTION_NAMES, check_option_names, is_path

__all__ = [
    "DEFAULT_HOST",
    "Address",
    "connect_arguments",
    "listen_arguments",
    "merge_options",
    "numeric_port",
    "split_options",
]

DEFAULT_HOST = "127.0.0.1"
_LISTEN_DEFAULTS: dict[str, object] = {"backlog": 511, "reuse_port": False, "ipv6_only": False}
_ADDRESS_KEYS = ("port", "host", "path")


def numeric_port(port: object) -> object:
    """*port* as an ``int`` when it is a string of ASCII digits (``"8124"``,
    as ``process.env.PORT`` gives it); anything else unchanged."""
    if isinstance(port, str) and port.isascii() and port.isdigit():
        return int(port)
    return port


@attrs.frozen
class Address:
    """Where to connect or listen, as given (not yet checked): a port and a
    host, or a path; and the listener."""

    port: object
    host: object
    listener: Callable[..., object] | None = None


def _listener(host: object, listener: object, default_host: object) -> tuple[object, Any]:
    """``(host, listener)``: a callable in the host's place is the listener."""
    if callable(host) and listener is None:
        host, listener = default_host, host
    if listener is not None and not callable(listener):
        raise TypeError(f"the listener must be callable, not {type(listener).__name__}")
    return host, listener


def split_options(given: Mapping[object, object]) -> tuple[dict[str, object], dict[str, Any]]:
    """An options dict as ``(address, options)``: ``port``, ``host`` and
    ``path``, and the rest by their Python names (Node's are translated)."""
    where: dict[str, object] = {}
    options: dict[str, Any] = {}
    for key, value in given.items():
        if not isinstance(key, str):
            raise TypeError(f"option names must be str, not {type(key).__name__}")
        name = NODE_OPTION_NAMES.get(key, key)
        part = where if name in _ADDRESS_KEYS else options
        if name in part:
            raise TypeError(f"the option {name!r} is given twice")
        part[name] = value
    return where, options


def _address(where: dict[str, object], default_host: object, listener: Any) -> Address:
    host = where.get("host", default_host)
    if "path" in where:
        if "port" in where:
            raise TypeError("give 'port' or 'path', not both")
        path = where["path"]
        if not is_path(path):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        return Address(path, host, listener)
    if "port" not in where:
        raise TypeError("the options need a 'port' or a 'path'")
    return Address(numeric_port(where["port"]), host, listener)


def connect_arguments(port: object, host: object, listener: object) -> Address:
    """``connect()``: ``(port[, host][, listener])``, ``(path[, listener])``
    or ``(options[, listener])``, the options dict holding the address only."""
    host, chosen = _listener(host, listener, DEFAULT_HOST)
    if not isinstance(port, Mapping):
        return Address(numeric_port(port), host, chosen)
    if host != DEFAULT_HOST:
        raise TypeError("with an options dict, give the host in it")
    where, options = split_options(cast("Mapping[object, object]", port))
    if options:
        raise TypeError(
            "connect() takes only port, host and path in its options dict;"
            f" {min(options)!r} is a stream option: give it to Stream() or create_connection()"
        )
    return _address(where, DEFAULT_HOST, chosen)


def listen_arguments(
    port: object, host: object, listener: object, keywords: Mapping[str, object]
) -> tuple[Address, dict[str, object]]:
    """``listen()``: ``([port][, host][, listener])``, ``(path[, listener])``
    or ``(options[, listener])``; and its keyword arguments (``backlog``,
    ``reuse_port``, ``ipv6_only``), from the options dict if it has them
    (Node's ``reusePort``, ``ipv6Only``)."""
    if callable(port) and host is None and listener is None:
        port, listener = 0, port
    host, chosen = _listener(host, listener, None)
    merged = dict(keywords)
    if not isinstance(port, Mapping):
        return Address(numeric_port(port), host, chosen), merged
    if host is not None:
        raise TypeError("with an options dict, give the host in it")
    where, options = split_options(cast("Mapping[object, object]", port))
    check_option_names(options, _LISTEN_DEFAULTS, "listen()")
    for name, value in options.items():
        if merged[name] != _LISTEN_DEFAULTS[name]:
            raise TypeError(f"the option {name!r} is given twice")
        merged[name] = value
    return _address(where, None, chosen), merged


def merge_options(given: Mapping[str, Any], keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The options of an options dict and the keyword options together."""
    twice = given.keys() & keywords.keys()
    if twice:
        raise TypeError(f"the option {min(twice)!r} is given twice")
    return {**given, **keywords}
