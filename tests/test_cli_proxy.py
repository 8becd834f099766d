"""``echo`` behind a load balancer, and stopped gracefully, run as a user runs it.

``echo --proxy-protocol`` reads a PROXY protocol header (v1 or v2) on every
connection and logs the client it names and the balancer it came through
(``connection from 203.0.113.7:51234 (via 127.0.0.1:40000)``); a bad
header, or one from outside ``--proxy-trusted``, is one ``client error
from ...`` line. SIGTERM shuts ``echo`` down gracefully within ``--grace``
ms (``shutting down (grace N ms)``, ``shut down: N connections
destroyed``, exit code 0), with ``--workers`` in every worker; a second
SIGTERM, or SIGINT, ends it at once.

The balancer is a raw Trio socket that writes the header itself. Every
command is a child process, every test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import struct
from collections.abc import Callable

import pytest
import trio
from test_cli_commands import (
    CONNECTION_LINE,
    Child,
    connections,
    echo_server,
    echoed,
    receive_all,
    without_data,
)

from trio_netstream._cli import main

LIMIT = 30  # seconds; a hang fails the test instead of blocking the run
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT_ERROR = re.compile(r"^\[pid (\d+)\] client error from (\S+): (.*)$")
VIA = re.compile(r"connection from 203\.0\.113\.(\d+):(\d+) \(via 127\.0\.0\.1:\d+\)")
SHUT_DOWN = re.compile(r"^\[pid (\d+)\] shut down: (\d+) connections? destroyed$")


def v1(source: str, source_port: int, destination: str = "192.0.2.1", port: int = 8124) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {source_port} {port}\r\n".encode()


def v2(source: str, source_port: int, destination: str, port: int) -> bytes:
    """A v2 PROXY header (command PROXY, TCP over IPv4 or IPv6)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", source_port, port)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def v2_local() -> bytes:
    """A v2 ``LOCAL`` header, as a balancer's health check sends it."""
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


async def exchange(port: int, data: bytes) -> tuple[bytes, int]:
    """Send *data* and EOF from a raw client; what came back until EOF (a
    reset counts as an EOF) and the client's own port (the balancer's)."""
    client = await trio.open_tcp_stream("127.0.0.1", port)
    async with client:
        own_port: int = client.socket.getsockname()[1]
        try:
            await client.send_all(data)
            await client.send_eof()
            return await receive_all(client), own_port
        except trio.BrokenResourceError:  # the server closed it first: a reset
            return b"", own_port


async def line_matching(child: Child, predicate: Callable[[str], object]) -> str:
    """The next stdout line *predicate* accepts (the ones before are kept in
    ``child.lines``)."""
    while not predicate(line := await child.line()):
        pass
    return line


async def ended(child: Child) -> tuple[int, list[str], str]:
    """Once *child* exits by itself: its exit code, every stdout line, stderr."""
    lines = await child.rest()
    code = await child.process.wait()
    assert child.process.stderr is not None
    return code, lines, (await receive_all(child.process.stderr)).decode()


def closed_line(line: str) -> bool:
    return line.endswith((" close(False)", " close(True)"))


def destroyed_counts(lines: list[str]) -> dict[int, int]:
    """``shut down: N connections destroyed`` per pid."""
    return {int(m[1]): int(m[2]) for line in lines if (m := SHUT_DOWN.match(line))}


def worker_pids(first_line: str) -> set[int]:
    match = re.search(r"workers (\d+), (\d+)\)$", first_line)
    assert match, first_line
    return {int(match[1]), int(match[2])}


