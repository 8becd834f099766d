"""Connecting like a modern client (Happy Eyeballs, family, local address,
every attempt reported, connect_timeout, address(), reset_and_destroy).

Real sockets on loopback; names come from a custom Trio hostname resolver
(``trio.socket.set_custom_hostname_resolver``) that answers with several
addresses, some of which cannot connect here: a closed port refuses at once,
and a listener whose accept queue is full drops SYNs (a black hole). No
test asserts a duration; the event sequences show when each attempt started.
"""

from __future__ import annotations

import errno
import gc
import os
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_netstream as net
from trio_netstream import StreamStateError

TCP = socket.SOCK_STREAM
ATTEMPT_EVENTS = (
    "lookup",
    "connectionAttempt",
    "connectionAttemptFailed",
    "connectionAttemptTimeout",
    "connect",
    "error",
    "close",
)
LIMIT = 10


class Resolver(trio.abc.HostnameResolver):
    """Answers every name with *infos* (filtered by the family asked for),
    as a resolver with several addresses for one name does."""

    def __init__(self, infos: Sequence[tuple[int, Any]]) -> None:
        self.infos = [(family, TCP, 6, "", address) for family, address in infos]
        self.asked: list[int] = []

    async def getaddrinfo(
        self, host: bytes | None, port: bytes | str | int | None, family: int = 0, *_: Any
    ) -> list[Any]:
        await trio.lowlevel.checkpoint()
        self.asked.append(family)
        found = [info for info in self.infos if family in (0, info[0])]
        if not found:  # as glibc says for a name without an address of that family
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return found

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


def v4(host: str, port: int) -> tuple[int, Any]:
    return (socket.AF_INET, (host, port))


def v6(host: str, port: int) -> tuple[int, Any]:
    return (socket.AF_INET6, (host, port, 0, 0))


def open_fds() -> int:
    gc.collect()  # a socket dropped by an earlier test, not yet collected
    return len(os.listdir("/proc/self/fd"))


def _socket_inodes() -> set[int]:
    """The inodes of this process's sockets."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def syn_sent_to(host: str, port: int) -> set[int]:
    """The inodes of this process's sockets still trying to connect to
    *host*:*port* (IPv4; state ``SYN_SENT`` in ``/proc/net/tcp``)."""
    packed = socket.inet_aton(host)[::-1].hex().upper()
    wanted = f"{packed}:{port:04X}"
    ours = _socket_inodes()
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == wanted and fields[3] == "02" and int(fields[9]) in ours:
            found.add(int(fields[9]))
    return found


@contextmanager
def black_hole(host: str = "127.0.0.2") -> Iterator[int]:
    """A port on *host* whose SYNs are dropped: a listener with backlog 0
    whose accept queue is full (filled with connections nobody accepts)."""
    with socket.socket() as listener:
        listener.bind((host, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex((host, port))
                fillers.append(filler)
            yield port
        finally:
            for filler in fillers:
                filler.close()


def closed_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    """A port on *host* where nothing listens: a connection is refused."""
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Accepted(list[Any]):
    """The connections a :func:`listener` accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = trio.Event()

    async def first(self) -> Any:
        with trio.fail_after(LIMIT):
            await self.arrived.wait()
        return self[0]


@asynccontextmanager
async def listener(host: str = "127.0.0.1") -> AsyncIterator[tuple[int, Accepted]]:
    """A raw Trio listener on *host* that accepts and keeps every connection
    (the peers' addresses are in the list)."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    accepted = Accepted()

    async def accept_all() -> None:
        while True:
            stream = await listeners[0].accept()
            accepted.append(stream)
            accepted.arrived.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_all)
            try:
                yield listeners[0].socket.getsockname()[1], accepted
            finally:
                nursery.cancel_scope.cancel()  # this body too: close without waiting
    finally:  # once accept_all() is over: it may be inside accept() (woken, not run yet)
        for stream in accepted:
            stream.socket.close()
        listeners[0].socket.close()


def record(stream: net.Stream) -> list[tuple[Any, ...]]:
    events: list[tuple[Any, ...]] = []
    for name in ATTEMPT_EVENTS:
        stream.on(name, lambda *args, name=name: events.append((name, *args)))
    return events


def shape(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The events with exceptions replaced by their ``.code``."""
    return [
        tuple(getattr(arg, "code", arg) if isinstance(arg, BaseException) else arg for arg in e)
        for e in events
    ]


