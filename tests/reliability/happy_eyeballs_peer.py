"""Both ends for tests/reliability/test_happy_eyeballs_netns.py, each run
inside a network namespace with ``ip netns exec``.

``server``: plain stdlib. A dual-stack listener on ``[::]`` (an ephemeral
port, IPv4 too through ``IPV6_V6ONLY`` 0) that prints ``{"port": P}`` as one
JSON line, then accepts and closes connections until it is killed.

``client HOST PORT OPTIONS_JSON``: ``trio_netstream.create_connection(PORT,
HOST, **OPTIONS)``, run in the client's namespace so that the host name is
resolved there (its ``/etc/hosts`` is the namespace's). It records the
connecting events (``'lookup'``, ``'connectionAttempt'``,
``'connectionAttemptFailed'``, ``'connectionAttemptTimeout'``) and
``'connect'``, ``'error'``, ``'close'`` with the milliseconds since the
call, destroys the stream at ``'connect'``, and prints one JSON line
``{"events": [...], "elapsed_ms": ...}`` once the stream is closed. An
error is written as a dict: its type, ``errno``, ``code``, message and
``attempts``.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

EVENTS = (
    "lookup",
    "connectionAttempt",
    "connectionAttemptFailed",
    "connectionAttemptTimeout",
    "connect",
    "error",
    "close",
)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def serve() -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen(16)
    emit(port=listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        conn.close()


def encode(value: Any) -> Any:
    if isinstance(value, BaseException):
        attempts = getattr(value, "attempts", None)
        return {
            "type": type(value).__name__,
            "errno": getattr(value, "errno", None),
            "code": getattr(value, "code", None),
            "message": str(value),
            "attempts": None
            if attempts is None
            else [[ip, port, type(exc).__name__] for ip, port, exc in attempts],
        }
    return value


async def dial(host: str, port: int, options: dict[str, Any]) -> None:
    import trio

    import trio_netstream as net

    events: list[dict[str, Any]] = []
    started = time.perf_counter()

    def elapsed_ms() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    def listener(name: str) -> Any:
        def record(*args: Any) -> None:
            events.append({"event": name, "ms": elapsed_ms(), "args": [encode(a) for a in args]})

        return record

    stream = net.create_connection(port, host, **options)
    for name in EVENTS:
        stream.on(name, listener(name))
    stream.on("connect", stream.destroy)
    with trio.fail_after(60):
        async with stream:
            pass
    emit(events=events, elapsed_ms=elapsed_ms())


def main() -> None:
    role = sys.argv[1]
    if role == "server":
        serve()
    elif role == "client":
        import trio

        trio.run(dial, sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
