"""Happy Eyeballs (RFC 8305), ``connect_timeout`` and ``reset_and_destroy()``
on a real network, next to Node.js v20 doing the same.

Each namespace test makes two network namespaces and deletes them in its
fixture's finalizer (also when the test fails): the client's and the
server's, cabled by a veth pair, each side with an IPv4 address
(``192.0.2.x/24``) and an IPv6 one (``2001:db8::x/64``, a global-scope
prefix, so that RFC 6724 sorts it before IPv4; both documentation ranges,
and private to the namespaces: nothing is added to the root namespace). The
server (``happy_eyeballs_peer.py server``: stdlib, dual-stack) listens on
both; an nftables ``drop`` rule in its namespace black-holes the TCP packets
to its IPv6 address and port, so an IPv6 connect is never answered.

The name ``dual.test`` resolves, in the client's namespace, to the IPv6
address first and the IPv4 one second: ``ip netns exec`` bind-mounts
``/etc/netns/<client namespace>/hosts`` over ``/etc/hosts`` (the file is
removed with the namespaces), and glibc's getaddrinfo puts the IPv6 address
first (it is routed). So both clients, ours (``happy_eyeballs_peer.py
client``, a child process) and Node's (``node/happy_eyeballs.js``), run
inside that namespace and resolve the name through the system resolver, as
any program would; each test of the name asserts that the lookup's first
family is 6. Before the black hole is set, the fixture checks that both
addresses connect (a fresh veth loses its first packets for up to a second:
a SYN lost there would look like the black hole); the rule counts what it
drops, and the tests check that the SYNs did reach it.

Every child process is bounded, stopped by its PID and reaped. The
namespace tests are skipped only when namespaces cannot be made here (not
root, no CAP_NET_ADMIN), the kernel has no IPv6, or ``ip`` / ``nft`` are
missing; the Node tests also when ``node`` is. The times are printed (run
with ``-s``); none is asserted tightly, only far below the kernel's SYN
timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_netstream as net

HERE = Path(__file__).resolve().parent
PEER = HERE / "happy_eyeballs_peer.py"
NODE_JS = HERE.parent / "interop" / "node" / "happy_eyeballs.js"
NODE = shutil.which("node")
NAME = "dual.test"
V4_CLIENT, V4_SERVER = "192.0.2.1", "192.0.2.2"
V6_CLIENT, V6_SERVER = "2001:db8::1", "2001:db8::2"
#: The events of a client's life until it connects (the 'close' after our
#: destroy() is left out).
CONNECTING = ("lookup", "connectionAttempt", "connectionAttemptFailed", "connectionAttemptTimeout")


def _netns_unavailable() -> str | None:
    """Why these namespace tests cannot run here, or ``None`` if they can."""
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"the {tool!r} binary is missing"
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        return "IPv6 is not available in this kernel"
    name = f"hens-probe-{os.getpid()}"
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
needs_netns = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js (the node binary) is not installed")

_counter = itertools.count()


def _sh(*command: str, stdin: str | None = None) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=20, input=stdin, text=True)


class DualStack:
    """The client's namespace and the server's, a veth pair between them,
    the black-holed server on IPv4 and IPv6, and ``dual.test`` in the
    client's ``/etc/hosts``."""

    def __init__(self) -> None:
        index = next(_counter)
        pid = os.getpid()
        self.client = f"hens-{pid}-{index}-client"
        self.server = f"hens-{pid}-{index}-server"
        # Interface names: 15 characters at most; the whole pid keeps them
        # apart from a parallel run's (they live in the namespaces anyway).
        self.client_if, self.server_if = f"he{pid}c{index}", f"he{pid}s{index}"
        self.etc = Path("/etc/netns") / self.client
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def create(self) -> None:
        client, server = ("ip", "-n", self.client), ("ip", "-n", self.server)
        _sh("ip", "netns", "add", self.client)
        _sh("ip", "netns", "add", self.server)
        _sh(
            *client, "link", "add", self.client_if, "type", "veth",
            "peer", "name", self.server_if, "netns", self.server,
        )  # fmt: skip
        for ns, interface, v4, v6 in (
            (client, self.client_if, V4_CLIENT, V6_CLIENT),
            (server, self.server_if, V4_SERVER, V6_SERVER),
        ):
            _sh(*ns, "addr", "add", f"{v4}/24", "dev", interface)
            # nodad: usable at once, not "tentative" for a second or two
            _sh(*ns, "addr", "add", f"{v6}/64", "dev", interface, "nodad")
            _sh(*ns, "link", "set", "lo", "up")
            _sh(*ns, "link", "set", interface, "up")
        for attempt in itertools.count():  # a parallel run may remove an empty /etc/netns
            try:
                self.etc.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                if attempt == 5:
                    raise
        (self.etc / "hosts").write_text(
            f"127.0.0.1 localhost\n::1 localhost\n{V6_SERVER} {NAME}\n{V4_SERVER} {NAME}\n"
        )
        self.process = subprocess.Popen(
            self.inside(sys.executable, str(PEER), "server", namespace=self.server),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        assert ready, "the server printed nothing within 10 s"
        self.port = json.loads(self.process.stdout.readline())["port"]
        # Both paths must work before one is black-holed: a freshly set-up
        # veth drops the first packets (until the kernel's link watch
        # activates its queue, up to a second), and a SYN lost there would
        # make a fallback look like Happy Eyeballs.
        probe = (
            "import socket, sys\n"
            "for host in sys.argv[2:]:\n"
            "    socket.create_connection((host, int(sys.argv[1])), timeout=8).close()\n"
        )
        _sh(*self.inside(sys.executable, "-c", probe, str(self.port), V6_SERVER, V4_SERVER))
        # Every TCP packet to the server's IPv6 address and port (the SYNs) is dropped.
        _sh(
            *self.inside("nft", "-f", "-", namespace=self.server),
            stdin="table inet hens_blackhole {\n"
            " chain input { type filter hook input priority -10; policy accept;\n"
            f"  ip6 daddr {V6_SERVER} tcp dport {self.port} counter drop\n }}\n}}\n",
        )

    def delete(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()
        for namespace in (self.client, self.server):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=20)
        shutil.rmtree(self.etc, ignore_errors=True)
        with suppress(OSError):  # only when empty (another run's directory stays)
            self.etc.parent.rmdir()
        left = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=20
        ).stdout.split()
        assert self.client not in left and self.server not in left, f"namespaces left: {left}"

    def inside(self, *command: str, namespace: str | None = None) -> list[str]:
        return ["ip", "netns", "exec", namespace or self.client, *command]

    async def set_syn_retries(self, retries: int) -> None:
        """``net.ipv4.tcp_syn_retries`` of the client's namespace (a
        per-namespace sysctl, for IPv6 too): how often a SYN is sent again
        before connect() fails with ``ETIMEDOUT`` (1: after about 3 s)."""
        write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
        path = "/proc/sys/net/ipv4/tcp_syn_retries"
        await trio.run_process(self.inside(sys.executable, "-c", write, path, str(retries)))

    async def dropped(self) -> int:
        """IPv6 packets to the server dropped by the black hole so far."""
        listing = await trio.run_process(
            self.inside(
                "nft", "-j", "list", "table", "inet", "hens_blackhole", namespace=self.server
            ),
            capture_stdout=True,
        )
        return sum(
            expr["counter"]["packets"]
            for item in json.loads(listing.stdout)["nftables"]
            if "rule" in item
            for expr in item["rule"]["expr"]
            if "counter" in expr
        )