async def connect_and_close(stream: net.Stream) -> None:
    """Run *stream* until it connects (then end it) or fails."""
    stream.on("connect", stream.destroy)
    with trio.fail_after(LIMIT):
        async with stream:
            pass


# -- Happy Eyeballs ------------------------------------------------------------


async def test_a_black_holed_first_address_is_left_after_one_attempt_delay() -> None:
    baseline = open_fds()
    async with listener("::1") as (good, _):
        with black_hole() as dropped:
            trio.socket.set_custom_hostname_resolver(
                Resolver([v4("127.0.0.2", dropped), v6("::1", good)])
            )
            stream = net.create_connection(80, "dual.test", auto_select_family_attempt_timeout=100)
            events = record(stream)
            times: dict[str, float] = {}
            trying: dict[str, set[int]] = {"fillers": syn_sent_to("127.0.0.2", dropped)}

            def on_attempt(*_: object) -> None:
                times.setdefault("first attempt", trio.current_time())

            def on_connect() -> None:
                times["connect"] = trio.current_time()
                trying["at connect"] = syn_sent_to("127.0.0.2", dropped)

            stream.on("connectionAttempt", on_attempt)
            stream.on("connect", on_connect)
            await connect_and_close(stream)
    assert shape(events) == [
        ("lookup", None, "127.0.0.2", 4, "dual.test"),
        ("connectionAttempt", "127.0.0.2", dropped, 4),
        ("connectionAttemptTimeout", "127.0.0.2", dropped, 4),
        ("connectionAttempt", "::1", good, 6),
        ("connect",),
        ("close", False),
    ]
    assert times["connect"] - times["first attempt"] >= 0.1  # one attempt delay, not less
    # The slow attempt's socket is closed before 'connect': only the queue
    # fillers still try to reach the black hole.
    assert trying["at connect"] == trying["fillers"]
    assert stream.remote_address == "::1"
    assert open_fds() == baseline


async def test_a_refused_first_address_starts_the_next_at_once() -> None:
    async with listener("::1") as (good, _):
        refused = closed_port()
        trio.socket.set_custom_hostname_resolver(
            Resolver([v4("127.0.0.1", refused), v6("::1", good)])
        )
        # A delay the test would notice: the next attempt must not wait for it.
        stream = net.create_connection(80, "dual.test", auto_select_family_attempt_timeout=60_000)
        events = record(stream)
        await connect_and_close(stream)
    assert shape(events) == [
        ("lookup", None, "127.0.0.1", 4, "dual.test"),
        ("connectionAttempt", "127.0.0.1", refused, 4),
        ("connectionAttemptFailed", "127.0.0.1", refused, 4, "ECONNREFUSED"),
        ("connectionAttempt", "::1", good, 6),
        ("connect",),
        ("close", False),
    ]


async def test_every_attempt_failing_gives_the_last_error_with_every_attempt() -> None:
    a, b = closed_port("127.0.0.1"), closed_port("127.0.0.1")
    c = closed_port("::1", socket.AF_INET6)
    # The families interleave: a (v4), c (v6), b (v4).
    trio.socket.set_custom_hostname_resolver(
        Resolver([v4("127.0.0.1", a), v4("127.0.0.1", b), v6("::1", c)])
    )
    stream = net.create_connection(80, "three.test")
    events = record(stream)
    await connect_and_close(stream)
    assert [e[:3] for e in events if e[0] == "connectionAttempt"] == [
        ("connectionAttempt", "127.0.0.1", a),
        ("connectionAttempt", "::1", c),
        ("connectionAttempt", "127.0.0.1", b),
    ]
    assert shape(events)[-2:] == [("error", "ECONNREFUSED"), ("close", True)]
    error = events[-2][1]
    assert isinstance(error, ConnectionRefusedError)
    assert error.errno == errno.ECONNREFUSED
    attempts = error.attempts
    assert [(ip, port) for ip, port, _ in attempts] == [
        ("127.0.0.1", a),
        ("::1", c),
        ("127.0.0.1", b),
    ]
    assert all(isinstance(exc, ConnectionRefusedError) for _, _, exc in attempts)
    assert attempts[-1][2] is error


