"""Type-checked, never run: listener signatures that ``on``/``once`` accept or reject.

tests/test_typing.py runs mypy on this file. A line that must be an error
ends with ``# E: <mypy error code>``; every other line must check cleanly.
"""

from __future__ import annotations

import trio_netstream as net


async def listeners(stream: net.Stream, server: net.Server) -> None:
    # Right: what a user of the SPEC writes.
    stream.on("data", lambda chunk: None)
    stream.on("connect", lambda: None)
    stream.on("close", lambda had_error: None)
    stream.on("error", lambda exc: None)

    def on_bytes(chunk: bytes) -> None: ...
    def on_text(chunk: str) -> None: ...
    def on_either(chunk: bytes | str) -> None: ...
    def on_close(had_error: bool) -> None: ...
    def on_error(exc: BaseException) -> None: ...
    def on_os_error(exc: Exception) -> None: ...
    async def on_data_async(chunk: bytes) -> None: ...
    def nothing() -> None: ...

    stream.on("data", on_bytes).on("data", on_text).on("data", on_either)
    stream.once("data", on_data_async)
    stream.on("close", on_close)
    stream.on("error", on_error)
    stream.on("end", nothing).on("drain", nothing).on("timeout", nothing).on("secure", nothing)

    @stream.on("data")
    def decorated(chunk: bytes) -> None: ...

    server.on("connection", lambda s: None)
    server.on("listening", nothing).on("close", nothing)
    server.on("error", on_error)

    # Node's forms: a connect or listening listener last, taking no argument.
    net.connect(7000, "localhost", nothing)
    net.create_connection(7000, nothing)
    net.createConnection("7000", "localhost")
    net.create_connection("/tmp/sock", nothing)
    net.create_connection({"port": 7000, "allowHalfOpen": False}, nothing, no_delay=True)
    net.Socket().connect(7000, "localhost", nothing)
    net.Stream().connect({"path": "/tmp/sock"})
    await server.listen(7000, "localhost", nothing)
    await server.listen(7000, nothing)
    await server.listen(nothing)
    await server.listen({"port": 7000, "host": "localhost", "backlog": 5}, nothing)
    await server.listen("/tmp/sock", backlog=5)

    # Wrong: each must be reported.
    def on_int(x: int) -> None: ...
    def two_args(a: bool, b: bool) -> None: ...
    def on_stream_wrongly(s: int) -> None: ...

    stream.on("data", on_int)  # E: call-overload
    stream.on("close", two_args)  # E: call-overload
    stream.on("close", nothing)  # E: call-overload
    stream.on("connect", on_close)  # E: call-overload
    stream.on("data", nothing)  # E: call-overload
    stream.once("end", on_bytes)  # E: call-overload
    stream.on("error", on_os_error)  # E: call-overload
    server.on("connection", on_stream_wrongly)  # E: call-overload
    server.on("listening", on_close)  # E: call-overload
    net.connect(7000, "localhost", on_close)  # E: arg-type
    net.create_connection(7000, on_bytes)  # E: arg-type
    net.Stream().connect(7000, on_close)  # E: arg-type
    await server.listen(7000, "localhost", on_close)  # E: arg-type
    await server.listen(7000, on_bytes)  # E: arg-type
