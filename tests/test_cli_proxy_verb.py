"""``trio-netstream proxy LISTEN_PORT TARGET_HOST TARGET_PORT``, run as a user runs it.

The proxy is a child process (``python -m trio_netstream proxy``); the
target is a ``trio_netstream`` server in this process (an echo server made
of ``stream.pipe(stream)``, or one that answers at the client's end), and
the client a raw Trio socket. Every test runs under ``trio.fail_after``
and reaps the child.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from netstream_testing import MiB, port_of
from test_cli_commands import Child, free_port, receive_all, running

import trio_netstream as net
from trio_netstream._cli import main

LIMIT = 30  # seconds
LISTENING = re.compile(r"listening on (\S+):(\d+) \(pid (\d+)\)")


@asynccontextmanager
async def proxy_to(target_port: int, *args: str) -> AsyncIterator[tuple[Child, int]]:
    """``proxy 0 127.0.0.1 TARGET_PORT *args``, once listening: the child and its port."""
    async with running("proxy", "0", "127.0.0.1", str(target_port), *args) as child:
        match = LISTENING.fullmatch(await child.line())
        assert match, child.lines
        yield child, int(match[2])


@asynccontextmanager
async def echo_target() -> AsyncIterator[int]:
    """A ``trio_netstream`` echo server (Node's ``socket.pipe(socket)``): its port."""
    async with net.create_server(lambda stream: stream.pipe(stream)) as server:
        await server.listen(0, "127.0.0.1")
        yield port_of(server)
        server.close()


async def test_several_mib_go_through_the_proxy_to_an_echo_server_and_back() -> None:
    total = 8 * MiB
    with trio.fail_after(LIMIT):
        async with echo_target() as target, proxy_to(target) as (child, port):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            client_port = client.socket.getsockname()[1]
            sent, received = hashlib.sha256(), hashlib.sha256()
            async with client, trio.open_nursery() as nursery:

                async def send() -> None:
                    for _ in range(total // (256 * 1024)):
                        block = os.urandom(256 * 1024)
                        sent.update(block)
                        await client.send_all(block)
                    await client.send_eof()

                nursery.start_soon(send)
                count = 0
                while chunk := await client.receive_some(256 * 1024):
                    received.update(chunk)
                    count += len(chunk)
            assert count == total
            assert sent.hexdigest() == received.hexdigest()
            code, lines, err = await child.stop(signal.SIGTERM)
    assert code == 0, err
    events = [match[1] for line in lines if (match := re.fullmatch(r"\[pid \d+\] #1 (.*)", line))]
    assert events == [
        f"connection from 127.0.0.1:{client_port}",
        f"upstream connected to 127.0.0.1:{target}",
        "close",
    ]
    assert any("shut down: 0 connections destroyed" in line for line in lines), lines


async def test_half_close_passes_through_the_proxy_command() -> None:
    """The client ends; the target sees 'end', answers and ends; the client
    reads the answer, then EOF."""
    seen: list[bytes] = []

    def answer_at_end(stream: net.Stream) -> None:
        received = bytearray()
        stream.on("data", received.extend)

        def on_end() -> None:
            seen.append(bytes(received))
            stream.end(b"you said " + bytes(received))

        stream.on("end", on_end)

    with trio.fail_after(LIMIT):
        async with net.create_server(answer_at_end) as target:
            await target.listen(0, "127.0.0.1")
            async with proxy_to(port_of(target)) as (child, port):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client:
                    await client.send_all(b"hello")
                    await client.send_eof()  # a half-close: the answer still comes
                    assert await receive_all(client) == b"you said hello"
                code, _lines, err = await child.stop(signal.SIGTERM)
            target.close()
    assert code == 0, err
    assert seen == [b"hello"]


async def test_a_refused_target_closes_the_client_and_is_logged() -> None:
    with trio.fail_after(LIMIT):
        async with proxy_to(free_port()) as (child, port):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                try:
                    assert await receive_all(client) == b""
                except trio.BrokenResourceError:
                    pass  # a reset is a close too
            code, lines, err = await child.stop(signal.SIGTERM)
    assert code == 0, err
    assert any(re.search(r"#1 upstream error .*ECONNREFUSED", line) for line in lines), lines


async def test_sigterm_destroys_an_open_proxied_connection_after_the_grace() -> None:
    with trio.fail_after(LIMIT):
        async with echo_target() as target, proxy_to(target, "--grace", "200") as (child, port):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"ping")
                assert await client.receive_some() == b"ping"
                code, lines, err = await child.stop(signal.SIGTERM)
    assert code == 0, err
    assert any("shutting down (grace 200 ms)" in line for line in lines), lines
    assert any("shut down: 1 connection destroyed" in line for line in lines), lines


def test_help_lists_the_proxy_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "proxy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["proxy", "--help"])
    text = capsys.readouterr().out
    assert "LISTEN_PORT TARGET_HOST TARGET_PORT" in text
    assert "--grace" in text and "--host" in text


def test_bad_proxy_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["proxy"], ["proxy", "80", "example.org"], ["proxy", "x", "h", "80"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "usage" in capsys.readouterr().err
