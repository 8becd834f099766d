"""Trio's floor: raw ``trio.SocketStream`` against the least a Trio program
can do, in the same process layout, to tell which of trio_netstream's
targets (ratios to ``trio.SocketStream``, see ``bench_spec.py``) any library
built on Trio can reach at all.

``python benchmarks/trio_floor.py`` (``--quick``: a smoke run of a few
seconds; ``--runs N``, 5 by default; ``--help`` for the sizes). It needs
only the standard library and trio, and is not part of the harness
(``bench.py``); it measures no trio_netstream.

Two implementations, each a server process and a client process on
127.0.0.1 (this script again, with the role as its first argument):

* ``SocketStream``: what ``peer_trio.py`` does (``trio.serve_tcp``,
  ``trio.open_tcp_stream``, ``send_all`` / ``receive_some``, ``aclose``).
* ``floor``: stdlib non-blocking sockets driven directly by
  ``trio.lowlevel.wait_readable`` / ``wait_writable``: each ``recv``,
  ``send``, ``accept`` is tried first and waits only on ``BlockingIOError``;
  the client connects with ``connect_ex`` and ``wait_writable``; the server
  runs one task per connection, started with ``nursery.start_soon`` from an
  accept loop. No ``SocketStream``, no checkpoint but the waits: the
  ceiling for any library on Trio's scheduler. Its sockets have
  ``TCP_NODELAY``, as ``SocketStream``'s do.

The rows: ``pingpong-same`` and ``pingpong-cross`` (``rounds`` round trips
of 64 bytes, both processes pinned to one CPU, or to two), ``churn`` (
``count`` sequential connections: write a byte, read its echo, send EOF,
wait for the server's EOF, close) and ``churn-node`` (write, read the echo,
close), ``idle`` (the server's ``VmRSS`` growth per connection while it
holds ``connections`` idle ones). Runs are interleaved (A B A B ...);
every figure is a median.

CPU time: each process exits (``os._exit``) once its part is done, and the
orchestrator reaps it with ``os.wait4``; its user+sys time, less what the
process had used before its timed part began (interpreter start, imports,
listen; it says how much), divided by the round trips or connections, is
what Trio and the implementation cost per message or connection.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import platform
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import IO, Any

import trio

HOST = "127.0.0.1"
BACKLOG = 4096
MESSAGE = 64
IDLE_CONNECT_BATCH = 100
RECEIVE_SIZE = 65536
IMPLS = ("SocketStream", "floor")
ROWS = ("pingpong-same", "pingpong-cross", "churn", "churn-node", "idle")
#: Seconds a run may take before it is called hung.
TIMEOUT = 120.0


class FloorError(Exception):
    """A run that did not do what it measures."""


# --- what every role shares ----------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """This process's user+sys time so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def leave() -> None:
    """End the process now: no interpreter teardown in its CPU time (the
    kernel closes the sockets)."""
    sys.stdout.flush()
    os._exit(0)


def hold_then_leave() -> None:
    """The idle client: hold the connections until the orchestrator closes our stdin."""
    while sys.stdin.buffer.read(65536):
        pass
    leave()