async def test_one_at_a_time_waits_for_each_address_to_fail() -> None:
    async with listener() as (good, _):
        with black_hole() as dropped:
            trio.socket.set_custom_hostname_resolver(
                Resolver([v4("127.0.0.2", dropped), v4("127.0.0.1", good)])
            )
            stream = net.create_connection(
                80, "two.test", auto_select_family=False, connect_timeout=300
            )
            events = record(stream)
            await connect_and_close(stream)
    # The black hole holds the only attempt until the connect timeout.
    assert shape(events) == [
        ("lookup", None, "127.0.0.2", 4, "two.test"),
        ("connectionAttempt", "127.0.0.2", dropped, 4),
        ("error", "ETIMEDOUT"),
        ("close", True),
    ]
    error = events[2][1]
    assert isinstance(error, TimeoutError)
    assert error.errno == errno.ETIMEDOUT
    assert [(ip, port) for ip, port, _ in error.attempts] == [("127.0.0.2", dropped)]


async def test_one_at_a_time_goes_on_after_a_refusal() -> None:
    async with listener() as (good, _):
        refused = closed_port()
        trio.socket.set_custom_hostname_resolver(
            Resolver([v4("127.0.0.1", refused), v4("127.0.0.1", good)])
        )
        stream = net.create_connection(80, "two.test", auto_select_family=False)
        events = record(stream)
        await connect_and_close(stream)
    assert shape(events) == [
        ("lookup", None, "127.0.0.1", 4, "two.test"),
        ("connectionAttempt", "127.0.0.1", refused, 4),
        ("connectionAttemptFailed", "127.0.0.1", refused, 4, "ECONNREFUSED"),
        ("connectionAttempt", "127.0.0.1", good, 4),
        ("connect",),
        ("close", False),
    ]


async def test_cancelling_the_block_mid_race_cancels_every_attempt() -> None:
    with black_hole() as first, black_hole("127.0.0.3") as second:
        trio.socket.set_custom_hostname_resolver(
            Resolver([v4("127.0.0.2", first), v6("::1", closed_port("::1", socket.AF_INET6))])
        )
        trio.socket.set_custom_hostname_resolver(
            Resolver([v4("127.0.0.2", first), v4("127.0.0.3", second)])
        )
        before = open_fds()
        stream = net.create_connection(80, "holes.test", auto_select_family_attempt_timeout=20)
        events = record(stream)
        with trio.fail_after(LIMIT):
            with trio.move_on_after(0.3):
                async with stream:
                    await trio.sleep_forever()
        assert open_fds() == before
    assert [e[0] for e in events] == [
        "lookup",
        "connectionAttempt",
        "connectionAttemptTimeout",
        "connectionAttempt",
        "close",
    ]
    assert events[-1] == ("close", False)


async def test_destroy_mid_race_closes_every_attempt() -> None:
    with black_hole() as first, black_hole("127.0.0.3") as second:
        trio.socket.set_custom_hostname_resolver(
            Resolver([v4("127.0.0.2", first), v4("127.0.0.3", second)])
        )
        before = open_fds()
        stream = net.create_connection(80, "holes.test", auto_select_family_attempt_timeout=20)
        events = record(stream)
        stream.on("connectionAttemptTimeout", lambda *_: stream.destroy())
        with trio.fail_after(LIMIT):
            async with stream:
                pass
        assert open_fds() == before
    assert [e[0] for e in events] == [
        "lookup",
        "connectionAttempt",
        "connectionAttemptTimeout",
        "close",
    ]


