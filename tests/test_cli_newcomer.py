"""The command line in a newcomer's first hour (issue 14), run as a user runs it.

Every command is a child process (``python -m trio_netstream``) talking to
real peers on 127.0.0.1: the CLI's own ``echo``, or raw Trio and stdlib
sockets scripted here. Every test is bounded in time and reaps its children.
"""

from __future__ import annotations

import re
import socket
import struct

import pytest
import trio
from test_cli_commands import (
    cli,
    connections,
    echo_server,
    raw_server,
    receive_all,
    run_connect,
    running,
)

LIMIT = 20  # seconds; a hang fails the test instead of blocking the run


# -- connect --starttls: anything but the dialogue aborts with exit 1 ------------------


async def test_connect_starttls_to_a_plain_echo_server_exits_1() -> None:
    # The echo server greets with "hello", not "220 ...": no SMTP here.
    with trio.fail_after(LIMIT):
        async with echo_server() as (_, host, port):
            result = await run_connect(host, str(port), "--starttls", stdin=b"secret\n")
    assert result.returncode == 1
    assert result.stdout == b"hello\r\n"
    assert result.stderr.decode() == (
        f"trio-netstream: STARTTLS: expected 220 to greeting, got 'hello': 127.0.0.1:{port}\n"
    )


@pytest.mark.parametrize(
    "greeting",
    ["220ready", "\uff12\uff12\uff10 ready", "22 ready", "ready"],  # "\uff12": a fullwidth 2
)
async def test_connect_starttls_refuses_a_line_that_is_no_smtp_reply(greeting: str) -> None:
    async def greet(stream: trio.SocketStream) -> None:
        await stream.send_all(greeting.encode() + b"\r\n")
        await receive_all(stream)

    with trio.fail_after(LIMIT):
        async with raw_server(greet) as port:
            result = await run_connect("127.0.0.1", str(port), "--starttls")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"trio-netstream: STARTTLS: expected 220 to greeting, got {greeting!r}: 127.0.0.1:{port}\n"
    )


@pytest.mark.parametrize(
    ("greeting", "waiting_for"),
    [
        (b"", "the 220 greeting"),
        (b"220 ready\r\n", "the reply to EHLO"),
        (b"220-half a reply\r\n", "the 220 greeting"),
    ],
)
async def test_connect_starttls_to_a_peer_that_closes_before_tls_exits_1(
    greeting: bytes, waiting_for: str
) -> None:
    async def greet_and_close(stream: trio.SocketStream) -> None:
        if greeting:
            await stream.send_all(greeting)
        # A FIN, not a close(): closing with the client's EHLO unread would
        # send an RST (then the client reports the reset instead).
        await stream.send_eof()
        await receive_all(stream)

    with trio.fail_after(LIMIT):
        async with raw_server(greet_and_close) as port:
            result = await run_connect("127.0.0.1", str(port), "--starttls", "-v")
    assert result.returncode == 1, result.stderr
    assert result.stdout == greeting
    err = result.stderr.decode().splitlines()
    assert err[-1] == (
        "trio-netstream: STARTTLS: the server closed the connection before TLS "
        f"(waiting for {waiting_for}): 127.0.0.1:{port}"
    )
    assert "trio-netstream: closed (had_error=True)" in err


@pytest.mark.parametrize(
    ("script", "waiting_for"),
    [
        ([], "the 220 greeting"),
        ([b"220 ready\r\n"], "the reply to EHLO"),
        ([b"220 ready\r\n", b"250 ok\r\n"], "the reply to STARTTLS"),
    ],
)
async def test_connect_starttls_gives_up_on_a_silent_peer(
    script: list[bytes], waiting_for: str
) -> None:
    async def answer_then_fall_silent(stream: trio.SocketStream) -> None:
        for reply in script:
            await stream.send_all(reply)
            if reply.startswith(b"250"):
                break
            await stream.receive_some()  # the client's next command
        await receive_all(stream)  # silent until the client goes away

    with trio.fail_after(LIMIT):
        async with raw_server(answer_then_fall_silent) as port:
            start = trio.current_time()
            result = await run_connect(
                "127.0.0.1", str(port), "--starttls", "--starttls-timeout", "0.5"
            )
            elapsed = trio.current_time() - start
    assert result.returncode == 1, result.stderr
    assert result.stdout == b"".join(script)
    assert result.stderr.decode() == (
        f"trio-netstream: STARTTLS: no answer within 0.5 s (waiting for {waiting_for}): "
        f"127.0.0.1:{port}\n"
    )
    assert elapsed < 10  # the child starts in about a second; the wait was 0.5 s


@pytest.mark.parametrize(
    "argv",
    [
        ["127.0.0.1", "25", "--starttls-timeout", "5"],  # only with --starttls
        ["127.0.0.1", "25", "--starttls", "--starttls-timeout", "0"],
        ["127.0.0.1", "25", "--starttls", "--starttls-timeout", "soon"],
    ],
)
async def test_connect_starttls_timeout_is_checked(argv: list[str]) -> None:
    with trio.fail_after(LIMIT):
        result = await run_connect(*argv)
    assert result.returncode == 2
    assert result.stdout == b""
    err = result.stderr.decode()
    assert err.startswith("usage: trio-netstream connect ")
    assert "trio-netstream connect: error: " in err
    assert "--starttls-timeout" in err


