"""Real network faults: random loss, a slow link, injected resets and a
blackholed peer, between this process and a peer in a network namespace.

Each test makes two namespaces and deletes them in its fixture's finalizer
(also when the test fails): the peer's, and a "wire" between it and the root
namespace (where the tests run): a bridge with a veth pair to each side, all
on a private ``10.231.x.y/30``. The peer (``netns_peer.py``: stdlib sockets,
no trio_netstream) runs in its namespace. Loss (nftables ``numgen random``)
and bandwidth limits (``tbf``) act on the wire's bridge, so both ends see
real loss; resets (``reject with tcp reset``) and the blackhole (``drop``)
act in the peer's namespace. No rule is added in the root namespace; the only
root-side settings belong to the test's own veth and go away with it:
``gso_max_segs 1`` (so nftables sees and drops single MTU-sized segments, not
64 KiB GSO bursts) and ``rto_min 10ms`` on the link's route (a lost tail is
retransmitted in milliseconds, as on a LAN, instead of 200 ms, which keeps
the run short; the loss itself is untouched).

The module is skipped only when namespaces cannot be made here (not root, no
CAP_NET_ADMIN) or ``ip`` / ``nft`` / ``tc`` are missing. Tests print their
figures (run with ``-s``); none asserts a duration.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from netstream_testing import KiB, MiB, sha

import trio_netstream as net
from trio_netstream import StreamStateError

from .netns_peer import pattern

PEER = Path(__file__).with_name("netns_peer.py")
#: The events that are not data or write flow: the shape of a connection's life.
LIFE = ("connect", "secure", "end", "timeout", "error", "close")


def _netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or ``None`` if they can."""
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"the {tool!r} binary is missing"
    name = f"tns-probe-{os.getpid()}"
    try:
        added = subprocess.run(
            ["ip", "netns", "add", name], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` failed: {exc}"
    if added.returncode != 0:
        return f"`ip netns add` is not permitted (needs root / CAP_NET_ADMIN): {added.stderr}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


_UNAVAILABLE = _netns_unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))

_counter = itertools.count()


def _sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=20)


class Netns:
    """The peer's namespace, reached from here through a "wire" namespace.

    ``host_if`` (here, ``host_addr``) is cabled to a bridge in the wire
    namespace, and so is ``peer_if`` in the peer namespace (``peer_addr``, the
    same /30). Loss and bandwidth limits act on the bridge, so both ends see
    real loss on the wire (a packet dropped by the sender's own stack would
    just be sent again at once); resets and the blackhole act in the peer's
    namespace, as the peer's firewall would.
    """

    def __init__(self) -> None:
        index = next(_counter)
        pid = os.getpid()
        self.name = f"tns-{pid}-{index}-peer"
        self.wire = f"tns-{pid}-{index}-wire"
        # Interface names: 15 characters at most; the whole pid (7 digits at
        # most) keeps them apart from a parallel run's.
        tag = f"tn{pid}"
        self.host_if, self.peer_if = f"{tag}h{index}", f"{tag}p{index}"
        self.wire_host_if, self.wire_peer_if = f"{tag}a{index}", f"{tag}b{index}"
        used = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
        for step in range(16_384):  # the /30s of 10.231.0.0/16, from a per-run start
            n = (pid * 97 + index * 13 + step) % 16_384
            prefix, base = f"10.231.{n // 64}", n % 64 * 4
            if f"{prefix}.{base + 1}/" not in used:
                break
        self.subnet = f"{prefix}.{base}/30"
        self.host_addr, self.peer_addr = f"{prefix}.{base + 1}", f"{prefix}.{base + 2}"

    def create(self) -> None:
        wire, peer = ("ip", "-n", self.wire), ("ip", "-n", self.name)
        _sh("ip", "netns", "add", self.wire)
        _sh("ip", "netns", "add", self.name)
        _sh(
            "ip", "link", "add", self.host_if, "type", "veth",
            "peer", "name", self.wire_host_if, "netns", self.wire,
        )  # fmt: skip
        _sh(
            *wire, "link", "add", self.wire_peer_if, "type", "veth",
            "peer", "name", self.peer_if, "netns", self.name,
        )  # fmt: skip
        _sh(*wire, "link", "add", "br0", "type", "bridge")
        for port in (self.wire_host_if, self.wire_peer_if):
            _sh(*wire, "link", "set", port, "master", "br0", "up")
        _sh(*wire, "link", "set", "br0", "up")
        _sh("ip", "link", "set", self.host_if, "gso_max_segs", "1")
        _sh(*peer, "link", "set", self.peer_if, "gso_max_segs", "1")
        _sh("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
        _sh(*peer, "addr", "add", f"{self.peer_addr}/30", "dev", self.peer_if)
        _sh("ip", "link", "set", self.host_if, "up")
        _sh(*peer, "link", "set", self.peer_if, "up")
        _sh(*peer, "link", "set", "lo", "up")
        _sh("ip", "route", "replace", self.subnet, "dev", self.host_if, "rto_min", "10ms")
        _sh(*peer, "route", "replace", self.subnet, "dev", self.peer_if, "rto_min", "10ms")

    def delete(self) -> None:
        # Deleting the namespaces deletes their veth ends, and with them the
        # pairs, the root side's route. The root's link is deleted too in
        # case a namespace was never made.
        for command in (
            ("ip", "netns", "del", self.name),
            ("ip", "netns", "del", self.wire),
            ("ip", "link", "del", self.host_if),
        ):
            subprocess.run(command, capture_output=True, timeout=20)
        left = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=20
        ).stdout.split()
        assert self.name not in left and self.wire not in left, f"namespaces left: {left}"

    def inside(self, *command: str, namespace: str | None = None) -> list[str]:
        return ["ip", "netns", "exec", namespace or self.name, *command]

    async def nft(self, script: str, *, namespace: str | None = None) -> None:
        """Apply an nftables script in the peer's namespace (or *namespace*)."""
        await trio.run_process(
            self.inside("nft", "-f", "-", namespace=namespace),
            stdin=script.encode(),
            capture_stderr=True,
        )

    async def loss(self, percent: int) -> None:
        """Lose *percent* % of the IPv4 packets on the wire, in each direction."""
        rules = "".join(
            f'  iifname "{port}" ether type ip counter\n'
            f'  iifname "{port}" ether type ip numgen random mod 100 < {percent} counter drop\n'
            for port in (self.wire_host_if, self.wire_peer_if)
        )
        chain = f"chain forward {{ type filter hook forward priority 0; policy accept;\n{rules}}}"
        await self.nft(f"table bridge tns_loss {{\n{chain}\n}}", namespace=self.wire)

    async def loss_counters(self) -> dict[str, tuple[int, int]]:
        """Packets ``(seen, lost)`` on the wire, ``"to_peer"`` and ``"from_peer"``."""
        listing = await trio.run_process(
            self.inside("nft", "-j", "list", "table", "bridge", "tns_loss", namespace=self.wire),
            capture_stdout=True,
        )
        counts = [
            expr["counter"]["packets"]
            for item in json.loads(listing.stdout)["nftables"]
            if "rule" in item
            for expr in item["rule"]["expr"]
            if "counter" in expr
        ]
        return {"to_peer": (counts[0], counts[1]), "from_peer": (counts[2], counts[3])}

    async def reject_with_reset(self, port: int) -> None:
        """Answer every packet to the peer's *port* with a TCP RST (forged by
        the peer namespace's kernel with the peer's address, in the sequence
        space of the packet that triggered it)."""
        await self.nft(
            "table inet tns_reset {\n"
            " chain input { type filter hook input priority 0; policy accept;\n"
            f"  tcp dport {port} reject with tcp reset\n }}\n}}"
        )

    async def blackhole(self) -> None:
        """Drop every packet that reaches the peer's address: nothing answers."""
        await self.nft(
            "table inet tns_blackhole {\n"
            " chain input { type filter hook input priority -10; policy accept;\n"
            f"  ip daddr {self.peer_addr} drop\n }}\n}}"
        )

    async def limit(self, rate: str) -> None:
        """A token-bucket bandwidth limit on the wire, in each direction."""
        qdisc = ("root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")
        for port in (self.wire_host_if, self.wire_peer_if):
            await trio.run_process(
                self.inside("tc", "qdisc", "add", "dev", port, *qdisc, namespace=self.wire)
            )

    async def peer_retransmits(self) -> int:
        """TCP segments the peer's namespace has retransmitted so far."""
        snmp = await trio.run_process(self.inside("cat", "/proc/net/snmp"), capture_stdout=True)
        header, values = (
            line.split() for line in snmp.stdout.decode().splitlines() if line.startswith("Tcp:")
        )
        return int(dict(zip(header, values, strict=True))["RetransSegs"])


def our_retransmits(stream: net.Stream) -> int:
    """Segments this side's socket has retransmitted (``tcpi_total_retrans``)."""
    sock = stream.socket
    if sock is None:
        return 0
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 100)[0])


@pytest.fixture
def netns() -> Iterator[Netns]:
    ns = Netns()
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()


class Peer:
    """The peer process in the namespace, and its JSON lines."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()
        self.port = 0

    async def line(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            chunk = await stdout.receive_some()
            if not chunk:
                code = await self.process.wait()
                raise AssertionError(f"the peer exited ({code}) before printing a line")
            self._buffer += chunk
        line, _, rest = self._buffer.partition(b"\n")
        self._buffer = bytearray(rest)
        return dict(json.loads(line))


@asynccontextmanager
async def run_peer(ns: Netns, *args: str) -> AsyncIterator[Peer]:
    """Start ``netns_peer.py`` in *ns*; killed and reaped on the way out."""
    process = await trio.lowlevel.open_process(
        ns.inside(sys.executable, str(PEER), *args), stdout=subprocess.PIPE
    )
    try:
        peer = Peer(process)
        peer.port = (await peer.line())["port"]
        yield peer
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


class Pump:
    """Node's write loop: write until ``write()`` returns ``False``, go on at
    ``'drain'``, then ``end()`` once everything is written."""

    def __init__(self, stream: net.Stream, data: bytes, chunk: int = 64 * KiB) -> None:
        self.stream = stream
        self.data = data
        self.chunk = chunk
        self.offset = 0
        self.refused = 0  # write() returned False and the pump waited for 'drain'
        self.drains = 0
        self.done = trio.Event()
        stream.on("connect", self._pump)
        stream.on("drain", self._on_drain)

    def _on_drain(self) -> None:
        self.drains += 1
        self._pump()

    def _pump(self) -> None:
        while self.offset < len(self.data):
            piece = self.data[self.offset : self.offset + self.chunk]
            self.offset += len(piece)
            accepted = self.stream.write(piece)
            if self.offset == len(self.data):
                break
            if not accepted:
                self.refused += 1
                return
        self.stream.end()
        self.done.set()


def life(events: list[Any]) -> list[Any]:
    """The events without ``'data'`` and ``'drain'`` (whose count depends on
    how the kernel splits the bytes)."""
    return [event for event in events if event not in ("data", "drain")]


# -- random loss ------------------------------------------------------------------------


@pytest.mark.slow
async def test_16mib_each_way_survives_10_percent_loss(netns: Netns, record: Any) -> None:
    """16 MiB sent and 16 MiB received at the same time, with 10% of the
    packets dropped in each direction, arrive intact and the connection ends
    gracefully: a user relies on TCP's recovery reaching them as plain data."""
    size = 16 * MiB
    upload, download = pattern(size, 1), pattern(size, 2)
    with trio.fail_after(90):
        await netns.loss(10)
        async with run_peer(netns, "--send", str(size), "--seed", "2") as peer:
            stream = net.create_connection(peer.port, netns.peer_addr)
            rec = record(stream)
            pump = Pump(stream, upload)
            ours = [0]  # sampled while the socket is open: a lower bound

            def sample(*_: object) -> None:
                ours[0] = max(ours[0], our_retransmits(stream))

            stream.on("drain", sample)
            stream.on("end", sample)
            started = time.perf_counter()
            async with stream:
                pass
            elapsed = time.perf_counter() - started
            result = await peer.line()
        counters = await netns.loss_counters()
        theirs = await netns.peer_retransmits()

    assert life(rec.events) == ["connect", "end", ("close", False)]
    assert "data" not in rec.events[rec.events.index("end") :]
    assert pump.done.is_set()
    assert pump.drains == pump.refused > 0
    assert len(rec.data) == size
    assert sha(rec.data) == sha(download) == result["sent_sha256"]
    assert result["received"] == size
    assert result["received_sha256"] == sha(upload)
    assert stream.bytes_written == size
    assert stream.ready_state == "closed"
    print(
        f"\n10% loss each way: {2 * size / MiB:.0f} MiB moved (16 MiB each way) in "
        f"{elapsed:.2f} s; lost {counters['to_peer'][1]}/{counters['to_peer'][0]} packets "
        f"towards the peer and {counters['from_peer'][1]}/{counters['from_peer'][0]} from it; "
        f"retransmitted: here >= {ours[0]}, by the peer {theirs} segments"
    )


async def test_tls_handshake_and_1mib_each_way_survive_10_percent_loss(
    netns: Netns, record: Any
) -> None:
    """TLS from the first byte over a lossy link: the handshake completes,
    1 MiB goes each way intact, and close_notify ends it gracefully."""
    size = 1 * MiB
    upload, download = pattern(size, 3), pattern(size, 4)
    ca = trustme.CA()
    cert = ca.issue_cert(netns.peer_addr)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(60):
        await netns.loss(10)
        with cert.private_key_and_cert_chain_pem.tempfile() as pem:
            async with run_peer(
                netns, "--send", str(size), "--seed", "4", "--order", "recv-first",
                "--tls", pem, pem,
            ) as peer:  # fmt: skip
                stream = net.create_connection(peer.port, netns.peer_addr, ssl=client_context)
                rec = record(stream, events=LIFE)
                received = bytearray()
                started = time.perf_counter()
                async with stream:
                    stream.end(upload)
                    async for chunk in stream:
                        assert isinstance(chunk, bytes)
                        received += chunk
                elapsed = time.perf_counter() - started
                result = await peer.line()
        counters = await netns.loss_counters()

    assert rec.events == ["connect", "secure", "end", ("close", False)]
    assert sha(bytes(received)) == sha(download) == result["sent_sha256"]
    assert result["received"] == size
    assert result["received_sha256"] == sha(upload)
    print(
        f"\nTLS under 10% loss: 2 MiB moved in {elapsed:.2f} s; lost "
        f"{counters['to_peer'][1] + counters['from_peer'][1]} of "
        f"{counters['to_peer'][0] + counters['from_peer'][0]} packets"
    )


# -- a slow link ------------------------------------------------------------------------


async def test_bandwidth_limit_backpressure_and_integrity(netns: Netns, record: Any) -> None:
    """Against a 30 mbit/s link, Node's write loop (write until ``False``,
    go on at ``'drain'``) is held back and resumed, an ``async for`` reader
    gets every byte, and the connection ends gracefully. The writes are 4 KiB,
    under the 16 KiB high-water mark, so ``False`` means the kernel (the slow
    link behind it) stopped taking bytes."""
    size = 6 * MiB
    upload, download = pattern(size, 5), pattern(size, 6)
    with trio.fail_after(30):
        await netns.limit("30mbit")
        async with run_peer(netns, "--send", str(size), "--seed", "6") as peer:
            stream = net.create_connection(peer.port, netns.peer_addr)
            rec = record(stream, events=("connect", "end", "drain", "timeout", "error", "close"))
            pump = Pump(stream, upload, chunk=4 * KiB)
            received = bytearray()
            started = time.perf_counter()
            async with stream:
                async for chunk in stream:
                    assert isinstance(chunk, bytes)
                    received += chunk
            elapsed = time.perf_counter() - started
            result = await peer.line()

    assert life(rec.events) == ["connect", "end", ("close", False)]
    assert pump.done.is_set()
    assert pump.drains == pump.refused > 0
    assert sha(bytes(received)) == sha(download) == result["sent_sha256"]
    assert result["received"] == size
    assert result["received_sha256"] == sha(upload)
    print(
        f"\n30 mbit/s link: {2 * size / MiB:.0f} MiB moved (6 MiB each way) in {elapsed:.2f} s "
        f"({2 * size * 8 / elapsed / 1e6:.1f} mbit/s both ways); write() returned False "
        f"{pump.refused} times, each followed by 'drain'"
    )


# -- injected resets --------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_reset_mid_transfer_is_one_econnreset(
    netns: Netns, record: Any, direction: str
) -> None:
    """An RST arriving in the middle of a transfer (read side or write side)
    gives exactly one ``'error'`` (``ConnectionResetError``, code
    ``ECONNRESET``), then ``'close'(True)``, and no ``'end'``; the stream is
    destroyed."""
    size = 16 * MiB
    if direction == "download":
        peer_args: tuple[str, ...] = ("--send", str(size), "--seed", "7")
    else:
        peer_args = ("--order", "recv-first")  # reads until EOF, never sends FIN
    with trio.fail_after(30):
        await netns.limit("20mbit")  # 16 MiB would take 7 s: the reset lands mid-way
        async with run_peer(netns, *peer_args) as peer:
            stream = net.create_connection(peer.port, netns.peer_addr)
            rec = record(stream)
            pump = Pump(stream, pattern(size, 8)) if direction == "upload" else None
            moved = trio.Event()

            def progress(*_: object) -> None:
                if stream.bytes_read + stream.bytes_written >= 2 * MiB:
                    moved.set()

            stream.on("data", progress)
            stream.on("drain", progress)
            async with stream:
                await moved.wait()
                at_reset = (stream.bytes_read, stream.bytes_written)
                await netns.reject_with_reset(peer.port)
                await stream.wait_closed()

    assert len(rec.events) >= 3
    error = rec.events[-2][1] if rec.events[-2][0] == "error" else None
    drains = ["drain"] * (pump.drains if pump else 0)
    expected_data = ["data"] if direction == "download" else []
    assert rec.events == ["connect", *expected_data, *drains, ("error", error), ("close", True)]
    assert isinstance(error, ConnectionResetError)
    assert error.code == "ECONNRESET"  # type: ignore[attr-defined]  # set by the library
    assert stream.ready_state == "closed"
    assert stream.socket is None
    with pytest.raises(StreamStateError):
        stream.write(b"after the reset")
    if pump is not None:
        assert not pump.done.is_set()
    print(
        f"\nRST injected during the {direction} after {sum(at_reset) / MiB:.1f} MiB: "
        f"{type(error).__name__} {error.code}"  # type: ignore[attr-defined]  # see above
    )


# -- a blackholed destination -----------------------------------------------------------


async def test_blackholed_connect_times_out_and_destroy_closes(netns: Netns, record: Any) -> None:
    """A connect nobody answers (SYN dropped): ``set_timeout`` fires
    ``'timeout'`` while still connecting, and ``destroy()`` from the listener
    closes the stream, with no ``'error'``, as in Node."""
    with trio.fail_after(10):
        await netns.blackhole()
        stream = net.create_connection(80, netns.peer_addr)
        rec = record(stream)
        states: list[str] = []

        def on_timeout() -> None:
            states.append(stream.ready_state)
            stream.destroy()

        stream.set_timeout(300, on_timeout)
        async with stream:
            pass

    assert rec.events == ["timeout", ("close", False)]
    assert states == ["opening"]
    assert stream.ready_state == "closed"


async def test_blackholed_connect_timeout_does_not_close(netns: Netns, record: Any) -> None:
    """``'timeout'`` alone does not close a hanging connect and, without any
    activity, is not emitted again; the user decides (here: ``destroy()``
    later)."""
    with trio.fail_after(10):
        await netns.blackhole()
        stream = net.create_connection(80, netns.peer_addr)
        rec = record(stream)
        timed_out = trio.Event()
        stream.set_timeout(200, timed_out.set)
        async with stream:
            await timed_out.wait()
            await trio.sleep(0.8)  # four more idle periods without any activity
            assert rec.events == ["timeout"]
            assert stream.ready_state == "opening"
            stream.destroy()

    assert rec.events == ["timeout", ("close", False)]
    assert stream.ready_state == "closed"


async def test_blackholed_connect_cancelled_is_destroyed_cleanly(netns: Netns, record: Any) -> None:
    """A connect without a timeout, given up by a Trio deadline: leaving the
    block by cancellation destroys the stream and emits ``'close'``; no hang,
    no leaked socket."""
    with trio.fail_after(10):
        await netns.blackhole()
        stream = net.create_connection(80, netns.peer_addr)
        rec = record(stream)
        with trio.move_on_after(0.5) as deadline:
            async with stream:
                pass  # leaving normally waits for 'close', which never comes

    assert deadline.cancelled_caught
    assert rec.events == [("close", False)]
    assert stream.ready_state == "closed"
    assert stream.socket is None
    gc.collect()  # a socket left open would warn now (warnings are errors)


async def test_partition_mid_transfer_gives_timeout_and_destroy_drops_queue(
    netns: Netns, record: Any
) -> None:
    """The peer becomes unreachable while a large write is queued: writing
    stalls, ``'timeout'`` fires after the idle period, and ``destroy()`` from
    the listener closes the stream (queued bytes dropped, no ``'error'``); the
    ``drain()`` waiting for them raises ``StreamStateError``."""
    with trio.fail_after(10):
        async with run_peer(netns, "--order", "recv-first") as peer:
            stream = net.create_connection(peer.port, netns.peer_addr)
            rec = record(stream)
            stream.on("timeout", stream.destroy)
            connected = trio.Event()
            stream.on("connect", connected.set)
            async with stream:
                await connected.wait()
                await netns.blackhole()
                assert stream.write(pattern(16 * MiB, 9)) is False
                stream.set_timeout(300)
                with pytest.raises(StreamStateError):
                    await stream.drain()

    assert rec.events == ["connect", "timeout", ("close", False)]
    assert stream.ready_state == "closed"
    with pytest.raises(StreamStateError):
        stream.write(b"after destroy")