async def test_an_ip_literal_makes_one_attempt_without_a_lookup() -> None:
    async with listener() as (port, _):
        stream = net.create_connection(port, "127.0.0.1")
        events = record(stream)
        await connect_and_close(stream)
    assert shape(events) == [
        ("connectionAttempt", "127.0.0.1", port, 4),
        ("connect",),
        ("close", False),
    ]


async def test_a_unix_path_has_no_attempt_events_and_one_listed_attempt(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody")
    stream = net.create_connection(path)
    events = record(stream)
    await connect_and_close(stream)
    assert shape(events) == [("error", "ENOENT"), ("close", True)]
    error = events[0][1]
    assert [(where, port) for where, port, _ in error.attempts] == [(path, None)]


async def test_a_failed_lookup_is_a_lookup_event_then_the_error() -> None:
    trio.socket.set_custom_hostname_resolver(Resolver([]))
    stream = net.create_connection(80, "nosuch.test")
    events = record(stream)
    await connect_and_close(stream)
    assert shape(events) == [
        ("lookup", "ENOTFOUND", None, None, "nosuch.test"),
        ("error", "ENOTFOUND"),
        ("close", True),
    ]
    assert events[0][1] is events[1][1]


# -- family and local address -----------------------------------------------


async def test_family_asks_the_resolver_for_that_family_only() -> None:
    async with listener("::1") as (port, _):
        resolver = Resolver([v4("127.0.0.1", port), v6("::1", port)])
        trio.socket.set_custom_hostname_resolver(resolver)
        stream = net.create_connection(port, "dual.test", family=6)
        events = record(stream)
        await connect_and_close(stream)
    assert resolver.asked == [socket.AF_INET6]
    assert shape(events)[:3] == [
        ("lookup", None, "::1", 6, "dual.test"),
        ("connectionAttempt", "::1", port, 6),
        ("connect",),
    ]


async def test_family_6_against_an_ipv4_only_name_fails_clearly() -> None:
    trio.socket.set_custom_hostname_resolver(Resolver([v4("127.0.0.1", 80)]))
    stream = net.create_connection(80, "v4only.test", family=6)
    events = record(stream)
    await connect_and_close(stream)
    assert shape(events) == [
        ("lookup", "ENOTFOUND", None, None, "v4only.test"),
        ("error", "ENOTFOUND"),
        ("close", True),
    ]
    assert events[1][1].strerror == "getaddrinfo ENOTFOUND v4only.test (no IPv6 address (family=6))"


def test_family_or_local_address_contradicting_an_ip_literal_raises_at_the_call() -> None:
    with pytest.raises(ValueError, match="IPv4, but family=6"):
        net.create_connection(80, "127.0.0.1", family=6)
    with pytest.raises(ValueError, match="local_address"):
        net.create_connection(80, "::1", local_address="127.0.0.1")


async def test_the_server_sees_the_local_address_and_port() -> None:
    local_port = closed_port("127.0.0.2")
    async with listener() as (port, accepted):
        stream = net.create_connection(
            port, "127.0.0.1", local_address="127.0.0.2", local_port=local_port
        )
        seen: list[Any] = []
        stream.on("connect", lambda: seen.append((stream.local_address, stream.local_port)))
        await connect_and_close(stream)
        peer = (await accepted.first()).socket.getpeername()
    assert seen == [("127.0.0.2", local_port)]
    assert (peer[0], peer[1]) == ("127.0.0.2", local_port)


async def test_a_local_port_in_use_is_the_streams_error() -> None:
    async with listener() as (port, _):
        stream = net.create_connection(port, "127.0.0.1", local_port=port)  # the listener's
        events = record(stream)
        await connect_and_close(stream)
    assert shape(events) == [
        ("connectionAttempt", "127.0.0.1", port, 4),
        ("connectionAttemptFailed", "127.0.0.1", port, 4, "EADDRINUSE"),
        ("error", "EADDRINUSE"),
        ("close", True),
    ]
    assert events[2][1].errno == errno.EADDRINUSE


async def test_a_name_without_an_address_of_the_local_address_family() -> None:
    trio.socket.set_custom_hostname_resolver(Resolver([v6("::1", 80)]))
    stream = net.create_connection(80, "v6only.test", local_address="127.0.0.1")
    events = record(stream)
    await connect_and_close(stream)
    assert shape(events) == [
        ("lookup", "ENOTFOUND", None, None, "v6only.test"),
        ("error", "ENOTFOUND"),
        ("close", True),
    ]


async def test_node_option_names_in_an_options_dict() -> None:
    async with listener() as (port, accepted):
        stream = net.create_connection(
            {
                "port": port,
                "host": "127.0.0.1",
                "localAddress": "127.0.0.3",
                "autoSelectFamily": False,
                "autoSelectFamilyAttemptTimeout": 500,
            }
        )
        await connect_and_close(stream)
        assert (await accepted.first()).socket.getpeername()[0] == "127.0.0.3"


# -- connect_timeout and timeout -------------------------------------------------


async def test_connect_timeout_gives_up_on_a_black_hole() -> None:
    with black_hole() as dropped:
        stream = net.create_connection(dropped, "127.0.0.2", connect_timeout=200)
        events = record(stream)
        await connect_and_close(stream)
    assert shape(events) == [
        ("connectionAttempt", "127.0.0.2", dropped, 4),
        ("error", "ETIMEDOUT"),
        ("close", True),
    ]
    error = events[1][1]
    assert isinstance(error, TimeoutError)
    assert error.strerror == f"connect ETIMEDOUT 127.0.0.2:{dropped} (not connected within 200 ms)"
    assert [(ip, port) for ip, port, _ in error.attempts] == [("127.0.0.2", dropped)]


async def test_the_timeout_option_is_set_timeout_before_connecting() -> None:
    async with listener() as (port, _):
        stream = net.create_connection(port, timeout=50)
        assert stream.timeout == 50
        timeouts: list[str] = []
        stream.on("timeout", lambda: (timeouts.append("timeout"), stream.destroy()))
        with trio.fail_after(LIMIT):
            async with stream:
                pass
    assert timeouts == ["timeout"]


async def test_the_timeout_option_on_a_server_applies_to_each_accepted_stream() -> None:
    timeouts: list[str] = []

    def on_connection(stream: net.Stream) -> None:
        stream.on("timeout", lambda: (timeouts.append("timeout"), stream.destroy()))

    with trio.fail_after(LIMIT):
        async with net.create_server(on_connection, timeout=50) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            client = await trio.open_tcp_stream(*address)
            assert await client.receive_some(1) == b""  # destroyed at its timeout
            await client.aclose()
            server.close()
    assert timeouts == ["timeout"]


# -- address() ------------------------------------------------------------------


async def test_address_is_the_local_address_while_connected(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    path = str(tmp_path / "sock")

    def on_connection(stream: net.Stream) -> None:
        seen.setdefault("server side", stream.address())
        stream.end()

    with trio.fail_after(LIMIT):
        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            stream = net.create_connection(address[1])
            seen["before"] = stream.address()
            stream.on("connect", lambda: seen.setdefault("client", stream.address()))
            async with stream:
                stream.end()
            seen["after"] = stream.address()
            seen["local"] = (stream.local_address, stream.local_port)
            server.close()
        async with net.create_server(on_connection) as unix_server:
            del seen["server side"]
            await unix_server.listen(path)
            async with net.create_connection(path) as unix_stream:
                unix_stream.on("connect", lambda: seen.setdefault("unix", unix_stream.address()))
                unix_stream.end()
            unix_server.close()
    assert seen["before"] is None
    assert seen["after"] is None
    assert seen["client"] == seen["local"]
    assert seen["server side"] == path
    assert seen["unix"] == ""  # a client's UNIX socket has no name


# -- reset_and_destroy() ----------------------------------------------------------


async def test_reset_and_destroy_is_seen_by_a_raw_trio_peer_as_a_reset() -> None:
    async with listener() as (port, accepted):
        stream = net.create_connection(port)
        events = record(stream)
        stream.on("connect", stream.reset_and_destroy)
        with trio.fail_after(LIMIT):
            async with stream:
                pass
            with pytest.raises(trio.BrokenResourceError) as info:
                await (await accepted.first()).receive_some(10)
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert shape(events)[-2:] == [("connect",), ("close", False)]


async def test_reset_and_destroy_needs_tcp(tmp_path: Path) -> None:
    with pytest.raises(StreamStateError, match="no connection"):
        net.Stream().reset_and_destroy()
    with pytest.raises(StreamStateError, match="not TCP"):
        net.create_connection(str(tmp_path / "sock")).reset_and_destroy()
    left, _right = trio.testing.memory_stream_pair()
    with pytest.raises(StreamStateError, match="not TCP"):
        net.Stream.wrap(left).reset_and_destroy()
    assert net.Stream.resetAndDestroy is net.Stream.reset_and_destroy


# -- bad input --------------------------------------------------------------------

BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"family": 5}, ValueError, "family must be 0"),
    ({"family": "4"}, TypeError, "family must be an int"),
    ({"family": True}, TypeError, "family must be an int"),
    ({"local_port": 70000}, ValueError, "local_port must be in 0..65535"),
    ({"local_port": -1}, ValueError, "local_port"),
    ({"local_port": "80"}, TypeError, "local_port must be an int"),
    ({"local_address": "nowhere"}, ValueError, "local_address must be an IP address"),
    ({"local_address": 127}, TypeError, "local_address must be a str"),
    ({"family": 4, "local_address": "::1"}, ValueError, "IPv6, but family=4"),
    ({"auto_select_family": 1}, TypeError, "auto_select_family must be a bool"),
    ({"auto_select_family_attempt_timeout": 5}, ValueError, ">= 10"),
    ({"auto_select_family_attempt_timeout": "250"}, TypeError, "must be a number"),
    ({"connect_timeout": 0}, ValueError, "connect_timeout must be > 0"),
    ({"connect_timeout": -5}, ValueError, "connect_timeout"),
    ({"connect_timeout": float("nan")}, ValueError, "connect_timeout"),
    ({"connect_timeout": "1s"}, TypeError, "connect_timeout must be a number"),
    ({"timeout": -1}, ValueError, "timeout"),
    ({"timeout": None}, TypeError, "timeout must be a number"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_OPTIONS)
