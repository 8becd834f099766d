"""Issue 14, "A newcomer's first hour" (the library's part): the mistakes and
Node idioms of a first port, each answered at once and clearly.

Real sockets on 127.0.0.1 and UNIX paths; every test is bounded.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from netstream_testing import bounded, port_of

import trio_netstream as net
from trio_netstream import StreamStateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent


def echo(stream: net.Stream) -> None:
    """A connection listener: send back what comes, end when the peer ends."""
    stream.on("data", stream.write)
    stream.on("end", stream.end)


@asynccontextmanager
async def echo_server(*where: Any) -> AsyncIterator[net.Server]:
    """An echo server listening on 127.0.0.1 (or *where*), closed at the end."""
    async with net.create_server(echo) as server:
        await server.listen(*(where or (0, "127.0.0.1")))
        try:
            yield server
        finally:
            server.close()


async def round_trip(stream: net.Stream, data: bytes = b"hello") -> bytes:
    """Run *stream* in its block: send *data*, end, return what came back."""
    got: list[bytes] = []
    stream.on("data", got.append)
    async with stream:
        stream.end(data)
    return b"".join(got)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- item 2: waiting on a stream that is not running raises at once ------------------------

NOT_RUNNING = "async with"


async def iterate(stream: net.Stream) -> None:
    async for _chunk in stream:
        pass


async def drain_after_write(stream: net.Stream) -> None:
    stream.write(b"queued")
    await stream.drain()


WAITS: dict[str, Callable[[net.Stream], Any]] = {
    "async for": iterate,
    "drain()": drain_after_write,
    "wait_closed()": lambda stream: stream.wait_closed(),
}


@pytest.mark.parametrize("call", list(WAITS))
@bounded
async def test_waiting_on_a_client_stream_without_async_with_raises_at_once(call: str) -> None:
    async with echo_server() as server:
        stream = net.create_connection(port_of(server))
        with trio.fail_after(1), pytest.raises(StreamStateError, match=NOT_RUNNING) as caught:
            await WAITS[call](stream)
        assert call in str(caught.value)
        assert stream.ready_state == "opening"  # nothing changed: the block may still run it
        assert await round_trip(stream) == b"queued" * (call == "drain()") + b"hello"


@pytest.mark.parametrize("call", list(WAITS))
@bounded
async def test_waiting_on_a_wrapped_stream_without_async_with_raises_at_once(call: str) -> None:
    async with echo_server() as server:
        stream = net.Stream.wrap(await trio.open_tcp_stream("127.0.0.1", port_of(server)))
        with trio.fail_after(1), pytest.raises(StreamStateError, match=NOT_RUNNING):
            await WAITS[call](stream)
        async with stream:
            stream.end()


@bounded
async def test_the_same_calls_wait_in_the_block_and_return_after_it() -> None:
    async with echo_server() as server:
        stream = net.create_connection(port_of(server))
        async with stream:
            stream.write(b"ping")
            await stream.drain()
            async for chunk in stream:
                assert chunk == b"ping"
                break
            stream.end()
            await stream.wait_closed()
        # The block ended and the stream is closed: nothing to wait for.
        with trio.fail_after(1):
            await stream.wait_closed()
            await stream.drain()
            assert [chunk async for chunk in stream] == []


@bounded
async def test_a_server_side_stream_waits_in_its_servers_block() -> None:
    served: list[Any] = []

    async def handler(stream: net.Stream) -> None:
        async for chunk in stream:
            served.append(chunk)
            stream.write(chunk)
            await stream.drain()
        stream.end()
        await stream.wait_closed()

    async with net.create_server(handler) as server:
        await server.listen(0, "127.0.0.1")
        assert await round_trip(net.create_connection(port_of(server))) == b"hello"
        server.close()
    assert b"".join(served) == b"hello"


# --- item 3: a string of digits is a TCP port -------------------------------------------------


@bounded
async def test_a_numeric_string_port_connects_over_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # were it a path, it would be looked for here
    async with echo_server() as server:
        port = port_of(server)
        stream = net.create_connection(str(port))
        assert await round_trip(stream) == b"hello"
        assert (stream.remote_address, stream.remote_port) == ("127.0.0.1", port)
        assert stream.remote_family == "IPv4"


@bounded
async def test_stream_connect_takes_a_numeric_string_port() -> None:
    async with echo_server() as server:
        stream = net.Stream().connect(str(port_of(server)), "127.0.0.1")
        assert await round_trip(stream) == b"hello"
        assert stream.remote_port == port_of(server)


@bounded
async def test_listen_on_a_numeric_string_listens_on_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    port = free_port()
    async with echo_server(str(port), "127.0.0.1") as server:
        assert server.address() == ("127.0.0.1", port)
        assert await round_trip(net.create_connection(port)) == b"hello"
    assert os.listdir(tmp_path) == []  # no UNIX socket file named after the port


@bounded
async def test_a_path_of_digits_written_as_a_path_stays_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = f"./{free_port()}"
    async with echo_server(path) as server:
        assert server.address() == path
        assert stat.S_ISSOCK(os.stat(tmp_path / path).st_mode)
        stream = net.create_connection(path)
        assert await round_trip(stream) == b"hello"
        assert stream.remote_family is None  # not TCP


# --- item 4: Node's forms -------------------------------------------------------------------


def connect_recorder(events: list[str]) -> Callable[[], None]:
    return lambda: events.append("listener")


@pytest.mark.parametrize("name", ["connect", "create_connection", "createConnection"])
@bounded
async def test_connect_port_host_listener(name: str) -> None:
    events: list[str] = []
    async with echo_server() as server:
        stream = getattr(net, name)(port_of(server), "127.0.0.1", connect_recorder(events))
        stream.on("connect", lambda: events.append("connect"))
        stream.on("close", lambda had_error: events.append("close"))
        assert stream.listener_count("connect") == 2
        assert await round_trip(stream) == b"hello"
        assert events == ["listener", "connect", "close"]
        assert stream.listener_count("connect") == 1  # the listener was a once('connect')


@bounded
async def test_connect_port_listener() -> None:
    events: list[str] = []
    async with echo_server() as server:
        stream = net.connect(port_of(server), connect_recorder(events))
        assert await round_trip(stream) == b"hello"
        assert events == ["listener"]
        assert stream.remote_address == "127.0.0.1"


@bounded
async def test_connect_path_listener(unix_path: str) -> None:
    events: list[str] = []
    async with echo_server(unix_path):
        stream = net.create_connection(unix_path, connect_recorder(events))
        assert await round_trip(stream) == b"hello"
        assert events == ["listener"]


@bounded
async def test_stream_connect_port_host_listener() -> None:
    events: list[str] = []
    async with echo_server() as server:
        stream = net.Stream().connect(port_of(server), "127.0.0.1", connect_recorder(events))
        assert await round_trip(stream) == b"hello"
        assert events == ["listener"]


def listening_recorder(events: list[str]) -> Callable[[], None]:
    return lambda: events.append("listening")


@bounded
async def test_listen_port_host_listener() -> None:
    events: list[str] = []
    async with net.create_server(echo) as server:
        await server.listen(0, "127.0.0.1", listening_recorder(events))
        assert events == ["listening"]  # before listen() returned
        assert server.address() == ("127.0.0.1", port_of(server))
        assert server.listener_count("listening") == 0  # a once('listening')
        assert await round_trip(net.create_connection(port_of(server))) == b"hello"
        server.close()


@bounded
async def test_listen_port_listener() -> None:
    events: list[str] = []
    port = free_port()
    async with net.create_server(echo) as server:
        await server.listen(port, listening_recorder(events))
        assert events == ["listening"]
        assert port_of(server) == port
        assert await round_trip(net.create_connection(port)) == b"hello"
        server.close()


@bounded
async def test_a_listen_that_fails_drops_its_listener() -> None:
    events: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with net.create_server(echo) as server:
            with pytest.raises(OSError, match="EADDRINUSE"):
                await server.listen(taken.getsockname()[1], listening_recorder(events))
            assert server.listener_count("listening") == 0
            await server.listen(0, "127.0.0.1")  # a later listen() does not call it
            server.close()
    assert events == []


@bounded
async def test_socket_is_stream_and_new_net_socket_ports_as_it_reads() -> None:
    assert net.Socket is net.Stream
    async with echo_server() as server:
        client = net.Socket()  # new net.Socket()
        client.connect(port_of(server), "127.0.0.1")
        assert await round_trip(client) == b"hello"


@bounded
async def test_create_connection_takes_a_node_options_dict() -> None:
    seen: dict[str, Any] = {}
    ended = trio.Event()

    def handler(stream: net.Stream) -> None:
        stream.on("end", ended.set)
        stream.end(b"bye")  # the client ends in return: allowHalfOpen is false

    async with net.create_server(handler) as server:
        await server.listen(0, "127.0.0.1")
        options = {
            "port": port_of(server),
            "host": "127.0.0.1",
            "allowHalfOpen": False,
            "noDelay": True,
            "keepAlive": True,
            "keepAliveInitialDelay": 3000,
            "highWaterMark": 2,
        }
        stream = net.create_connection(options)

        def connected() -> None:
            sock = stream.socket
            assert sock is not None
            seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen["keepalive"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            seen["keepidle"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            seen["write"] = stream.write(b"xx")  # reaches highWaterMark

        stream.on("connect", connected)
        stream.on("data", lambda chunk: None)
        with trio.fail_after(5):
            async with stream:
                await ended.wait()
        server.close()
    assert seen["nodelay"] and seen["keepalive"]
    assert seen["keepidle"] == 3
    assert seen["write"] is False
    assert stream.ready_state == "closed"


@bounded
async def test_create_connection_options_dict_takes_python_names_a_path_and_a_listener(
    unix_path: str,
) -> None:
    events: list[str] = []
    async with echo_server(unix_path):
        stream = net.create_connection(
            {"path": unix_path, "allow_half_open": False}, connect_recorder(events)
        )
        assert await round_trip(stream) == b"hello"
        assert events == ["listener"]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"port": 1, "bogus": 1}, "'bogus'"),
        ({"port": 1, "exclusive": True}, "'exclusive'"),
        (
            {"port": 1, "lookup": print},
            "'lookup': install a resolver with trio.socket.set_custom_hostname_resolver",
        ),
        ({"host": "127.0.0.1"}, "'port' or a 'path'"),
        ({"port": 1, "path": "/tmp/x"}, "'port' or 'path', not both"),
    ],
)
def test_a_bad_connection_options_dict_is_a_type_error_naming_the_key(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(TypeError, match=named):
        net.create_connection(options)


@bounded
async def test_listen_takes_an_options_dict(unix_path: str) -> None:
    async with net.create_server(echo) as server:
        await server.listen({"port": 0, "host": "127.0.0.1", "backlog": 5})
        assert server.address() == ("127.0.0.1", port_of(server))
        assert await round_trip(net.create_connection(port_of(server))) == b"hello"
        with pytest.raises(TypeError, match="'exclusive'"):
            await server.listen({"port": 0, "exclusive": True})
        server.close()
    events: list[str] = []
    async with net.create_server(echo) as server:
        await server.listen({"path": unix_path}, listening_recorder(events))
        assert server.address() == unix_path
        assert events == ["listening"]
        assert await round_trip(net.create_connection(unix_path)) == b"hello"
        server.close()


# --- item 5: errors that say what failed ------------------------------------------------------


class NoSuchHost(trio.abc.HostnameResolver):
    """A resolver that finds no name, as getaddrinfo() does for nosuch.invalid."""

    async def getaddrinfo(self, *args: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: Any) -> Any:  # pragma: no cover - not called
        raise NotImplementedError


@pytest.fixture
async def no_such_host() -> Any:
    previous = trio.socket.set_custom_hostname_resolver(NoSuchHost())
    yield
    trio.socket.set_custom_hostname_resolver(previous)


@bounded
async def test_a_failed_lookup_names_the_host(no_such_host: None) -> None:
    errors: list[BaseException] = []
    stream = net.create_connection(80, "nosuch.invalid")
    stream.on("error", errors.append)
    async with stream:
        pass
    [error] = errors
    assert isinstance(error, socket.gaierror)
    assert "getaddrinfo ENOTFOUND nosuch.invalid" in str(error)
    assert error.errno == socket.EAI_NONAME
    assert getattr(error, "code", None) == "ENOTFOUND"


@bounded
async def test_a_failed_lookup_in_listen_names_the_host(no_such_host: None) -> None:
    async with net.create_server() as server:
        with pytest.raises(socket.gaierror, match=r"getaddrinfo ENOTFOUND nosuch\.invalid"):
            await server.listen(0, "nosuch.invalid")
        server.close()


@bounded
async def test_eaddrinuse_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with net.create_server() as server:
            with pytest.raises(OSError) as caught:
                await server.listen(port, "127.0.0.1")
            server.close()
    error = caught.value
    assert str(error).endswith(f"listen EADDRINUSE: address already in use 127.0.0.1:{port}")
    assert error.errno == errno.EADDRINUSE
    assert getattr(error, "code", None) == "EADDRINUSE"


@bounded
async def test_eaddrinuse_on_a_unix_path_names_the_path(unix_path: str) -> None:
    async with echo_server(unix_path), net.create_server() as second:
        with pytest.raises(OSError, match=f"listen EADDRINUSE: .* {unix_path}$") as caught:
            await second.listen(unix_path)
        second.close()
    assert caught.value.errno == errno.EADDRINUSE


UNKNOWN_OPTION: dict[str, Callable[[], object]] = {
    "create_connection": lambda: net.create_connection(1, bogus=1),
    "connect": lambda: net.connect(1, "127.0.0.1", bogus=1),
    "Stream": lambda: net.Stream(bogus=1),
    "create_server": lambda: net.create_server(bogus=1),
    "Server": lambda: net.Server(None, bogus=1),
}


@pytest.mark.parametrize("call", list(UNKNOWN_OPTION))
def test_an_unknown_option_is_a_type_error_naming_it(call: str) -> None:
    with pytest.raises(TypeError) as caught:
        UNKNOWN_OPTION[call]()
    message = str(caught.value)
    assert "'bogus'" in message
    assert "Options" not in message and "__init__" not in message  # no internal class
    assert "allow_half_open" in message  # the options there are


def test_a_node_option_name_given_as_a_keyword_says_the_python_name() -> None:
    with pytest.raises(TypeError, match="use allow_half_open="):
        net.create_connection(1, allowHalfOpen=False)


# --- item 8: the package's surface -------------------------------------------------------------

PUBLIC = {
    "Server",
    "Socket",
    "Stream",
    "StreamStateError",
    "connect",
    "createConnection",
    "createServer",
    "create_connection",
    "create_server",
}


def test_dir_shows_only_the_public_names() -> None:
    shown = {name for name in dir(net) if not name.startswith("_")}
    assert shown == PUBLIC
    assert not {"Any", "annotations", "os", "overload"} & set(dir(net))


def test_all_lists_the_public_names() -> None:
    assert set(net.__all__) == PUBLIC
    assert len(net.__all__) == len(PUBLIC)


@pytest.mark.skipif(tomllib is None, reason="tomllib is Python 3.11+")
def test_pyproject_names_the_project_urls() -> None:
    assert tomllib is not None
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    urls = project["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