@pytest.fixture
def dual_stack() -> Iterator[DualStack]:
    ns = DualStack()
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()


async def run_json(command: list[str], *, limit: float) -> dict[str, Any]:
    """Run *command* (killed by its PID if it outlives *limit* seconds, or if
    the test is cancelled) and parse the one JSON line it prints."""
    with trio.fail_after(limit):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    output = done.stdout.decode()
    assert done.returncode == 0, f"{command} exited {done.returncode}: {output}{done.stderr!r}"
    lines = output.splitlines()
    assert len(lines) == 1, output
    result: dict[str, Any] = json.loads(lines[0])
    assert "watchdog" not in result, result
    return result


async def our_client(ns: DualStack, host: str, **options: Any) -> tuple[list[Any], float]:
    """Our client in the client's namespace: its events as tuples
    ``(name, *args)`` (an error as a dict), and the milliseconds it took
    until ``'connect'`` or ``'close'``."""
    command = ns.inside(
        sys.executable, str(PEER), "client", host, str(ns.port), json.dumps(options)
    )
    report = await run_json(command, limit=30)
    events = [(event["event"], *event["args"]) for event in report["events"]]
    ends = [event["ms"] for event in report["events"] if event["event"] in ("connect", "close")]
    return events, ends[0]


def connecting(events: list[Any]) -> list[Any]:
    """The events up to and including ``'connect'``."""
    names = [event[0] for event in events]
    return events[: names.index("connect") + 1]


# -- Happy Eyeballs against a black-holed IPv6 address ---------------------------------


