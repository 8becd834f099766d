"""``demo``: the echo server of Node's original ``net`` docs and a client on loopback, printing the
event transcript of both sides (with ``--tls``: TLS from the first byte).

Each line names whose event it is: ``server`` (the Server: ``listening``,
``connection``, ``close``), ``conn`` (the stream the server accepted) or
``client``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from .. import Stream, create_connection, create_server
from ._certs import throwaway_certificates
from ._output import host_port, listen_errors, printer, say


async def demo(
    port: int = 0,
    host: str = "127.0.0.1",
    out: Callable[[str], object] = say,
    *,
    tls: bool = False,
) -> None:
    """The echo server of Node's original ``net`` docs, and a client that says two lines
    once greeted and ends once they are echoed.

    With *tls*, both sides speak TLS from the first byte, with a throwaway
    certificate, and both print their ``'secure'`` event. Each line goes to
    *out* (stdout, flushed at once); if stdout's reader goes away
    (``demo | head -2``), the rest of the transcript is dropped quietly.
    """
    server_event = printer(out, "server")
    conn_event = printer(out, "conn")
    server_options: dict[str, Any] = {}
    client_options: dict[str, Any] = {}
    if tls:
        certificates = throwaway_certificates()
        server_options["ssl"] = certificates.server_context()
        client_options["ssl"] = certificates.client_context()
    served = trio.Event()  # the server's side of the one connection has closed

    def echo(stream: Stream) -> None:
        server_event("connection", f"{stream.remote_address}:{stream.remote_port}")
        _echo_like_node_docs(stream, conn_event, tls=tls)
        stream.on("close", lambda _had_error: served.set())

    async with create_server(echo, **server_options) as server:
        server.on("listening", lambda: server_event("listening", server.address()))
        server.on("close", lambda: server_event("close"))
        with listen_errors(host_port(host, port)):
            await server.listen(port, host)
        address = server.address()
        assert isinstance(address, tuple)
        client = create_connection(address[1], host, **client_options)
        _print_client_events(client, out, tls=tls)

        def converse(data: str) -> None:
            # One turn at a time: each side writes only after it read the
            # other's last words, so no two writes meet in one 'data'.
            if data == "hello\r\n":
                client.write("ping\r\n")
                client.write("pong\r\n")
            elif data.endswith("pong\r\n"):
                client.end()

        client.on("data", converse)
        async with client:
            pass
        # Both ends close on their own schedule; wait for the server's so the
        # transcript reads the same on every run.
        await served.wait()
        out(f"client bytes_read={client.bytes_read} bytes_written={client.bytes_written}")
        server.close()


def _echo_like_node_docs(stream: Stream, conn_event: Callable[..., None], *, tls: bool) -> None:
    """Node's docs' example, line by line, printing the accepted stream's events."""
    stream.set_encoding("utf8")

    def on_connect() -> None:
        conn_event("connect")
        stream.write("hello\r\n")

    def on_data(data: str) -> None:
        conn_event("data", data)
        stream.write(data)

    def on_end() -> None:
        conn_event("end")
        stream.write("goodbye\r\n")
        stream.end()

    stream.on("connect", on_connect)
    if tls:
        stream.on("secure", lambda: conn_event("secure"))
    stream.on("data", on_data)
    stream.on("end", on_end)
    stream.on("close", lambda had_error: conn_event("close", had_error))


def _print_client_events(client: Stream, out: Callable[[str], object], *, tls: bool) -> None:
    client_event = printer(out, "client")
    client.set_encoding("utf8")
    client.on("connect", lambda: client_event("connect"))
    if tls:

        def on_secure() -> None:
            client_event("secure")
            out(f"client verify_peer() -> {client.verify_peer()}")

        client.on("secure", on_secure)
    client.on("data", lambda data: client_event("data", data))
    client.on("drain", lambda: client_event("drain"))
    client.on("end", lambda: client_event("end"))
    client.on("close", lambda had_error: client_event("close", had_error))
