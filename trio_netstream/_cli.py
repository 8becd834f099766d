"""``python -m trio_netstream`` / ``trio-netstream``: the command line.

``demo`` runs the seed's echo server and a client on loopback and prints
the event transcript of both sides.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import trio

from . import create_connection, create_server
from ._stream import Stream

__all__ = ["main"]


def _printer(out: Callable[[str], object], side: str) -> Callable[..., None]:
    def event(name: str, *args: object) -> None:
        detail = ", ".join(repr(arg) for arg in args)
        out(f"{side:<6} {name}({detail})")

    return event


async def demo(
    port: int = 0, host: str = "127.0.0.1", out: Callable[[str], object] = print
) -> None:
    """The seed's echo server, and a client that says two lines and ends."""
    server_event = _printer(out, "server")
    client_event = _printer(out, "client")

    def echo(stream: Stream) -> None:
        # The seed's example, line by line.
        stream.set_encoding("utf8")
        server_event("connection", f"{stream.remote_address}:{stream.remote_port}")

        def on_connect() -> None:
            server_event("connect")
            stream.write("hello\r\n")

        def on_data(data: str) -> None:
            server_event("data", data)
            stream.write(data)

        def on_end() -> None:
            server_event("end")
            stream.write("goodbye\r\n")
            stream.end()

        stream.on("connect", on_connect)
        stream.on("data", on_data)
        stream.on("end", on_end)
        stream.on("close", lambda had_error: server_event("close", had_error))

    async with create_server(echo) as server:
        server.on("listening", lambda: server_event("listening", server.address()))
        server.on("close", lambda: server_event("close"))
        await server.listen(port, host)
        address = server.address()
        assert isinstance(address, tuple)
        client = create_connection(address[1], host)
        client.set_encoding("utf8")
        client.on("connect", lambda: client_event("connect"))
        client.on("data", lambda data: client_event("data", data))
        client.on("drain", lambda: client_event("drain"))
        client.on("end", lambda: client_event("end"))
        client.on("close", lambda had_error: client_event("close", had_error))
        async with client:
            client.write("ping\r\n")
            client.end("pong\r\n")
        out(f"client bytes_read={client.bytes_read} bytes_written={client.bytes_written}")
        server.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-netstream", description="Node.js net streams on Trio."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="echo server and client on loopback, printing the event transcript"
    )
    run_demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run_demo.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    commands.add_parser(
        "bench",
        help="benchmarks against raw trio, asyncio and Node.js (bench --help for options)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["bench"]:
        from ._bench import main as bench_main

        return bench_main(words[1:])
    args = _parser().parse_args(words)
    try:
        if args.command == "demo":
            trio.run(demo, args.port, args.host)
    except OSError as exc:
        print(f"trio-netstream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