@needs_netns
async def test_happy_eyeballs_falls_back_to_ipv4_after_the_attempt_timeout(
    dual_stack: DualStack,
) -> None:
    """``dual.test`` resolves to the black-holed IPv6 address first: after
    ``auto_select_family_attempt_timeout`` (250 ms) the client reports the
    IPv6 attempt's timeout, starts the IPv4 one and connects, in about
    250 ms, not after the kernel's SYN timeout (over a minute)."""
    port = dual_stack.port
    with trio.fail_after(20):
        events, elapsed = await our_client(dual_stack, NAME)
        dropped = await dual_stack.dropped()

    assert connecting(events) == [
        ("lookup", None, V6_SERVER, 6, NAME),
        ("connectionAttempt", V6_SERVER, port, 6),
        ("connectionAttemptTimeout", V6_SERVER, port, 6),
        ("connectionAttempt", V4_SERVER, port, 4),
        ("connect",),
    ]
    assert events[-1] == ("close", False)
    assert elapsed < 2000
    assert dropped >= 1  # the IPv6 SYN really reached the black hole
    print(f"\nHappy Eyeballs: connected over IPv4 after {elapsed:.0f} ms")


@needs_netns
async def test_without_happy_eyeballs_connect_timeout_ends_the_ipv6_attempt(
    dual_stack: DualStack,
) -> None:
    """``auto_select_family=False``: the IPv6 attempt alone runs until it
    fails, which the kernel would report only after its SYN retries (over a
    minute); ``connect_timeout=3000`` ends it first, with a ``TimeoutError``
    (``ETIMEDOUT``) listing the one attempt, and the IPv4 address is never
    tried."""
    port = dual_stack.port
    with trio.fail_after(20):
        events, elapsed = await our_client(
            dual_stack, NAME, auto_select_family=False, connect_timeout=3000
        )
        dropped = await dual_stack.dropped()

    assert [event[0] for event in events] == ["lookup", "connectionAttempt", "error", "close"]
    assert events[0] == ("lookup", None, V6_SERVER, 6, NAME)
    assert events[1] == ("connectionAttempt", V6_SERVER, port, 6)
    error = events[2][1]
    assert (error["type"], error["code"], error["errno"]) == ("TimeoutError", "ETIMEDOUT", 110)
    assert error["attempts"] == [[V6_SERVER, port, "TimeoutError"]]
    assert events[3] == ("close", True)
    assert 2900 <= elapsed < 6000
    assert dropped >= 2  # the SYN, sent again after 1 s
    print(f"\nauto_select_family=False, connect_timeout=3000: ETIMEDOUT after {elapsed:.0f} ms")


@needs_netns
async def test_without_happy_eyeballs_ipv4_is_tried_after_the_ipv6_attempt_failed(
    dual_stack: DualStack,
) -> None:
    """``auto_select_family=False`` with the namespace's
    ``tcp_syn_retries`` lowered to 1: the IPv6 attempt fails with the
    kernel's ``ETIMEDOUT`` after about 3 s, and only then is IPv4 tried (and
    connects)."""
    port = dual_stack.port
    with trio.fail_after(20):
        await dual_stack.set_syn_retries(1)
        events, elapsed = await our_client(dual_stack, NAME, auto_select_family=False)
        dropped = await dual_stack.dropped()

    assert [event[0] for event in connecting(events)] == [
        "lookup",
        "connectionAttempt",
        "connectionAttemptFailed",
        "connectionAttempt",
        "connect",
    ]
    assert events[0] == ("lookup", None, V6_SERVER, 6, NAME)
    assert events[1] == ("connectionAttempt", V6_SERVER, port, 6)
    assert events[2][:4] == ("connectionAttemptFailed", V6_SERVER, port, 6)
    error = events[2][4]
    assert (error["type"], error["code"], error["errno"]) == ("TimeoutError", "ETIMEDOUT", 110)
    assert events[3] == ("connectionAttempt", V4_SERVER, port, 4)
    assert events[-1] == ("close", False)
    # The SYN was sent again before the kernel gave up (twice with Linux 6.6's
    # tcp_syn_linear_timeouts, which resends at 1 s intervals within the same 3 s).
    assert elapsed > 1000
    assert dropped >= 2
    print(
        f"\nauto_select_family=False, tcp_syn_retries=1: IPv6 failed (ETIMEDOUT), "
        f"connected over IPv4 after {elapsed:.0f} ms"
    )


