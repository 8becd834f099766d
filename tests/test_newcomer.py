"""Issue 14, "A newcomer's first hour" (the library's part): the mistakes and
Node idioms of a first port, each answered at once and clearly.

Real sockets on 127.0.0.1 and UNIX paths; every test is bounded.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from netstream_testing import bounded

import trio_netstream as net

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