# -- usage and bind errors name what failed --------------------------------------------


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
async def test_echo_on_a_busy_port_names_the_address_and_the_code(workers: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(LIMIT):
            result = await trio.run_process(
                cli("echo", "--port", str(port), *workers),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        f"trio-netstream: address already in use: 127.0.0.1:{port} (EADDRINUSE)\n"
    )


@pytest.mark.parametrize(
    ("argv", "port"),
    [(["connect", "nosuch.invalid", "25"], 25), (["echo", "--host", "nosuch.invalid"], 8124)],
)
async def test_a_name_that_does_not_resolve_is_named_once(argv: list[str], port: int) -> None:
    with trio.fail_after(LIMIT):
        result = await trio.run_process(
            cli(*argv), stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )
    assert (result.returncode, result.stdout) == (1, b"")
    err = result.stderr.decode()
    # e.g. "...: Name or service not known (ENOTFOUND)", or EAI_AGAIN offline
    assert re.fullmatch(
        rf"trio-netstream: cannot resolve nosuch\.invalid:{port}: [^()]+ \(E[A-Z_]+\)\n", err
    ), err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["connect", "--bogus"], "usage: trio-netstream connect (HOST PORT | --unix PATH)"),
        (["connect", "127.0.0.1", "25", "extra"], "usage: trio-netstream connect "),
        (["echo", "--bogus"], "usage: trio-netstream echo [-h]"),
        (["demo", "--bogus"], "usage: trio-netstream demo [-h]"),
    ],
)
async def test_an_unknown_argument_prints_the_commands_usage(argv: list[str], usage: str) -> None:
    with trio.fail_after(LIMIT):
        result = await trio.run_process(
            cli(*argv), capture_stdout=True, capture_stderr=True, check=False
        )
    assert (result.returncode, result.stdout) == (2, b"")
    err = result.stderr.decode()
    assert err.startswith(usage)
    assert err.endswith(f"trio-netstream {argv[0]}: error: unrecognized arguments: {argv[-1]}\n")


# -- demo: a reader that goes away early -----------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("lines", [0, 2])
async def test_demo_exits_quietly_when_its_stdout_closes_early(tls: bool, lines: int) -> None:
    # `python -m trio_netstream demo | head -2`: exit 0, no traceback.
    with trio.fail_after(LIMIT):
        async with running("demo", *(["--tls"] if tls else [])) as child:
            for _ in range(lines):
                await child.line()
            assert child.process.stdout is not None and child.process.stderr is not None
            await child.process.stdout.aclose()  # the reader goes away
            code = await child.process.wait()
            err = await receive_all(child.process.stderr)
    assert (code, err.decode()) == (0, "")
    assert len(child.lines) == lines
    assert all(line.startswith("server listening(") for line in child.lines[:1])


# -- demo labels, echo's default port, a peer that resets ------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_demo_labels_the_server_and_its_connection_apart(tls: bool) -> None:
    with trio.fail_after(LIMIT):
        result = await trio.run_process(
            cli("demo", *(["--tls"] if tls else [])),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (result.returncode, result.stderr) == (0, b"")
    lines = result.stdout.decode().splitlines()

    def events(label: str) -> list[str]:
        return [
            re.sub(r"\(.*\)$", "", line.split(None, 1)[1])
            for line in lines
            if line.split(None, 1)[0] == label
        ]

    # The Server: listening, its 'connection' event, and its close at the end.
    assert events("server") == ["listening", "connection", "close"]
    # The connection it accepted: the echo conversation.
    conn = [name for name in events("conn") if name != "data"]
    assert conn == ["connect", *(["secure"] if tls else []), "end", "close"]
    assert lines[-1] == "server close()"
    assert {line.split(None, 1)[0] for line in lines} == {"server", "conn", "client"}


async def test_echo_listens_on_8124_by_default() -> None:
    # 8124 is every example's port. If something else holds it, the failure
    # names the port: either way, the default is 8124.
    with trio.fail_after(LIMIT):
        async with running("echo") as child:
            assert child.process.stdout is not None and child.process.stderr is not None
            out = b""
            while not out.endswith(b"\n") and (chunk := await child.process.stdout.receive_some()):
                out += chunk
            if not out:  # echo failed: the port is taken
                code = await child.process.wait()
                err = (await receive_all(child.process.stderr)).decode()
                assert (code, err) == (
                    1,
                    "trio-netstream: address already in use: 127.0.0.1:8124 (EADDRINUSE)\n",
                )
                return
    assert re.fullmatch(rb"listening on 127\.0\.0\.1:8124 \(pid \d+\)\n", out), out


def _send_one_byte_then_reset(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"x")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # closed with SO_LINGER 0: an RST, not a FIN


async def test_echo_logs_the_data_and_the_reset_of_a_peer_that_resets() -> None:
    rounds = 3
    with trio.fail_after(LIMIT):
        async with echo_server() as (child, _, port):
            for _ in range(rounds):
                await trio.to_thread.run_sync(_send_one_byte_then_reset, port)
                while not (await child.line()).endswith(" close(True)"):
                    pass
            code, lines, err = await child.stop()
    assert (code, err) == (0, "")
    per = connections(lines)
    assert len(per) == rounds
    for events in per.values():
        assert re.fullmatch(r"connection from 127\.0\.0\.1:\d+", events[0])
        assert events[1:3] == ["connect", "data b'x'"]
        assert re.fullmatch(r"error ConnectionResetError: .* \(ECONNRESET\)", events[3]), events
        assert events[4:] == ["close(True)"]