@needs_netns
@needs_node
async def test_node_happy_eyeballs_gives_the_same_events(dual_stack: DualStack) -> None:
    """Node v20's ``net.connect({autoSelectFamily: true,
    autoSelectFamilyAttemptTimeout: 250})`` in the same namespace gives the
    same attempts, in the same order, as ours. One difference, the SPEC's
    choice: Node emits ``'lookup'`` once per resolved address (here the IPv6
    then the IPv4 one), ours once, with the first address."""
    assert NODE is not None
    port = dual_stack.port
    with trio.fail_after(30):
        ours, our_ms = await our_client(dual_stack, NAME, auto_select_family_attempt_timeout=250)
        report = await run_json(
            dual_stack.inside(NODE, str(NODE_JS), "client", NAME, str(port), "250"), limit=25
        )
    theirs = [(event["event"], *event["args"]) for event in report["events"]]

    assert [event for event in theirs if event[0] == "lookup"] == [
        ("lookup", None, V6_SERVER, 6, NAME),
        ("lookup", None, V4_SERVER, 4, NAME),
    ]
    assert theirs[-1] == ("close", False)
    ours_connecting, theirs_connecting = connecting(ours), connecting(theirs)
    assert [event for event in ours_connecting if event[0] != "lookup"] == [
        event for event in theirs_connecting if event[0] != "lookup"
    ]
    assert [event for event in ours_connecting if event[0] == "lookup"] == [theirs[0]]
    assert [event[0] for event in ours_connecting] == [
        "lookup",
        "connectionAttempt",
        "connectionAttemptTimeout",
        "connectionAttempt",
        "connect",
    ]
    node_ms = report["connect_ms"]
    assert node_ms < 2000
    print(
        f"\nHappy Eyeballs to {NAME}: ours connected after {our_ms:.0f} ms, Node's {node_ms:.0f} ms"
    )


# -- connect_timeout to an IP literal -------------------------------------------------


@needs_netns
async def test_connect_timeout_to_a_blackholed_ipv6_literal(dual_stack: DualStack) -> None:
    """``connect_timeout=500`` to the black-holed IPv6 address itself: one
    attempt, then ``'error'`` (``TimeoutError``, ``ETIMEDOUT``) and
    ``'close'(True)`` after about 500 ms; no ``'lookup'`` for a literal."""
    port = dual_stack.port
    with trio.fail_after(15):
        events, elapsed = await our_client(dual_stack, V6_SERVER, connect_timeout=500)
        dropped = await dual_stack.dropped()

    assert [event[0] for event in events] == ["connectionAttempt", "error", "close"]
    assert events[0] == ("connectionAttempt", V6_SERVER, port, 6)
    error = events[1][1]
    assert (error["type"], error["code"], error["errno"]) == ("TimeoutError", "ETIMEDOUT", 110)
    assert events[2] == ("close", True)
    assert 450 <= elapsed < 3000
    assert dropped == 1
    print(f"\nconnect_timeout=500 to [{V6_SERVER}]: ETIMEDOUT after {elapsed:.0f} ms")


# -- reset_and_destroy() seen by Node ---------------------------------------------------


class NodeServer:
    """A running ``happy_eyeballs.js reset-server``: its JSON lines."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()

    async def line(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            chunk = await stdout.receive_some()
            if not chunk:
                code = await self.process.wait()
                raise AssertionError(f"node exited ({code}) before printing a line")
            self._buffer += chunk
        line, _, rest = self._buffer.partition(b"\n")
        self._buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        assert "watchdog" not in message, message
        return message


@asynccontextmanager
async def node_server() -> AsyncIterator[NodeServer]:
    """Node's reset-server on loopback; killed (by its PID) and reaped on the way out."""
    assert NODE is not None
    with tempfile.TemporaryFile() as stderr:
        process = await trio.lowlevel.open_process(
            [NODE, str(NODE_JS), "reset-server"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            yield NodeServer(process)
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                await process.wait()
                assert process.stdout is not None
                await process.stdout.aclose()


@needs_node
async def test_reset_and_destroy_is_econnreset_for_a_node_peer(record: Any) -> None:
    """``reset_and_destroy()`` on a connected stream: the Node server's
    socket gets ``'error'`` ``ECONNRESET`` (a TCP RST, not a FIN: no
    ``'end'``), and our stream only ``'close'(False)``."""
    with trio.fail_after(15):
        async with node_server() as node:
            port = (await node.line())["listening"]
            stream = net.create_connection(port, "127.0.0.1")
            rec = record(stream)
            connected = trio.Event()
            stream.on("connect", connected.set)
            async with stream:
                await connected.wait()
                assert await node.line() == {"accepted": True}
                stream.reset_and_destroy()
            report = await node.line()

    assert rec.events == ["connect", ("close", False)]
    assert report == {"events": ["error:ECONNRESET", "close:true"], "error_code": "ECONNRESET"}
    assert stream.ready_state == "closed"