class Tally:
    """A server's connections: ``ACCEPTED n`` once it holds the idle row's
    *n*; the process ends once *expect* connections have finished."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.idle: int = cfg["idle"]
        self.expect: int = cfg["expect"]
        self.accepted = 0
        self.finished = 0

    def accept(self) -> None:
        self.accepted += 1
        if self.accepted == self.idle:
            say(f"ACCEPTED {self.accepted}")

    def finish(self) -> None:
        self.finished += 1
        if self.finished == self.expect:
            leave()


def latency_result(rounds: int, elapsed: float, latencies: list[int]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"rate": rounds / elapsed, "p50_us": ordered[len(ordered) // 2] / 1000}


def check_echoed(echoed: int, count: int) -> None:
    if echoed != count:
        raise FloorError(f"{echoed} of {count} connections echoed the byte")


# --- SocketStream: what peer_trio.py does ----------------------------------


async def stream_server(cfg: dict[str, Any]) -> None:
    tally = Tally(cfg)

    async def handler(stream: trio.SocketStream) -> None:
        tally.accept()
        try:
            while data := await stream.receive_some(RECEIVE_SIZE):
                await stream.send_all(data)
            await stream.aclose()
        except trio.BrokenResourceError:
            pass
        tally.finish()

    async with trio.open_nursery() as nursery:
        serve_tcp = functools.partial(trio.serve_tcp, handler, 0, host=HOST, backlog=BACKLOG)
        listeners: list[trio.SocketListener] = await nursery.start(serve_tcp)
        say(f"READY {listeners[0].socket.getsockname()[1]} {cpu_seconds()}")


async def stream_pingpong(port: int, rounds: int) -> dict[str, float]:
    message = b"p" * MESSAGE
    latencies: list[int] = []
    async with await trio.open_tcp_stream(HOST, port) as sock:  # TCP_NODELAY by default
        start = time.perf_counter()
        for _ in range(rounds):
            sent_at = time.perf_counter_ns()
            await sock.send_all(message)
            pending = len(message)
            while pending:
                data = await sock.receive_some(pending)
                if not data:
                    raise FloorError("server closed during ping-pong")
                pending -= len(data)
            latencies.append(time.perf_counter_ns() - sent_at)
        elapsed = time.perf_counter() - start
    return latency_result(rounds, elapsed, latencies)


async def stream_churn(port: int, count: int) -> dict[str, float]:
    echoed = 0
    start = time.perf_counter()
    for _ in range(count):
        async with await trio.open_tcp_stream(HOST, port) as sock:
            await sock.send_all(b"x")
            echoed += await sock.receive_some(1) == b"x"
            await sock.send_eof()
            while await sock.receive_some(RECEIVE_SIZE):
                pass
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    return {"rate": count / elapsed}


async def stream_churn_node(port: int, count: int) -> dict[str, float]:
    echoed = 0
    start = time.perf_counter()
    for _ in range(count):
        async with await trio.open_tcp_stream(HOST, port) as sock:
            await sock.send_all(b"x")
            echoed += await sock.receive_some(1) == b"x"
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    return {"rate": count / elapsed}


async def stream_idle(port: int, connections: int) -> None:
    held: list[trio.SocketStream] = []

    async def open_one() -> None:
        held.append(await trio.open_tcp_stream(HOST, port))

    await _in_batches(open_one, connections)
    say(f"CONNECTED {len(held)}")
    hold_then_leave()


# --- floor: stdlib sockets and trio.lowlevel waits -------------------------


async def receive(sock: socket.socket, size: int) -> bytes:
    """``sock.recv``, waiting for readability only when it would block."""
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


async def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.send`` until all went, waiting for writability only when it would block."""
    while True:
        try:
            sent = sock.send(data)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        if sent == len(data):
            return
        data = data[sent:]


