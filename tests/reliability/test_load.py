"""Load and leak tests: many connections at once, many in a row, closing and
limits under load, slow peers, and proof that a leaked socket fails the run.

The peers are an independent client (``load_client.py``: stdlib sockets in a
child process) or plain Trio sockets; trio_netstream is only the side under
test, except where both sides are meant to be trio_netstream. Each test
prints its figures (run with ``-s`` to see them); none asserts a duration.
"""

from __future__ import annotations

import collections
import errno
import gc
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import trio
from netstream_testing import KiB, Tally, open_fds, port_of, read_to_eof, rss

import trio_netstream as net

CLIENT = Path(__file__).with_name("load_client.py")
HOST = "127.0.0.1"
#: Asked of listen(); the kernel caps it at net.core.somaxconn.
BACKLOG = 4096
CONNECTED = ("connect", "data", "end", ("close", False))


@contextmanager
def fd_limit(needed: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to the hard one if *needed* descriptors
    do not fit (restored afterwards); skip if even the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors, the hard RLIMIT_NOFILE is {hard}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def echo(conn: net.Stream) -> None:
    conn.on("data", conn.write)
    conn.on("end", conn.end)


class LoadClient:
    """A running ``load_client.py``: its JSON reports, and a go-ahead line."""

    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self._stderr = stderr
        self._buffer = b""

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    async def report(self, event: str) -> dict[str, Any]:
        """The client's next report, which must be *event*."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some()
            assert chunk, f"load client exited: {self.stderr()}"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        fields: dict[str, Any] = json.loads(line)
        assert fields.get("event") == event, (fields, self.stderr())
        return fields

    async def go_on(self) -> None:
        """Let the client go past its wait for the test."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"go\n")

    async def finished(self) -> None:
        assert await self.process.wait() == 0, self.stderr()


@asynccontextmanager
async def load_client(mode: str, port: int, **options: Any) -> AsyncIterator[LoadClient]:
    """Run ``load_client.py mode --port port --option value ...`` for the
    block's duration; it is killed if still running at the end, and reaped."""
    args = [sys.executable, str(CLIENT), mode, "--port", str(port)]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    with tempfile.TemporaryFile() as stderr:
        process = await trio.lowlevel.open_process(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        try:
            yield LoadClient(process, stderr)
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                assert process.stdin is not None and process.stdout is not None
                await process.stdin.aclose()
                await process.stdout.aclose()


def figures(title: str, **values: Any) -> None:
    print(f"\n[load] {title}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def expected_message(index: int) -> bytes:
    """What ``load_client.py hold`` sends on its connection number *index*."""
    return b"connection %05d says %s\n" % (index, b"x" * (index % 61))


# -- many at once --------------------------------------------------------------------

HELD = 10_000


async def test_ten_thousand_connections_held_at_once(record: Any) -> None:
    """A server holds 10,000 open connections at the same time, echoes a
    distinct message on each, ends each one cleanly, and gives back every
    descriptor."""
    with fd_limit(HELD + 500), trio.fail_after(90):
        recs: list[Any] = []
        peak = 0

        def on_connection(conn: net.Stream) -> None:
            nonlocal peak
            peak = max(peak, server.connections)
            recs.append(record(conn))
            echo(conn)

        fds_before = open_fds()
        rss_before = rss() // KiB
        started = time.monotonic()
        async with net.create_server(on_connection) as server:
            server_rec = record(server, events=("listening", "error", "close"))
            await server.listen(0, HOST, backlog=BACKLOG)
            port = port_of(server)
            async with load_client("hold", port, count=HELD, batch=1000, deadline=75) as client:
                connected = await client.report("connected")
                held = await client.report("held")
                # Every echo came back and no client has closed yet.
                held_now = server.connections
                fds_held = open_fds()
                rss_held = rss() // KiB
                await client.go_on()
                closed = await client.report("closed")
                await client.finished()
            server.close()
        elapsed = time.monotonic() - started
        gc.collect()
        fds_after = open_fds()

    figures(
        "10k held",
        connections_held=held_now,
        client_connect_s=connected["seconds"],
        all_echoed_s=held["seconds"],
        total_s=round(elapsed, 2),
        fds_before=fds_before,
        fds_held=fds_held,
        fds_after=fds_after,
        rss_before_kib=rss_before,
        rss_held_kib=rss_held,
        peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    assert connected["count"] == HELD
    assert (held["count"], held["correct"]) == (HELD, HELD)
    assert held_now == HELD
    assert peak == HELD
    assert fds_held >= fds_before + HELD
    assert closed == {"event": "closed", "count": HELD, "clean_eof": HELD}
    assert len(recs) == HELD
    wrong = [rec.events for rec in recs if rec.events != list(CONNECTED)]
    assert wrong == []
    assert sorted(rec.data for rec in recs) == [expected_message(i) for i in range(HELD)]
    assert server_rec.events == ["listening", "close"]
    assert server.connections == 0
    assert fds_after == fds_before


# -- many in a row -------------------------------------------------------------------

#: How many connections ended with each whole event sequence.
Sequences = collections.Counter[tuple[Any, ...]]


def track(stream: net.Stream, sequences: Sequences, *, sizes_only: bool = False) -> None:
    """Count *stream*'s whole event sequence into *sequences* at its 'close'
    (without keeping the stream, so that nothing holds on to it)."""
    events: list[Any] = []
    stream.on("connect", lambda: events.append("connect"))
    stream.on("data", lambda chunk: events.append(("data", len(chunk) if sizes_only else chunk)))
    stream.on("end", lambda: events.append("end"))
    stream.on("error", lambda err: events.append(("error", err)))
    stream.on("close", lambda had_error: sequences.update([(*events, ("close", had_error))]))


CYCLED = 100_000
CYCLERS = 4  # client processes, each from its own source address


async def test_hundred_thousand_sequential_connections_leak_nothing() -> None:
    """100,000 connect / 1-byte echo / close cycles against one server (four
    sequential clients side by side) leave the server's descriptor count where
    it started, with every connection's events complete."""
    with trio.fail_after(180):
        sequences: Sequences = collections.Counter()
        connected = Tally()

        def on_connection(conn: net.Stream) -> None:
            track(conn, sequences, sizes_only=True)
            conn.on("connect", connected.add)
            echo(conn)

        gc.collect()
        fds_before = open_fds()
        rss_before = rss() // KiB
        started = time.monotonic()
        async with net.create_server(on_connection) as server:
            await server.listen(0, HOST, backlog=BACKLOG)
            port = port_of(server)
            reports: list[dict[str, Any]] = []
            async with AsyncExitStack() as stack:
                # Distinct source addresses: each has the whole ephemeral port
                # range for its TIME_WAIT sockets (the clients close first).
                clients = [
                    await stack.enter_async_context(
                        load_client(
                            "cycle",
                            port,
                            count=CYCLED // CYCLERS,
                            source=f"127.0.0.{11 + n}",
                            deadline=160,
                        )
                    )
                    for n in range(CYCLERS)
                ]

                async def run(client: LoadClient) -> None:
                    reports.append(await client.report("cycled"))
                    await client.finished()

                async with trio.open_nursery() as nursery:
                    for client in clients:
                        nursery.start_soon(run, client)
            server.close()
        elapsed = time.monotonic() - started
        gc.collect()
        fds_after = open_fds()

    figures(
        "100k sequential",
        connections_cycled=connected.count,
        seconds=round(elapsed, 2),
        per_second=round(connected.count / elapsed),
        fds_before=fds_before,
        fds_after=fds_after,
        rss_before_kib=rss_before,
        rss_after_kib=rss() // KiB,
    )
    assert [(r["count"], r["wrong"]) for r in reports] == [(CYCLED // CYCLERS, 0)] * CYCLERS
    assert connected.count == CYCLED
    one_byte = ("connect", ("data", 1), "end", ("close", False))
    assert sequences == {one_byte: CYCLED}
    assert server.connections == 0
    assert fds_after == fds_before


IN_PROCESS = 5_000


async def test_sequential_netstream_clients_leak_nothing() -> None:
    """5,000 trio_netstream clients in a row against a trio_netstream server in
    the same process: both sides' events are complete every time and the
    process ends with the descriptors it started with."""
    with trio.fail_after(90):
        server_sequences: Sequences = collections.Counter()
        client_sequences: Sequences = collections.Counter()

        def on_connection(conn: net.Stream) -> None:
            track(conn, server_sequences)
            # The server answers and ends first, so TIME_WAIT stays on the
            # server's port and the client's ephemeral ports are not used up.
            conn.on("data", conn.end)

        gc.collect()
        fds_before = open_fds()
        started = time.monotonic()
        async with net.create_server(on_connection) as server:
            await server.listen(0, HOST)
            port = port_of(server)
            fds_listening = open_fds()
            for _ in range(IN_PROCESS):
                client = net.create_connection(port, HOST)
                track(client, client_sequences)
                client.on("connect", lambda client=client: client.write(b"?"))
                client.on("end", client.end)
                async with client:
                    pass
            fds_between = open_fds()
            server.close()
        elapsed = time.monotonic() - started
        gc.collect()
        fds_after = open_fds()

    figures(
        "5k in-process",
        connections_cycled=sum(client_sequences.values()),
        seconds=round(elapsed, 2),
        fds_before=fds_before,
        fds_listening=fds_listening,
        fds_after_clients=fds_between,
        fds_after=fds_after,
    )
    answered = ("connect", ("data", b"?"), "end", ("close", False))
    assert client_sequences == {answered: IN_PROCESS}
    assert server_sequences == {answered: IN_PROCESS}
    assert fds_between == fds_listening  # only the listening socket is left
    assert fds_after == fds_before


# -- close() under load ----------------------------------------------------------------

IN_FLIGHT = 200
HALF = 32 * 1024


async def test_close_under_load_lets_transfers_finish() -> None:
    """server.close() with 200 connections mid-transfer: each transfer still
    completes byte for byte, new connections are refused, and the server's
    'close' comes after every connection's 'close'."""
    with trio.fail_after(60):
        order: list[Any] = []
        halfway = Tally()

        async def handler(conn: net.Stream) -> None:
            received = 0
            async for chunk in conn:
                before, received = received, received + len(chunk)
                if before < HALF <= received:
                    halfway.add()
                conn.write(chunk)
                await conn.drain()
            conn.end()

        def on_connection(conn: net.Stream) -> None:
            conn.on("close", lambda had_error: order.append(("connection close", had_error)))

        payloads = [os.urandom(2 * HALF) for _ in range(IN_FLIGHT)]
        echoed: list[bytes] = [b""] * IN_FLIGHT
        go_on = trio.Event()

        async def client(index: int, port: int) -> None:
            stream = await trio.open_tcp_stream(HOST, port)
            async with stream:

                async def read_all() -> None:
                    echoed[index] = await read_to_eof(stream)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_all)
                    await stream.send_all(payloads[index][:HALF])
                    await go_on.wait()
                    await stream.send_all(payloads[index][HALF:])
                    await stream.send_eof()

        async with net.create_server(handler) as server:
            server.on("connection", on_connection)
            server.on("close", lambda: order.append("server close"))
            await server.listen(0, HOST, backlog=BACKLOG)
            port = port_of(server)
            async with trio.open_nursery() as clients:
                for index in range(IN_FLIGHT):
                    clients.start_soon(client, index, port)
                await halfway.wait_for(IN_FLIGHT)
                in_flight = server.connections
                server.close()

                refused = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                with refused, pytest.raises(ConnectionRefusedError) as info:
                    await refused.connect((HOST, port))
                order.append("new connection refused")
                go_on.set()
        order.append("server block exited")

    figures("close under load", connections_in_flight=in_flight)
    assert in_flight == IN_FLIGHT
    assert info.value.errno == errno.ECONNREFUSED
    wrong = [
        i
        for i in range(IN_FLIGHT)
        if hashlib.sha256(echoed[i]).digest() != hashlib.sha256(payloads[i]).digest()
    ]
    assert wrong == []
    assert order == [
        "new connection refused",
        *[("connection close", False)] * IN_FLIGHT,
        "server close",
        "server block exited",
    ]
    assert server.connections == 0


# -- max_connections under a storm --------------------------------------------------------

MAX_CONNECTIONS = 50
STORM = 2_000


async def test_max_connections_holds_under_a_connection_storm(record: Any) -> None:
    """2,000 clients connecting at once to a server with max_connections=50:
    never more than 50 open, exactly 50 served, the rest closed at once, and
    the server serves again once they are gone."""
    with trio.fail_after(60):
        recs: list[Any] = []
        counts: list[int] = []

        def on_connection(conn: net.Stream) -> None:
            counts.append(server.connections)
            recs.append(record(conn))
            conn.on("close", lambda had_error: counts.append(server.connections))
            echo(conn)

        async with net.create_server(on_connection, max_connections=MAX_CONNECTIONS) as server:
            await server.listen(0, HOST, backlog=BACKLOG)
            port = port_of(server)
            async with load_client("storm", port, count=STORM, batch=STORM, deadline=45) as client:
                storm = await client.report("storm")
                open_during_storm = server.connections
                await client.go_on()
                closed = await client.report("closed")
                await client.finished()

            # All gone: a new client is served as usual.
            late = await trio.open_tcp_stream(HOST, port)
            async with late:
                await late.send_all(b"after the storm")
                await late.send_eof()
                answer = await read_to_eof(late)
            server.close()

    figures(
        "storm",
        clients=STORM,
        max_connections=MAX_CONNECTIONS,
        served=storm["served"],
        turned_away=storm["turned_away"],
        most_open=max(counts),
    )
    assert storm == {
        "event": "storm",
        "count": STORM,
        "served": MAX_CONNECTIONS,
        "turned_away": STORM - MAX_CONNECTIONS,
    }
    assert open_during_storm == MAX_CONNECTIONS
    assert closed == {"event": "closed", "count": MAX_CONNECTIONS, "clean_eof": MAX_CONNECTIONS}
    assert max(counts) == MAX_CONNECTIONS
    assert answer == b"after the storm"
    assert len(recs) == MAX_CONNECTIONS + 1
    assert [rec.events for rec in recs] == [list(CONNECTED)] * (MAX_CONNECTIONS + 1)
    assert [rec.data for rec in recs] == [b"hello"] * MAX_CONNECTIONS + [b"after the storm"]
    assert server.connections == 0


# -- slow peers ------------------------------------------------------------------------------

SLOW = 1_000
IDLE_MS = 2_500


async def test_slowloris_connections_are_timed_out(record: Any) -> None:
    """1,000 connections that send nothing (or one byte) are each timed out
    once and closed by a 'timeout' listener that destroys them, while a
    well-behaved client connecting during the attack is served."""
    with fd_limit(SLOW + 500), trio.fail_after(60):
        recs: dict[int, Any] = {}
        open_at_connection: dict[int, int] = {}
        accepted = Tally()

        def on_connection(conn: net.Stream) -> None:
            port = conn.remote_port
            assert port is not None
            recs[port] = record(conn)
            open_at_connection[port] = server.connections
            conn.set_timeout(IDLE_MS)
            conn.on("timeout", conn.destroy)
            conn.on("connect", accepted.add)
            echo(conn)

        async with net.create_server(on_connection) as server:
            await server.listen(0, HOST, backlog=BACKLOG)
            port = port_of(server)
            async with load_client("slowloris", port, count=SLOW, deadline=45) as attack:
                holding = await attack.report("holding")
                await accepted.wait_for(SLOW)

                good = await trio.open_tcp_stream(HOST, port)
                async with good:
                    good_port = good.socket.getsockname()[1]
                    await good.send_all(b"I am well-behaved")
                    await good.send_eof()
                    answer = await read_to_eof(good)

                dropped = await attack.report("dropped")
                await attack.finished()
            server.close()

    good_rec = recs.pop(good_port)
    silent = [rec.events for rec in recs.values() if rec.data == b""]
    one_byte = [rec.events for rec in recs.values() if rec.data == b"!"]
    figures(
        "slowloris",
        attackers=holding["count"],
        dropped=dropped["count"],
        open_when_good_client_came=open_at_connection[good_port],
    )
    assert dropped == {"event": "dropped", "count": SLOW, "clean_eof": SLOW}
    assert len(recs) == SLOW
    assert silent == [["connect", "timeout", ("close", False)]] * (SLOW // 2)
    assert one_byte == [["connect", "data", "timeout", ("close", False)]] * (SLOW // 2)
    # It came while the attackers were held (they time out IDLE_MS after their
    # last byte), and was served in full.
    assert open_at_connection[good_port] == SLOW + 1
    assert good_rec.events == list(CONNECTED)
    assert good_rec.data == answer == b"I am well-behaved"
    assert server.connections == 0


# -- a leak fails the run ------------------------------------------------------------------

LEAKY_SESSION = """
import gc
import socket

import trio

import trio_netstream as net


async def exchange():
    async with net.create_server(lambda conn: conn.on("data", conn.end)) as server:
        await server.listen(0, "127.0.0.1")
        async with net.create_connection(server.address()[1]) as client:
            client.on("data", lambda chunk: client.end())
            client.write(b"ping")
        server.close()


async def test_clean():
    await exchange()


async def test_leaks_a_socket():
    await exchange()
    leaked = socket.socket()
    del leaked
    gc.collect()
"""


async def test_a_leaked_socket_fails_the_suite(tmp_path: Path) -> None:
    """With the suite's settings (warnings are errors), a test that leaves a
    socket unclosed fails on its ResourceWarning, while the same test
    without the leak passes."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\ntrio_mode = true\nfilterwarnings =\n    error\n"
    )
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_SESSION))
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 1, output
    assert "1 failed, 1 passed" in output, output
    assert "FAILED test_leaky.py::test_leaks_a_socket" in output, output
    assert "ResourceWarning: unclosed <socket.socket" in output, output
