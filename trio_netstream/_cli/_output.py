"""What the command line prints: exit codes, one-line failures, event lines.

Every command reports a failure as one ``trio-netstream: ...`` line on
stderr and an exit code (:class:`Failure`, :func:`describe`); lines for the
user go to stdout at once, and a reader that has gone away (EPIPE) silences
the rest of the output instead of failing the command.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import sys
from collections.abc import Callable, Generator
from contextlib import contextmanager

from .._errors import node_code

EXIT_OK = 0
EXIT_NETWORK = 1
EXIT_USAGE = 2
EXIT_TLS = 3
EXIT_SIGINT = 130

PROG = "trio-netstream"


class Failure(Exception):
    """A failure reported as one ``trio-netstream: ...`` line and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ProtocolError(Exception):
    """The server did not follow the protocol (``connect --starttls``)."""


def silence_stdout() -> None:
    """Whoever read stdout has gone (EPIPE): send the rest to /dev/null, so
    neither later writes nor the interpreter's final flush fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def say(line: str) -> None:
    """Print one line to stdout at once (stdout is often a pipe)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        silence_stdout()


def warn(line: str) -> None:
    """Print one ``trio-netstream: ...`` line to stderr."""
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def printer(out: Callable[[str], object], side: str) -> Callable[..., None]:
    """A listener-shaped function printing ``side  name(args...)`` lines."""

    def event(name: str, *args: object) -> None:
        detail = ", ".join(repr(arg) for arg in args)
        out(f"{side:<6} {name}({detail})")

    return event


def host_port(host: str, port: int) -> str:
    """``host:port``, or ``[host]:port`` for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_address(address: tuple[str, int] | str | None) -> str:
    """A server's address as printed: ``host:port``, or the UNIX socket path."""
    if isinstance(address, tuple):
        return host_port(address[0], address[1])
    return str(address)


def describe(exc: BaseException, target: str) -> tuple[str, int]:
    """The error line (without the ``trio-netstream: `` prefix) and exit code."""
    code = getattr(exc, "code", None) or node_code(exc)
    suffix = f" ({code})" if code else ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "certificate verify failed"
        return f"certificate verification failed: {target}: {reason}{suffix}", EXIT_TLS
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return f"TLS handshake failed: {target}: {reason}{suffix}", EXIT_TLS
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target}: {_resolver_reason(exc)}{suffix}", EXIT_NETWORK
    if isinstance(exc, OSError):
        # os.strerror: Trio's connect errors say "error connecting to (...): ..."
        what = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        return f"{what[:1].lower()}{what[1:]}: {target}{suffix}", EXIT_NETWORK
    if isinstance(exc, ProtocolError):
        return f"{exc}: {target}", EXIT_NETWORK
    return f"{type(exc).__name__}: {exc}: {target}", EXIT_NETWORK


#: The library's lookup failures, as Node's: ``getaddrinfo ENOTFOUND host (reason)``.
_LOOKUP_MESSAGE = re.compile(r"getaddrinfo [A-Z_]+ .+? \((.*)\)", re.DOTALL)


def _resolver_reason(exc: socket.gaierror) -> str:
    """Why a lookup failed, without the host and code the line names already:
    the library's reason ("Name or service not known", "no IPv6 address
    (family=6)"...), whether or not another lookup error is chained to it."""
    text = exc.strerror or str(exc)
    match = _LOOKUP_MESSAGE.fullmatch(text)
    return text if match is None else match[1]


@contextmanager
def listen_errors(target: str) -> Generator[None, None, None]:
    """A failure to listen on *target* leaves as a :class:`Failure` that names
    it, as ``connect`` names what it could not reach: ``address already in
    use: 127.0.0.1:8124 (EADDRINUSE)``, exit code 1."""
    try:
        yield
    except OSError as exc:
        message, code = describe(exc, target)
        raise Failure(message, code) from exc