def assert_reaped(pids: set[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- --proxy-protocol ---------------------------------------------------------------------


async def test_echo_logs_the_client_of_a_v1_header_and_the_balancer() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--proxy-protocol") as (child, _, port):
            reply, balancer = await exchange(port, v1("203.0.113.7", 51234) + b"ping\r\n")
            await line_matching(child, closed_line)
            code, lines, err = await child.stop()
    assert reply == b"hello\r\nping\r\ngoodbye\r\n"  # the header is no data
    assert (code, err) == (0, "")
    (events,) = connections(lines).values()
    assert events[0] == f"connection from 203.0.113.7:51234 (via 127.0.0.1:{balancer})"
    assert without_data(events[1:]) == ["connect", "end", "close(False)"]
    assert echoed(events) == b"ping\r\n"


async def test_echo_logs_the_client_of_a_v2_header() -> None:
    header = v2("2001:db8::7", 4433, "2001:db8::1", 443)
    with trio.fail_after(LIMIT):
        async with echo_server("--proxy-protocol") as (child, _, port):
            reply, balancer = await exchange(port, header + b"over v2")
            await line_matching(child, closed_line)
            reply_local, health_check = await exchange(port, v2_local())
            await line_matching(child, closed_line)
            code, lines, err = await child.stop()
    assert reply == b"hello\r\nover v2goodbye\r\n"
    assert reply_local == b"hello\r\ngoodbye\r\n"
    assert (code, err) == (0, "")
    first, second = connections(lines).values()
    assert first[0] == f"connection from [2001:db8::7]:4433 (via 127.0.0.1:{balancer})"
    assert echoed(first) == b"over v2"
    # LOCAL: the balancer speaking for itself; the real peer is logged.
    assert second[0] == f"connection from 127.0.0.1:{health_check} (PROXY LOCAL, no client address)"


async def test_a_bad_header_is_one_client_error_line() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--proxy-protocol") as (child, _, port):
            reply, balancer = await exchange(port, b"GET / HTTP/1.0\r\n\r\n")
            line = await line_matching(child, CLIENT_ERROR.match)
            # The server goes on: the next client with a header is served.
            good, _ = await exchange(port, v1("198.51.100.1", 1111) + b"x")
            await line_matching(child, closed_line)
            code, lines, err = await child.stop()
    assert reply == b""  # closed before 'connection': no hello
    assert good == b"hello\r\nxgoodbye\r\n"
    assert (code, err) == (0, "")
    match = CLIENT_ERROR.match(line)
    assert match is not None
    assert int(match[1]) == child.process.pid
    assert match[2] == f"127.0.0.1:{balancer}"
    assert match[3].startswith("PROXY protocol: ")
    assert match[3].endswith(" (ERR_PROXY_PROTOCOL)")
    assert "Errno" not in match[3]
    assert len([line for line in lines if CLIENT_ERROR.match(line)]) == 1
    (events,) = connections(lines).values()  # only the good one
    assert events[0].startswith("connection from 198.51.100.1:1111 (via 127.0.0.1:")


async def test_a_header_cut_short_is_a_client_error() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--proxy-protocol") as (child, _, port):
            reply, balancer = await exchange(port, b"PROXY TCP4 203.0.113.7")
            line = await line_matching(child, CLIENT_ERROR.match)
            code, lines, _ = await child.stop()
    assert reply == b""
    assert code == 0
    assert line.startswith(f"[pid {child.process.pid}] client error from 127.0.0.1:{balancer}: ")
    assert line.endswith(" (ERR_PROXY_PROTOCOL)")
    assert connections(lines) == {}


async def test_an_untrusted_balancer_is_refused() -> None:
    with trio.fail_after(LIMIT):
        trusted = ("--proxy-trusted", "10.0.0.0/8", "::1/128")
        async with echo_server("--proxy-protocol", *trusted) as (child, _, port):
            reply, balancer = await exchange(port, v1("203.0.113.7", 51234) + b"ping\r\n")
            line = await line_matching(child, CLIENT_ERROR.match)
            code, lines, err = await child.stop()
    assert reply == b""
    assert (code, err) == (0, "")
    assert line == (
        f"[pid {child.process.pid}] client error from 127.0.0.1:{balancer}: "
        "PROXY protocol: 127.0.0.1 is not a trusted proxy (EACCES)"
    )
    assert connections(lines) == {}


async def test_a_trusted_balancer_is_served() -> None:
    with trio.fail_after(LIMIT):
        trusted = ("--proxy-trusted", "10.0.0.0/8", "127.0.0.1")
        async with echo_server("--proxy-protocol", *trusted) as (child, _, port):
            reply, balancer = await exchange(port, v1("203.0.113.7", 51234) + b"ping\r\n")
            await line_matching(child, closed_line)
            code, lines, _ = await child.stop()
    assert reply == b"hello\r\nping\r\ngoodbye\r\n"
    assert code == 0
    (events,) = connections(lines).values()
    assert events[0] == f"connection from 203.0.113.7:51234 (via 127.0.0.1:{balancer})"


async def test_workers_all_read_proxy_headers() -> None:
    count = 24
    with trio.fail_after(LIMIT):
        async with echo_server("--workers", "2", "--proxy-protocol") as (child, _, port):
            workers = worker_pids(child.lines[0])
            replies: dict[int, bytes] = {}

            async def one_client(n: int) -> None:
                header = v1(f"203.0.113.{n}", 40000 + n)
                replies[n], _ = await exchange(port, header + f"client {n}\r\n".encode())

            async with trio.open_nursery() as nursery:
                for n in range(1, count + 1):
                    nursery.start_soon(one_client, n)
            bad, _ = await exchange(port, b"not a header\r\n")
            await line_matching(child, CLIENT_ERROR.match)
            code, lines, err = await child.stop()
    assert (code, err) == (0, "")
    expected = {n: f"hello\r\nclient {n}\r\ngoodbye\r\n".encode() for n in range(1, count + 1)}
    assert replies == expected
    assert bad == b""
    per = connections(lines)
    assert len(per) == count
    assert {pid for pid, _ in per} == workers  # both workers read headers
    named = set()
    for events in per.values():
        match = re.fullmatch(
            r"connection from 203\.0\.113\.(\d+):(\d+) \(via 127\.0\.0\.1:\d+\)", events[0]
        )
        assert match, events[0]
        assert int(match[2]) == 40000 + int(match[1])
        assert echoed(events) == f"client {match[1]}\r\n".encode()
        named.add(int(match[1]))
    assert named == set(range(1, count + 1))
    (refused_by,) = [int(m[1]) for line in lines if (m := CLIENT_ERROR.match(line))]
    assert refused_by in workers
    assert_reaped(workers)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--proxy-trusted", "10.0.0.0/8"], "--proxy-trusted needs --proxy-protocol"),
        (["--proxy-protocol", "--proxy-trusted", "10.0.0.1/8"], "not a network: '10.0.0.1/8'"),
        (["--proxy-protocol", "--proxy-trusted", "example.org"], "not a network"),
        (["--proxy-protocol", "--proxy-trusted"], "expected at least one argument"),
        (["--grace", "-1"], "must be a number of milliseconds >= 0"),
        (["--grace", "soon"], "not a number of milliseconds"),
        (["--grace", "inf"], "must be a number of milliseconds >= 0"),
    ],
)
def test_bad_proxy_and_grace_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["echo", *argv])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "trio-netstream echo: error: " in err
    assert message in err


