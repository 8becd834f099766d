"""The far end for tests/reliability/test_netns.py, run inside a network namespace.

Plain stdlib, no trio_netstream: it listens on ``0.0.0.0`` (an ephemeral port),
prints ``{"port": P}`` as one JSON line, accepts one connection, then

* sends ``--send`` bytes of :func:`pattern` data and half-closes (``SHUT_WR``,
  or TLS close_notify),
* reads until EOF,

either at the same time (``--order both``, two threads; plain TCP only) or
reading first (``--order recv-first``), and prints one JSON line with the
byte counts and SHA-256 of both directions (or ``{"error": ...}`` when the
connection failed). With ``--tls CERT KEY`` it is a TLS server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import ssl
import threading
from typing import Any

CHUNK = 64 * 1024


def pattern(size: int, seed: int) -> bytes:
    """Deterministic bytes that differ at every offset (a misplaced chunk shows)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 64
        counter += 1
    return bytes(out[:size])


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def receive(conn: socket.socket, result: dict[str, Any]) -> None:
    digest = hashlib.sha256()
    total = 0
    try:
        while chunk := conn.recv(CHUNK):
            digest.update(chunk)
            total += len(chunk)
    except OSError as exc:
        result["receive_error"] = f"{type(exc).__name__}: {exc}"
    result["received"] = total
    result["received_sha256"] = digest.hexdigest()


def send(conn: socket.socket, data: bytes, result: dict[str, Any]) -> None:
    sent = 0
    try:
        with memoryview(data) as view:
            while sent < len(data):
                sent += conn.send(view[sent : sent + CHUNK])
        if isinstance(conn, ssl.SSLSocket):
            conn.unwrap()  # close_notify: TLS's end of the byte stream
        else:
            conn.shutdown(socket.SHUT_WR)
    except OSError as exc:
        result["send_error"] = f"{type(exc).__name__}: {exc}"
    result["sent"] = sent
    result["sent_sha256"] = hashlib.sha256(data[:sent]).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--send", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--order", choices=["both", "recv-first"], default="both")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    data = pattern(args.send, args.seed)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(1)
    emit(port=listener.getsockname()[1])
    conn, _ = listener.accept()
    listener.close()
    result: dict[str, Any] = {}
    try:
        if args.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*args.tls)
            conn = context.wrap_socket(conn, server_side=True)
        if args.order == "both":
            receiver = threading.Thread(target=receive, args=(conn, result))
            receiver.start()
            send(conn, data, result)
            receiver.join()
        else:
            receive(conn, result)
            send(conn, data, result)
    except OSError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    emit(**result)


if __name__ == "__main__":
    main()
