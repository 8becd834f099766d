"""Load client for ``test_load.py``: plain stdlib sockets in a child process.

It does not use trio_netstream (nor Trio), so the server under test is judged
by an independent peer. Each mode talks to the test over its own stdout (one
JSON object per line) and, where it must wait for the test, reads a line from
stdin. Every wait is bounded by ``--deadline`` seconds; on failure the mode
prints ``{"error": ...}`` and exits with status 1.

Modes:

``hold``       open ``--count`` connections (in batches), all at once; send each
               a distinct message; check every echo; report ``held``; wait for a
               line on stdin; half-close all, wait for the server's EOF on each,
               close; report ``closed``.
``cycle``      ``--count`` sequential connections from ``--source``: connect,
               send 1 byte, read its echo, half-close, read EOF, close.
``storm``      open ``--count`` connections as fast as possible, each sends
               ``hello`` at once; a connection is *served* if ``hello`` comes
               back, *turned away* if it sees EOF or a reset first. Report the
               tally, wait for a line on stdin, end the served ones cleanly.
``slowloris``  open ``--count`` connections; odd ones send 1 byte, even ones
               nothing; report ``holding``; wait until the server closed every
               one (EOF or reset; the echo server must have echoed the byte
               first, nothing else may come); report ``dropped`` and how many
               of those closes were a clean EOF.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time
from typing import Any

_DISCONNECTED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, what: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"deadline passed while {what}")
        return left


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (soft < needed and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_many(
    count: int, address: tuple[str, int], batch: int, deadline: Deadline
) -> list[socket.socket]:
    """*count* connected non-blocking sockets, connected *batch* at a time
    (so the listen backlog is never flooded)."""
    socks: list[socket.socket] = []
    with selectors.DefaultSelector() as selector:
        for start in range(0, count, batch):
            waiting = 0
            for _ in range(start, min(count, start + batch)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.setblocking(False)
                err = sock.connect_ex(address)
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
                selector.register(sock, selectors.EVENT_WRITE)
                waiting += 1
            while waiting:
                for key, _ in selector.select(deadline.left("connecting")):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    selector.unregister(sock)
                    waiting -= 1
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
    return socks


def wait_stdin() -> None:
    """Block until the test writes a line (or closes our stdin)."""
    sys.stdin.readline()


def finish_cleanly(socks: list[socket.socket], deadline: Deadline) -> int:
    """Half-close every socket, wait for the server's EOF on each; how many
    ended with a clean EOF (not a reset); then close them all."""
    clean = 0
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.shutdown(socket.SHUT_WR)
            selector.register(sock, selectors.EVENT_READ)
        waiting = len(socks)
        while waiting:
            for key, _ in selector.select(deadline.left("waiting for EOF")):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except _DISCONNECTED:
                    chunk = None
                if chunk:
                    raise AssertionError(f"unexpected bytes after the echo: {chunk!r}")
                selector.unregister(sock)
                waiting -= 1
                clean += chunk == b""
    for sock in socks:
        sock.close()
    return clean


def message(index: int) -> bytes:
    return b"connection %05d says %s\n" % (index, b"x" * (index % 61))


def hold(args: argparse.Namespace, deadline: Deadline) -> None:
    raise_fd_limit(args.count + 100)
    started = time.monotonic()
    socks = open_many(args.count, (args.host, args.port), args.batch, deadline)
    report(event="connected", count=len(socks), seconds=round(time.monotonic() - started, 2))
    expected = {sock.fileno(): message(i) for i, sock in enumerate(socks)}
    received = {fd: bytearray() for fd in expected}
    by_fd = {sock.fileno(): sock for sock in socks}
    for sock in socks:
        data = expected[sock.fileno()]
        if sock.send(data) != len(data):  # a few dozen bytes always fit
            raise AssertionError("short send")
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        waiting = len(socks)
        while waiting:
            for key, _ in selector.select(deadline.left("waiting for echoes")):
                fd = key.fd
                chunk = by_fd[fd].recv(65536)
                if not chunk:
                    raise AssertionError(f"EOF before the whole echo on fd {fd}")
                received[fd] += chunk
                if len(received[fd]) >= len(expected[fd]):
                    selector.unregister(by_fd[fd])
                    waiting -= 1
    correct = sum(received[fd] == expected[fd] for fd in expected)
    report(
        event="held",
        count=len(socks),
        correct=correct,
        seconds=round(time.monotonic() - started, 2),
    )
    wait_stdin()
    clean = finish_cleanly(socks, deadline)
    report(event="closed", count=len(socks), clean_eof=clean)


def cycle(args: argparse.Namespace, deadline: Deadline) -> None:
    started = time.monotonic()
    wrong = 0
    for index in range(args.count):
        byte = bytes([index % 256])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(deadline.left("cycling"))
            # The port is picked at connect() time, per 4-tuple: each source
            # address has the whole ephemeral range to itself.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((args.source, 0))
            sock.connect((args.host, args.port))
            sock.sendall(byte)
            echo = sock.recv(1)
            sock.shutdown(socket.SHUT_WR)
            rest = sock.recv(1)
            wrong += echo != byte or rest != b""
    report(
        event="cycled",
        count=args.count,
        wrong=wrong,
        seconds=round(time.monotonic() - started, 2),
    )


def storm(args: argparse.Namespace, deadline: Deadline) -> None:
    raise_fd_limit(args.count + 100)
    socks = open_many(args.count, (args.host, args.port), args.batch, deadline)
    served: list[socket.socket] = []
    turned_away = 0
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            try:
                sock.send(b"hello")
            except _DISCONNECTED:
                turned_away += 1
                continue
            selector.register(sock, selectors.EVENT_READ)
        received: dict[int, bytes] = {}
        waiting = len(socks) - turned_away
        while waiting:
            for key, _ in selector.select(deadline.left("waiting for the storm")):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(64)
                except _DISCONNECTED:
                    chunk = b""
                if not chunk:
                    if sock.fileno() in received:
                        raise AssertionError("EOF in the middle of an echo")
                    turned_away += 1
                    selector.unregister(sock)
                    waiting -= 1
                    continue
                got = received.get(sock.fileno(), b"") + chunk
                received[sock.fileno()] = got
                if len(got) >= 5:
                    if got != b"hello":
                        raise AssertionError(f"wrong echo {got!r}")
                    served.append(sock)
                    selector.unregister(sock)
                    waiting -= 1
    report(event="storm", count=len(socks), served=len(served), turned_away=turned_away)
    wait_stdin()
    clean = finish_cleanly(served, deadline)
    for sock in socks:
        sock.close()
    report(event="closed", count=len(served), clean_eof=clean)


def slowloris(args: argparse.Namespace, deadline: Deadline) -> None:
    raise_fd_limit(args.count + 100)
    socks = open_many(args.count, (args.host, args.port), args.batch, deadline)
    for index, sock in enumerate(socks):
        if index % 2:
            sock.send(b"!")  # one byte, then silence
    report(event="holding", count=len(socks))
    dropped = clean = 0
    # The echo server sends the byte back before it drops us; nothing else may come.
    allowed = {sock.fileno(): b"!" if index % 2 else b"" for index, sock in enumerate(socks)}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while dropped < len(socks):
            for key, _ in selector.select(deadline.left("waiting to be dropped")):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(64)
                except _DISCONNECTED:
                    chunk = None
                if chunk:
                    if not allowed[key.fd].startswith(chunk):
                        raise AssertionError(f"the server sent {chunk!r}")
                    allowed[key.fd] = allowed[key.fd][len(chunk) :]
                    continue
                if allowed[key.fd]:
                    raise AssertionError(f"dropped before echoing {allowed[key.fd]!r}")
                selector.unregister(sock)
                dropped += 1
                clean += chunk == b""
    for sock in socks:
        sock.close()
    report(event="dropped", count=dropped, clean_eof=clean)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["hold", "cycle", "storm", "slowloris"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--source", default="127.0.0.1")
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    deadline = Deadline(args.deadline)
    try:
        {"hold": hold, "cycle": cycle, "storm": storm, "slowloris": slowloris}[args.mode](
            args, deadline
        )
    except Exception as exc:
        report(error=f"{type(exc).__name__}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