def test_help_documents_the_new_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["echo", "--help"])
    out = capsys.readouterr().out
    for option in ("--proxy-protocol", "--proxy-trusted NET [NET ...]", "--grace MS"):
        assert option in out


# -- graceful shutdown on SIGTERM ---------------------------------------------------------


async def test_sigterm_destroys_an_idle_connection_after_the_grace() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--grace", "300") as (child, _, port):
            pid = child.process.pid
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                assert await client.receive_some() == b"hello\r\n"
                started = trio.current_time()
                child.process.send_signal(signal.SIGTERM)
                await line_matching(child, lambda line: "shutting down" in line)
                # Closed by the server: no new connection, and this one ends.
                try:
                    assert await receive_all(client) == b""
                except trio.BrokenResourceError:
                    pass
                code, lines, err = await ended(child)
                elapsed = trio.current_time() - started
    assert (code, err) == (0, "")
    assert elapsed < 10  # the grace, not the 10 s SIGKILL of the test harness
    assert f"[pid {pid}] shutting down (grace 300 ms)" in lines
    assert lines[-1] == f"[pid {pid}] shut down: 1 connection destroyed"
    (events,) = connections(lines).values()
    assert events[-1] == "close(False)"  # destroyed: no 'end'
    assert "end" not in events
    assert lines.index(f"[pid {pid}] shutting down (grace 300 ms)") < lines.index(
        f"[pid {pid}] #1 close(False)"
    )


