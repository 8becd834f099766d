"""``connect``'s connecting options (issue 15), run as a user runs them:
``--family``, ``--local-address``, ``--local-port`` and ``--connect-timeout``.

Every command is a child process (``python -m trio_netstream connect``)
talking to raw Trio and stdlib sockets on loopback; every test is bounded in
time. A bad value is a usage error (exit code 2, one ``error:`` line after the
usage); a connection that cannot be made is one ``trio-netstream: ...`` line
and exit code 1, as every network failure.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator

import pytest
import trio
from test_cli_commands import free_port, raw_server, run_connect

from trio_netstream._cli import main

LIMIT = 20  # seconds; a hang fails the test instead of blocking the run


async def tell_the_peer_its_address(stream: trio.SocketStream) -> None:
    """The raw server's handler: send the client its own address as the
    server sees it (``host port``), then close."""
    host, port = stream.socket.getpeername()[:2]
    await stream.send_all(f"{host} {port}\n".encode())


def loopback_alias_available(address: str) -> bool:
    """Whether *address* can be bound (Linux routes all of 127/8 to the
    loopback; macOS has only 127.0.0.1 unless configured)."""
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered: a listener with
    ``listen(0)`` whose accept queue is full of connections it never
    accepts. A connection to it neither succeeds nor is refused."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(8):
            filler = stack.enter_context(socket.socket())
            filler.settimeout(0.25)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break  # the queue is full: this SYN (and every later one) is dropped
        else:
            pytest.skip("a full accept queue does not drop SYNs here")
        yield port


# -- --family ---------------------------------------------------------------------------


async def test_family_4_connects_to_localhost_over_ipv4() -> None:
    with trio.fail_after(LIMIT):
        async with raw_server(tell_the_peer_its_address) as port:
            result = await run_connect("localhost", str(port), "--family", "4", "-v")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rb"127\.0\.0\.1 \d+\n", result.stdout), result.stdout
    # -v names the address a HOST name led to.
    assert result.stderr.decode().splitlines() == [
        f"trio-netstream: connected to localhost:{port} (127.0.0.1:{port})",
        "trio-netstream: end",
        "trio-netstream: closed (had_error=False)",
    ]


async def test_family_6_to_an_ipv4_address_is_a_usage_error() -> None:
    with trio.fail_after(LIMIT):
        result = await run_connect("127.0.0.1", "80", "--family", "6")
    assert (result.returncode, result.stdout) == (2, b"")
    err = result.stderr.decode()
    assert err.startswith("usage: trio-netstream connect ")
    assert err.endswith(
        "trio-netstream connect: error: HOST 127.0.0.1 is IPv4, but --family is 6\n"
    )


async def test_a_name_without_an_address_of_the_local_family_is_one_line() -> None:
    # localhost has an IPv4 address; with --local-address ::1 only its IPv6
    # addresses may be tried. Without one: ENOTFOUND, the reason said once
    # (no "getaddrinfo ENOTFOUND localhost" inside the line). A system whose
    # localhost also has ::1 tries it: refused, nobody listens there.
    with trio.fail_after(LIMIT):
        async with raw_server(tell_the_peer_its_address) as port:
            result = await run_connect("localhost", str(port), "--local-address", "::1")
    assert (result.returncode, result.stdout) == (1, b"")
    err = result.stderr.decode()
    assert re.fullmatch(
        rf"trio-netstream: (cannot resolve localhost:{port}: [^\n]+ \(ENOTFOUND\)"
        rf"|connection refused: localhost:{port} \(ECONNREFUSED\))\n",
        err,
    ), err
    assert "getaddrinfo" not in err


# -- --local-address, --local-port --------------------------------------------------


async def test_local_address_is_the_address_the_server_sees() -> None:
    if not loopback_alias_available("127.0.0.2"):
        pytest.skip("127.0.0.2 is not a local address here")
    with trio.fail_after(LIMIT):
        async with raw_server(tell_the_peer_its_address) as port:
            result = await run_connect("127.0.0.1", str(port), "--local-address", "127.0.0.2", "-v")
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(rb"127\.0\.0\.2 (\d+)\n", result.stdout)
    assert match, result.stdout
    assert result.stderr.decode().splitlines()[0] == (
        f"trio-netstream: connected to 127.0.0.1:{port} from 127.0.0.2:{int(match[1])}"
    )


async def test_local_port_is_the_port_the_server_sees() -> None:
    local_port = free_port()
    with trio.fail_after(LIMIT):
        async with raw_server(tell_the_peer_its_address) as port:
            local = ["--local-address", "127.0.0.1", "--local-port", str(local_port)]
            result = await run_connect("127.0.0.1", str(port), *local)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == f"127.0.0.1 {local_port}\n".encode()


@pytest.mark.parametrize("with_address", [False, True])
async def test_a_local_port_in_use_names_both_ends(with_address: bool) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        local = ["--local-address", "127.0.0.1"] if with_address else []
        with trio.fail_after(LIMIT):
            async with raw_server(tell_the_peer_its_address) as port:
                result = await run_connect(
                    "127.0.0.1", str(port), *local, "--local-port", str(busy)
                )
    assert (result.returncode, result.stdout) == (1, b"")
    source = f"127.0.0.1:{busy}" if with_address else f"port {busy}"
    assert result.stderr.decode() == (
        f"trio-netstream: address already in use: from {source} to 127.0.0.1:{port} (EADDRINUSE)\n"
    )


# -- --connect-timeout -------------------------------------------------------------


async def test_connect_timeout_gives_up_on_a_black_hole() -> None:
    with black_hole() as port, trio.fail_after(LIMIT):
        start = trio.current_time()
        result = await run_connect("127.0.0.1", str(port), "--connect-timeout", "300")
        elapsed = trio.current_time() - start
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        f"trio-netstream: connection timed out: 127.0.0.1:{port} (ETIMEDOUT)\n"
    )
    assert elapsed < 10  # the child starts in about a second; the wait was 0.3 s


async def test_connect_timeout_ends_once_connected() -> None:
    # The server answers after the timeout: the connection, made in time, stays.
    async def answer_late(stream: trio.SocketStream) -> None:
        await trio.sleep(0.6)
        await stream.send_all(b"late\n")

    with trio.fail_after(LIMIT):
        async with raw_server(answer_late) as port:
            result = await run_connect("127.0.0.1", str(port), "--connect-timeout", "300")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"late\n", b"")


# -- bad values: usage errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--family", "5"], "argument --family: invalid choice: 5 (choose from 0, 4, 6)"),
        (["--family", "x"], "argument --family: invalid int value: 'x'"),
        (
            ["--connect-timeout", "-1"],
            "argument --connect-timeout: must be a positive number of milliseconds, not -1",
        ),
        (
            ["--connect-timeout", "0"],
            "argument --connect-timeout: must be a positive number of milliseconds, not 0",
        ),
        (
            ["--connect-timeout", "inf"],
            "argument --connect-timeout: must be a positive number of milliseconds, not inf",
        ),
        (
            ["--connect-timeout", "soon"],
            "argument --connect-timeout: not a number of milliseconds: 'soon'",
        ),
        (["--local-address", "nothere"], "argument --local-address: not an IP address: 'nothere'"),
        (
            ["--local-address", "127.0.0.256"],
            "argument --local-address: not an IP address: '127.0.0.256'",
        ),
        (
            ["--local-port", "65536"],
            "argument --local-port: port must be in 0..65535, not 65536",
        ),
        (["--local-address", "::1"], "--local-address ::1 is IPv6, but HOST 127.0.0.1 is not"),
        (
            ["--family", "4", "--local-address", "::1"],
            "--local-address ::1 is IPv6, but --family is 4",
        ),
    ],
)
async def test_bad_connecting_values_exit_2(argv: list[str], message: str) -> None:
    with trio.fail_after(LIMIT):
        result = await run_connect("127.0.0.1", "80", *argv)
    assert (result.returncode, result.stdout) == (2, b"")
    err = result.stderr.decode()
    assert err.startswith("usage: trio-netstream connect ")
    assert err.endswith(f"\ntrio-netstream connect: error: {message}\n")


@pytest.mark.parametrize(
    "option", [["--family", "4"], ["--local-address", "127.0.0.1"], ["--local-port", "5000"]]
)
async def test_connecting_options_of_tcp_are_refused_with_unix(option: list[str]) -> None:
    with trio.fail_after(LIMIT):
        result = await run_connect("--unix", "/nonexistent/socket", *option)
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode().endswith(
        "trio-netstream connect: error: --family, --local-address and --local-port"
        " need HOST PORT, not --unix\n"
    )


def test_help_lists_the_connecting_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["connect", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for usage in ("--family {0,4,6}", "--local-address ADDR", "--local-port PORT"):
        assert usage in out
    assert "--connect-timeout MS" in out
    assert "Happy Eyeballs" in out
