"""Errors: the library's own exception and the translation of transport failures.

Users see the standard Python exceptions (``ConnectionRefusedError``,
``ConnectionResetError``, ``socket.gaierror``...), never Trio's wrapper
exceptions. Every ``OSError`` we hand out keeps its ``errno`` and carries the
Node.js code string as ``err.code`` (``"ECONNREFUSED"``). The translation lives
in :func:`translate` (one function) and :func:`transport_errors` (one small
context manager around every transport call).
"""

from __future__ import annotations

import errno as _errno
import socket
import ssl
from collections.abc import Generator
from contextlib import contextmanager

import trio

__all__ = ["StreamStateError", "node_code", "transport_errors", "translate"]


class StreamStateError(RuntimeError):
    """A call that is not legal in the stream's (or server's) current state.

    The message names the call and the state, for example
    ``"write() after end(): the stream is 'readOnly'"``. The call changed
    nothing.
    """


# getaddrinfo failures Node reports as ENOTFOUND; the others keep their EAI_ name.
_GAI_NOT_FOUND = {
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)
}
_GAI_NAMES = {
    getattr(socket, name): name
    for name in dir(socket)
    if name.startswith("EAI_") and isinstance(getattr(socket, name), int)
}


# OpenSSL's X509_V_ERR_* names (Node reports them without the prefix).
_X509_CODES = {
    2: "UNABLE_TO_GET_ISSUER_CERT",
    7: "CERT_SIGNATURE_FAILURE",
    9: "CERT_NOT_YET_VALID",
    10: "CERT_HAS_EXPIRED",
    18: "DEPTH_ZERO_SELF_SIGNED_CERT",
    19: "SELF_SIGNED_CERT_IN_CHAIN",
    20: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    21: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    23: "CERT_REVOKED",
    24: "INVALID_CA",
    26: "INVALID_PURPOSE",
    62: "ERR_TLS_CERT_ALTNAME_INVALID",  # host name mismatch: Node's own code
    64: "ERR_TLS_CERT_ALTNAME_INVALID",  # IP address mismatch: the same code in Node
}


def _ssl_code(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _X509_CODES.get(exc.verify_code, "ERR_TLS_CERT_VERIFICATION")
    reason = getattr(exc, "reason", None)
    return f"ERR_SSL_{reason}" if reason else "ERR_SSL"


def node_code(exc: BaseException) -> str | None:
    """The Node.js error code for *exc* (``"ECONNRESET"``), or ``None``."""
    if isinstance(exc, ssl.SSLError):
        return _ssl_code(exc)
    if isinstance(exc, socket.gaierror):
        if exc.errno in _GAI_NOT_FOUND:
            return "ENOTFOUND"
        return _GAI_NAMES.get(exc.errno, "EAI_FAIL")
    if isinstance(exc, OSError) and exc.errno is not None:
        return _errno.errorcode.get(exc.errno)
    return None


def _with_code(exc: BaseException) -> BaseException:
    code = node_code(exc)
    if code is not None and getattr(exc, "code", None) is None:
        exc.code = code  # type: ignore[attr-defined]  # OSError instances take attributes
    return exc


def translate(exc: BaseException, *, sending: bool = False) -> BaseException:
    """Turn a failure of a transport call into the exception users see.

    Trio's ``BrokenResourceError`` becomes the ``OSError`` (or ``ssl.SSLError``)
    it wraps; a broken stream with no cause (an in-memory stream whose peer
    went away) becomes ``BrokenPipeError`` when *sending*, else
    ``ConnectionResetError``; the wrapper is chained as ``__cause__``.
    """
    if isinstance(exc, trio.BrokenResourceError):
        cause = exc.__cause__
        if isinstance(cause, OSError):
            return _with_code(cause)
        if sending:
            new: OSError = BrokenPipeError(_errno.EPIPE, "broken pipe: the peer is gone")
        else:
            new = ConnectionResetError(_errno.ECONNRESET, "connection reset by peer")
        new.__cause__ = exc
        return _with_code(new)
    if isinstance(exc, trio.ClosedResourceError):
        new = OSError(_errno.EBADF, "the transport was closed")
        new.__cause__ = exc
        return _with_code(new)
    return _with_code(exc)


class TransportError(Exception):
    """Internal: carries a translated transport failure up to the stream's task.

    It never reaches users; it separates network failures (which become
    ``'error'`` events) from exceptions raised by listeners (which propagate).
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


@contextmanager
def transport_errors(*, sending: bool = False) -> Generator[None, None, None]:
    """Wrap one transport call: failures leave as :class:`TransportError`."""
    try:
        yield
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise TransportError(translate(exc, sending=sending)) from None