async def test_sigterm_lets_a_transfer_finish_within_the_grace() -> None:
    payload = os.urandom(256 * 1024)
    with trio.fail_after(LIMIT):
        async with echo_server("--grace", "10000") as (child, _, port):
            pid = child.process.pid
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                answer = bytearray()

                async def read_all() -> None:
                    while chunk := await client.receive_some():
                        answer.extend(chunk)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_all)
                    await client.send_all(payload[:65536])
                    child.process.send_signal(signal.SIGTERM)
                    await line_matching(child, lambda line: "shutting down" in line)
                    # Stopped accepting at once; the transfer under way goes on.
                    with pytest.raises(OSError):
                        await trio.open_tcp_stream("127.0.0.1", port)
                    await client.send_all(payload[65536:])
                    await client.send_eof()
            last = await line_matching(child, SHUT_DOWN.match)
            code, lines, err = await ended(child)
    assert (code, err) == (0, "")
    assert last == f"[pid {pid}] shut down: 0 connections destroyed"
    assert bytes(answer) == b"hello\r\n" + payload + b"goodbye\r\n"
    (events,) = connections(lines).values()
    assert without_data(events[1:]) == ["connect", "end", "close(False)"]


async def test_a_second_sigterm_during_the_grace_ends_at_once() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--grace", "600000") as (child, _, port):
            pid = child.process.pid
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                assert await client.receive_some() == b"hello\r\n"
                child.process.send_signal(signal.SIGTERM)
                await line_matching(child, lambda line: "shutting down" in line)
                code, lines, err = await child.stop(signal.SIGTERM)
    assert (code, err) == (0, "")
    assert f"[pid {pid}] shutting down (grace 600000 ms)" in lines
    assert destroyed_counts(lines) == {}  # cut short: the shutdown never finished
    (events,) = connections(lines).values()
    assert events[-1] == "close(False)"


async def test_sigint_during_the_grace_ends_at_once_with_130() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--grace", "600000") as (child, _, port):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                assert await client.receive_some() == b"hello\r\n"
                child.process.send_signal(signal.SIGTERM)
                await line_matching(child, lambda line: "shutting down" in line)
                code, _, err = await child.stop(signal.SIGINT)
    assert (code, err) == (130, "")


async def test_sigterm_without_connections_exits_at_once() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--grace", "600000") as (child, _, _):
            pid = child.process.pid
            code, lines, err = await child.stop(signal.SIGTERM)
    assert (code, err) == (0, "")
    assert lines[1:] == [
        f"[pid {pid}] shutting down (grace 600000 ms)",
        f"[pid {pid}] shut down: 0 connections destroyed",
    ]


# -- graceful shutdown across workers -----------------------------------------------------


async def _open_clients(port: int, count: int) -> list[trio.SocketStream]:
    clients = []
    for _ in range(count):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        assert await client.receive_some() == b"hello\r\n"
        clients.append(client)
    return clients