def nonblocking(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def connect(port: int) -> socket.socket:
    sock = nonblocking(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    error = sock.connect_ex((HOST, port))
    if error == errno.EINPROGRESS:
        await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        sock.close()
        raise OSError(error, os.strerror(error))
    return sock


async def floor_echo(sock: socket.socket, tally: Tally) -> None:
    tally.accept()
    with sock:
        try:
            while data := await receive(sock, RECEIVE_SIZE):
                await send_all(sock, data)
        except ConnectionError:
            pass
    tally.finish()


async def floor_server(cfg: dict[str, Any]) -> None:
    tally = Tally(cfg)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as trio's listeners
        listener.bind((HOST, 0))
        listener.listen(BACKLOG)
        listener.setblocking(False)
        say(f"READY {listener.getsockname()[1]} {cpu_seconds()}")
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(listener)
                    continue
                nursery.start_soon(floor_echo, nonblocking(sock), tally)


async def floor_pingpong(port: int, rounds: int) -> dict[str, float]:
    message = b"p" * MESSAGE
    latencies: list[int] = []
    with await connect(port) as sock:
        start = time.perf_counter()
        for _ in range(rounds):
            sent_at = time.perf_counter_ns()
            await send_all(sock, message)
            pending = len(message)
            while pending:
                data = await receive(sock, pending)
                if not data:
                    raise FloorError("server closed during ping-pong")
                pending -= len(data)
            latencies.append(time.perf_counter_ns() - sent_at)
        elapsed = time.perf_counter() - start
    return latency_result(rounds, elapsed, latencies)


async def floor_churn(port: int, count: int) -> dict[str, float]:
    echoed = 0
    start = time.perf_counter()
    for _ in range(count):
        with await connect(port) as sock:
            await send_all(sock, b"x")
            echoed += await receive(sock, 1) == b"x"
            sock.shutdown(socket.SHUT_WR)
            while await receive(sock, RECEIVE_SIZE):
                pass
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    return {"rate": count / elapsed}


async def floor_churn_node(port: int, count: int) -> dict[str, float]:
    echoed = 0
    start = time.perf_counter()
    for _ in range(count):
        with await connect(port) as sock:
            await send_all(sock, b"x")
            echoed += await receive(sock, 1) == b"x"
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    return {"rate": count / elapsed}


async def floor_idle(port: int, connections: int) -> None:
    held: list[socket.socket] = []

    async def open_one() -> None:
        held.append(await connect(port))

    await _in_batches(open_one, connections)
    say(f"CONNECTED {len(held)}")
    hold_then_leave()


# --- the roles ---------------------------------------------------------------


async def _in_batches(open_one: Callable[[], Awaitable[None]], connections: int) -> None:
    """*connections* calls of *open_one*, ``IDLE_CONNECT_BATCH`` at a time."""
    for done in range(0, connections, IDLE_CONNECT_BATCH):
        async with trio.open_nursery() as batch:
            for _ in range(min(IDLE_CONNECT_BATCH, connections - done)):
                batch.start_soon(open_one)


Measure = Callable[[int, int], Awaitable[dict[str, float]]]
Hold = Callable[[int, int], Awaitable[None]]
#: Each implementation's clients, by row (``pingpong-*``: ``pingpong``).
CLIENTS: dict[str, dict[str, Measure]] = {
    "SocketStream": {
        "pingpong": stream_pingpong,
        "churn": stream_churn,
        "churn-node": stream_churn_node,
    },
    "floor": {"pingpong": floor_pingpong, "churn": floor_churn, "churn-node": floor_churn_node},
}
IDLE_CLIENTS: dict[str, Hold] = {"SocketStream": stream_idle, "floor": floor_idle}
SERVERS = {"SocketStream": stream_server, "floor": floor_server}


async def client_role(cfg: dict[str, Any]) -> None:
    impl: str = cfg["impl"]
    row: str = cfg["row"]
    if row == "idle":
        await IDLE_CLIENTS[impl](cfg["port"], cfg["idle"])
        return
    cpu_start = cpu_seconds()
    values = await CLIENTS[impl][row.removesuffix("-same").removesuffix("-cross")](
        cfg["port"], cfg["count"]
    )
    say("RESULT " + json.dumps({**values, "cpu_start": cpu_start}))
    leave()


def run_role(role: str, config: str) -> None:
    """Run one role (``server`` or ``client``) in this process, a child of the orchestrator."""
    cfg: dict[str, Any] = json.loads(config)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if cfg["cpus"]:
        os.sched_setaffinity(0, cfg["cpus"])
    trio.run(SERVERS[cfg["impl"]] if role == "server" else client_role, cfg)


# --- the orchestrator --------------------------------------------------------


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Sizes:
    runs: int
    rounds: int
    churn: int
    idle: int
    quick: bool


class Child:
    """A role's process: its stdout read line by line with a deadline."""

    def __init__(self, role: str, cfg: dict[str, Any], errors: IO[bytes]) -> None:
        self.name = f"{cfg['impl']} {role}"
        self.errors = errors
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), role, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        self.buffer = b""

    def expect(self, prefix: str) -> str:
        """The rest of the first line starting with *prefix*."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                if line.startswith(prefix + " "):
                    return line[len(prefix) + 1 :]
                if line:
                    progress(f"    ({self.name}) {line}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FloorError(f"{self.name}: no {prefix} within {TIMEOUT:.0f} s{self.tail()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise FloorError(f"{self.name} exited before {prefix}{self.tail()}")
                self.buffer += chunk

    def reap_cpu(self) -> float:
        """Wait for the process to exit (it exits by itself); its user+sys seconds."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                raise FloorError(f"{self.name} did not exit{self.tail()}")
            time.sleep(0.001)
        self.proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            raise FloorError(f"{self.name} exited with status {code}{self.tail()}")
        return usage.ru_utime + usage.ru_stime

    def tail(self) -> str:
        self.errors.flush()
        self.errors.seek(0)
        text = self.errors.read().decode(errors="replace").strip()
        return ("\n" + "\n".join(text.splitlines()[-15:])) if text else ""

    def close(self) -> None:
        if self.proc.returncode is None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@contextlib.contextmanager
def spawned(role: str, cfg: dict[str, Any]) -> Generator[Child, None, None]:
    with tempfile.TemporaryFile() as errors:
        child = Child(role, cfg, errors)
        try:
            yield child
        finally:
            child.close()


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise FloorError(f"no VmRSS for pid {pid}")


def settled_rss_kib(pid: int, quick: bool) -> int:
    """VmRSS once it stops moving (two readings 0.2 s apart within 0.5 %),
    as ``bench_run.py`` reads it; a single reading in a smoke run."""
    previous = vm_rss_kib(pid)
    if quick:
        return previous
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = vm_rss_kib(pid)
        if abs(current - previous) <= previous * 0.005:
            return current
        previous = current
    return previous


def pinning(row: str, cpus: list[int]) -> tuple[list[int] | None, list[int] | None]:
    """The server's and the client's CPUs."""
    if row == "pingpong-same":
        return [cpus[0]], [cpus[0]]
    if row == "pingpong-cross":
        return [cpus[0]], [cpus[1]]
    return None, None


def measure(row: str, impl: str, sizes: Sizes, cpus: list[int]) -> dict[str, float]:
    """One run of *row* by *impl*: the rate (``rate``) and CPU µs per message
    or connection (``server_us``, ``client_us``), or ``kib_per_conn``."""
    count = sizes.rounds if row.startswith("pingpong") else sizes.churn
    idle = sizes.idle if row == "idle" else 0
    server_cpus, client_cpus = pinning(row, cpus)
    common = {"impl": impl, "row": row, "count": count, "idle": idle}
    # the server exits once its connections (ping-pong: one) have finished
    expect = 1 if row.startswith("pingpong") else 0 if idle else count
    server_cfg = {**common, "cpus": server_cpus, "expect": expect}
    with spawned("server", server_cfg) as server:
        port_text, server_start = server.expect("READY").split()
        client_cfg = {**common, "cpus": client_cpus, "port": int(port_text)}
        if row == "idle":
            before = settled_rss_kib(server.proc.pid, sizes.quick)
        with spawned("client", client_cfg) as client:
            if row == "idle":
                connected = int(client.expect("CONNECTED"))
                server.expect("ACCEPTED")
                after = settled_rss_kib(server.proc.pid, sizes.quick)
                return {"kib_per_conn": (after - before) / connected}
            values: dict[str, float] = json.loads(client.expect("RESULT"))
            client_cpu = client.reap_cpu() - values.pop("cpu_start")
        server_cpu = server.reap_cpu() - float(server_start)
    return {**values, "server_us": server_cpu / count * 1e6, "client_us": client_cpu / count * 1e6}


def describe(row: str, values: dict[str, float]) -> str:
    if row == "idle":
        return f"{values['kib_per_conn']:.2f} KiB/conn"
    unit = "rt/s" if row.startswith("pingpong") else "conn/s"
    p50 = f", p50 {values['p50_us']:.1f} µs" if "p50_us" in values else ""
    return (
        f"{values['rate']:,.0f} {unit}{p50}; CPU µs per {unit[:-2]}: "
        f"server {values['server_us']:.1f}, client {values['client_us']:.1f}"
    )


Results = dict[str, dict[str, list[dict[str, float]]]]


def run_all(sizes: Sizes, cpus: list[int]) -> Results:
    rows = [row for row in ROWS if row != "pingpong-cross" or len(cpus) > 1]
    results: Results = {}
    for row in rows:
        for run in range(1, sizes.runs + 1):
            for impl in IMPLS:  # interleaved: A B A B ...
                values = measure(row, impl, sizes, cpus)
                results.setdefault(row, {}).setdefault(impl, []).append(values)
                progress(f"[{row}] {impl} run {run}: {describe(row, values)}")
    return results


# --- the report ----------------------------------------------------------------

UNITS = {"pingpong": "round trips/s", "churn": "connections/s", "idle": "KiB/conn"}


def _figures(runs: list[dict[str, float]], key: str) -> tuple[list[float], float]:
    each = [values[key] for values in runs]
    return each, statistics.median(each)


def _number(value: float, key: str) -> str:
    return f"{value:.2f}" if key == "kib_per_conn" else f"{value:,.0f}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return [render(header), rule, *map(render, lines)]


def report(results: Results, sizes: Sizes, cpus: list[int], load: tuple[float, ...]) -> str:
    out = [
        "# Trio's floor",
        "",
        f"trio {trio.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"CPUs {cpus}, load average at start {', '.join(f'{x:.2f}' for x in load)}.",
        f"{sizes.runs} run(s) per implementation, interleaved; ping-pong {sizes.rounds:,} "
        f"round trips of {MESSAGE} bytes, churn {sizes.churn:,} connections, idle "
        f"{sizes.idle:,} connections. Medians; ratio = floor / SocketStream "
        "(idle: lower is better).",
        "",
    ]
    lines: list[list[str]] = []
    for row, by_impl in results.items():
        key = "kib_per_conn" if row == "idle" else "rate"
        medians = {}
        for impl in IMPLS:
            each, medians[impl] = _figures(by_impl[impl], key)
            ratio = f"{medians['floor'] / medians['SocketStream']:.2f}x" if impl == "floor" else ""
            name = row if impl == IMPLS[0] else ""
            unit = UNITS[row.split("-")[0]] if impl == IMPLS[0] else ""
            runs = " ".join(_number(value, key) for value in each)
            lines.append([name, unit, impl, runs, _number(medians[impl], key), ratio])
    out += _table(["row", "unit", "impl", "runs", "median", "floor/SocketStream"], lines)
    out += [
        "",
        "CPU time (user+sys, os.wait4) per round trip (ping-pong) or connection (churn), µs,",
        "less each process's CPU before its timed part; median (runs).",
        "",
    ]
    lines = []
    for row, by_impl in results.items():
        if row == "idle":
            continue
        for impl in IMPLS:
            cells = [row if impl == IMPLS[0] else "", impl]
            for key in ("server_us", "client_us"):
                each, median = _figures(by_impl[impl], key)
                cells.append(f"{median:.1f} ({' '.join(f'{v:.1f}' for v in each)})")
            both = statistics.median(v["server_us"] + v["client_us"] for v in by_impl[impl])
            cells.append(f"{both:.1f}")
            lines.append(cells)
    out += _table(["row", "impl", "server", "client", "server+client"], lines)
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if argv[:1] in (["server"], ["client"]):
        run_role(argv[0], argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, 1 run")
    parser.add_argument("--runs", type=int, default=5, help="runs per implementation (5)")
    parser.add_argument("--rounds", type=int, help="ping-pong round trips (20,000)")
    parser.add_argument("--churn", type=int, help="churn connections (5,000)")
    parser.add_argument("--idle", type=int, help="idle connections (10,000)")
    args = parser.parse_args(argv)
    default = (300, 200, 500) if args.quick else (20_000, 5_000, 10_000)
    sizes = Sizes(
        runs=1 if args.quick else args.runs,
        rounds=args.rounds or default[0],
        churn=args.churn or default[1],
        idle=args.idle or default[2],
        quick=args.quick,
    )
    cpus = sorted(os.sched_getaffinity(0))
    load = os.getloadavg()
    results = run_all(sizes, cpus)
    print(report(results, sizes, cpus, load), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