def test_bad_connecting_options_raise_at_the_call(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        net.create_connection(80, **options)
    with pytest.raises(error, match=message):
        net.Stream(**options)


async def test_a_rejected_option_changes_nothing() -> None:
    async with listener() as (port, accepted):
        with pytest.raises(ValueError):
            net.create_connection(port, local_port=70000)
        await trio.sleep(0.05)
        assert accepted == []


@pytest.mark.parametrize(
    "option",
    [
        {"family": 4},
        {"family": 0},  # even at its default: a server does not connect
        {"auto_select_family": True},
        {"local_address": "127.0.0.1"},
        {"local_port": 1234},
        {"auto_select_family": False},
        {"auto_select_family_attempt_timeout": 100},
        {"connect_timeout": 100},
    ],
)
def test_a_server_refuses_the_client_only_options(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="is a client option"):
        net.create_server(**option)


def test_a_unix_path_with_a_local_address_or_port_raises_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a UNIX socket path"):
        net.create_connection(str(tmp_path / "sock"), local_address="127.0.0.1")
    with pytest.raises(ValueError, match="not a UNIX socket path"):
        net.create_connection(str(tmp_path / "sock"), local_port=1234)


async def test_destroyed_before_connecting_emits_no_attempt() -> None:
    async with listener() as (port, _):
        for stop in ("destroy", "reset_and_destroy"):
            stream = net.create_connection(port)
            events = record(stream)
            with trio.fail_after(LIMIT):
                async with stream:
                    getattr(stream, stop)()
            assert events == [("close", False)], stop


async def test_reset_and_destroy_after_close_does_nothing() -> None:
    async with listener() as (port, _):
        stream = net.create_connection(port)
        events = record(stream)
        stream.on("connect", stream.destroy)
        with trio.fail_after(LIMIT):
            async with stream:
                pass
        stream.reset_and_destroy()
    assert [e[0] for e in events] == ["connectionAttempt", "connect", "close"]