async def test_workers_each_shut_down_gracefully_on_sigterm() -> None:
    count = 12
    with trio.fail_after(LIMIT):
        async with echo_server("--workers", "2", "--grace", "10000") as (child, _, port):
            workers = worker_pids(child.lines[0])
            clients = await _open_clients(port, count)
            for n, client in enumerate(clients):
                await client.send_all(f"first half {n}, ".encode())
            child.process.send_signal(signal.SIGTERM)
            for _ in workers:
                await line_matching(child, lambda line: "shutting down" in line)
            answers: dict[int, bytes] = {}

            async def finish(n: int, client: trio.SocketStream) -> None:
                async with client:
                    await client.send_all(f"second half {n}".encode())
                    await client.send_eof()
                    answers[n] = await receive_all(client)

            async with trio.open_nursery() as nursery:
                for n, client in enumerate(clients):
                    nursery.start_soon(finish, n, client)
            code, lines, err = await ended(child)
    assert (code, err) == (0, "")
    expected = {n: f"first half {n}, second half {n}" for n in range(count)}
    assert answers == {n: f"{text}goodbye\r\n".encode() for n, text in expected.items()}
    assert destroyed_counts(lines) == dict.fromkeys(workers, 0)
    per = connections(lines)
    assert len(per) == count
    for events in per.values():
        assert without_data(events[1:]) == ["connect", "end", "close(False)"]
    assert_reaped(workers)


async def test_workers_destroy_idle_connections_after_the_grace() -> None:
    count = 12
    with trio.fail_after(LIMIT):
        async with echo_server("--workers", "2", "--grace", "300") as (child, _, port):
            workers = worker_pids(child.lines[0])
            clients = await _open_clients(port, count)
            started = trio.current_time()
            code, lines, err = await child.stop(signal.SIGTERM)
            elapsed = trio.current_time() - started
            for client in clients:
                await client.aclose()
    assert (code, err) == (0, "")
    assert elapsed < 10
    destroyed = destroyed_counts(lines)
    assert set(destroyed) == workers
    assert sum(destroyed.values()) == count
    per = connections(lines)
    assert {pid for pid, _ in per} == workers
    assert_reaped(workers)


async def test_a_second_sigterm_stops_the_workers_at_once() -> None:
    with trio.fail_after(LIMIT):
        async with echo_server("--workers", "2", "--grace", "600000") as (child, _, port):
            workers = worker_pids(child.lines[0])
            clients = await _open_clients(port, 8)
            child.process.send_signal(signal.SIGTERM)
            for _ in workers:
                await line_matching(child, lambda line: "shutting down" in line)
            code, lines, err = await child.stop(signal.SIGTERM)
            for client in clients:
                await client.aclose()
    assert (code, err) == (0, "")
    assert destroyed_counts(lines) == {}
    closes = [
        line for line in lines if (m := CONNECTION_LINE.match(line)) and m[3] == "close(False)"
    ]
    assert len(closes) == 8
    assert_reaped(workers)


async def test_a_sigterm_to_the_whole_process_group_stays_graceful() -> None:
    # As systemd (KillMode=control-group) or kill -TERM -PGID stop a service:
    # every process gets SIGTERM, and each worker another one from its
    # parent. A worker leaves "at once" to its parent: it stays graceful.
    with trio.fail_after(LIMIT):
        async with echo_server("--workers", "2", "--grace", "10000") as (child, _, port):
            workers = worker_pids(child.lines[0])
            clients = await _open_clients(port, 8)
            for pid in (*workers, child.process.pid):
                os.kill(pid, signal.SIGTERM)
            for _ in workers:
                await line_matching(child, lambda line: "shutting down" in line)
            await trio.sleep(0.3)  # the parent's SIGTERM reached the workers by now
            answers: list[bytes] = []
            for client in clients:
                async with client:
                    await client.send_all(b"still served")
                    await client.send_eof()
                    answers.append(await receive_all(client))
            code, lines, err = await ended(child)
    assert (code, err) == (0, "")
    assert answers == [b"still servedgoodbye\r\n"] * 8
    assert destroyed_counts(lines) == dict.fromkeys(workers, 0)
    assert_reaped(workers)
