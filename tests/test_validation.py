"""Bad input gets a clear error at the call and changes nothing.

SPEC: "Misuse by the caller is raised at the call" (``TypeError``,
``ValueError``, ``StreamStateError``), for the whole public API: stream and
server options, ``connect()``, ``write()`` / ``end()`` / ``destroy()``, the
``set_*`` calls, event registration, ``async with`` / ``async for`` misuse,
and ``Server.listen()`` / ``close()``. Every test checks the error type, a
fragment of its message, *and* that the object is exactly as before (ready
state, counters, events, listeners, and that it still works afterwards).

The second half covers lifecycle paths the rest of the suite does not reach
(accept failures, cancellation while a block waits, awaitable connection
listeners, listener exceptions from late events...), asserted as a user sees
them.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import resource
import socket
import ssl
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from netstream_testing import bounded, read_to_eof
from trio.testing import memory_stream_pair, wait_all_tasks_blocked

import trio_netstream as net
from trio_netstream import Stream, StreamStateError

#: Upper bound of every test (virtual seconds under ``autojump_clock``).

SERVER_EVENTS = ("listening", "close", "error")


def echo(conn: Stream) -> None:
    conn.on("data", conn.write)
    conn.on("end", conn.end)


async def send_and_end(target: tuple[Any, ...], text: str, record: Any) -> Any:
    """Connect to *target*, send *text*, end; return the client's recorder."""
    client = net.create_connection(*target)
    rec = record(client)
    client.on("connect", lambda: client.end(text))
    async with client:
        pass
    return rec


class Boom(Exception):
    pass


# === options ==================================================================

BAD_STREAM_OPTIONS = [
    ({"allow_half_open": "yes"}, TypeError, "allow_half_open"),
    ({"allow_half_open": 1}, TypeError, "allow_half_open"),
    ({"no_delay": 1}, TypeError, "no_delay"),
    ({"keep_alive": "y"}, TypeError, "keep_alive"),
    ({"high_water_mark": -1}, ValueError, "high_water_mark"),
    ({"high_water_mark": "16"}, TypeError, "high_water_mark"),
    ({"high_water_mark": True}, TypeError, "high_water_mark"),
    ({"high_water_mark": 16.0}, TypeError, "high_water_mark"),
    ({"keep_alive_initial_delay": math.nan}, ValueError, "keep_alive_initial_delay"),
    ({"keep_alive_initial_delay": math.inf}, ValueError, "keep_alive_initial_delay"),
    ({"keep_alive_initial_delay": -5}, ValueError, "keep_alive_initial_delay"),
    ({"keep_alive_initial_delay": "x"}, TypeError, "keep_alive_initial_delay"),
    ({"keep_alive_initial_delay": True}, TypeError, "keep_alive_initial_delay"),
    ({"highWaterMark": 10}, TypeError, "highWaterMark"),  # unknown option name
    ({"nodelay": True}, TypeError, "nodelay"),
]

MAKERS: dict[str, Callable[..., object]] = {
    "Stream": lambda **kw: Stream(**kw),
    "create_connection(port)": lambda **kw: net.create_connection(4321, **kw),
    "create_connection(path)": lambda **kw: net.create_connection("/tmp/no-such-sock", **kw),
    "Stream.wrap": lambda **kw: Stream.wrap(memory_stream_pair()[0], **kw),
    "create_server": lambda **kw: net.create_server(echo, **kw),
    "Server": lambda **kw: net.Server(**kw),
}


@pytest.mark.parametrize("maker", list(MAKERS))
@pytest.mark.parametrize(("options", "error", "fragment"), BAD_STREAM_OPTIONS)
def test_bad_stream_option_is_rejected_by_every_constructor(
    maker: str, options: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        MAKERS[maker](**options)


@pytest.mark.parametrize("maker", list(MAKERS))
@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"ssl": "yes"}, "ssl"),
        ({"ssl": 1}, "ssl"),
        ({"ssl": ssl.PROTOCOL_TLS_CLIENT}, "ssl"),
        ({"server_hostname": 5}, "server_hostname"),
        ({"server_hostname": b"example.org"}, "server_hostname"),
    ],
)
def test_bad_tls_option_type_is_rejected_by_every_constructor(
    maker: str, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(TypeError, match=fragment):
        MAKERS[maker](**options)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"ssl": True}, "ssl=True"), ({"server_hostname": "example.org"}, "server_hostname")],
)
def test_client_only_tls_options_are_refused_by_a_server(
    options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        net.create_server(echo, **options)
    with pytest.raises(ValueError, match=fragment):
        net.Server(**options)


@bounded
async def test_failed_wrap_leaves_the_trio_stream_usable(record: Any) -> None:
    a, b = memory_stream_pair()
    with pytest.raises(TypeError, match="high_water_mark"):
        Stream.wrap(a, high_water_mark="big")
    # The transport was not adopted: wrapping it properly works as usual.
    stream = Stream.wrap(a, high_water_mark=1024)
    rec = record(stream)
    assert stream.high_water_mark == 1024
    async with stream:
        await b.send_all(b"still fine")
        await b.send_eof()
        stream.end(b"reply")
        assert await read_to_eof(b) == b"reply"
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == b"still fine"


@pytest.mark.parametrize(
    "transport",
    [None, b"bytes", "127.0.0.1:80", trio.testing.MemorySendStream()],
    ids=["None", "bytes", "str", "one-way-stream"],
)
def test_wrap_needs_a_trio_stream(transport: Any) -> None:
    with pytest.raises(TypeError, match=r"trio\.abc\.Stream"):
        Stream.wrap(transport)


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), ("10", TypeError), (True, TypeError), (2.5, TypeError)],
)
def test_bad_max_connections_is_rejected(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_connections"):
        net.create_server(max_connections=value)
    with pytest.raises(error, match="max_connections"):
        net.Server(max_connections=value)
    server = net.create_server(max_connections=5)
    with pytest.raises(error, match="max_connections"):
        server.max_connections = value
    assert server.max_connections == 5
    assert server.maxConnections == 5
    server.max_connections = None  # back to "no limit" is fine
    assert server.max_connections is None


# === connect() ================================================================

BAD_TARGETS = [
    ((0,), ValueError, "port"),
    ((70000,), ValueError, "port"),
    ((-1,), ValueError, "port"),
    ((True,), TypeError, "port"),
    ((3.5,), TypeError, "port"),
    ((None,), TypeError, "port"),
    ((b"/tmp/sock",), TypeError, "port"),
    (("",), ValueError, "empty"),
    ((80, 5), TypeError, "host"),
    ((80, None), TypeError, "host"),
]


@pytest.mark.parametrize(("args", "error", "fragment"), BAD_TARGETS)
@bounded
async def test_connect_rejects_a_bad_target_and_starts_nothing(
    args: tuple[Any, ...], error: type[Exception], fragment: str, record: Any
) -> None:
    with pytest.raises(error, match=fragment):
        net.create_connection(*args)
    stream = Stream()
    rec = record(stream)
    with pytest.raises(error, match=fragment):
        stream.connect(*args)
    assert stream.ready_state == "closed"
    assert (stream.bytes_read, stream.bytes_written, stream.write_queue_size) == (0, 0, 0)
    assert stream.remote_address is None
    async with stream:
        with pytest.raises(error, match=fragment):
            stream.connect(*args)  # inside the block too
        assert stream.ready_state == "closed"
    assert rec.events == []  # nothing was started


@bounded
async def test_connect_while_opening_or_open_raises_and_keeps_the_connection(
    record: Any,
) -> None:
    async with net.create_server(echo) as server:
        await server.listen(0, "127.0.0.1")
        port = server.address()[1]
        client = net.create_connection(port)
        rec = record(client)
        assert client.ready_state == "opening"
        with pytest.raises(StreamStateError, match=r"connect\(\).*'opening'"):
            client.connect(port + 1 if port < 65535 else port - 1)
        assert client.ready_state == "opening"
        connected = trio.Event()
        client.on("connect", connected.set)
        async with client:
            await connected.wait()
            assert client.remote_port == port  # the first target, not the rejected one
            with pytest.raises(StreamStateError, match=r"connect\(\).*'open'"):
                client.connect(port)
            with pytest.raises(StreamStateError, match=r"connect\(\).*'open'"):
                client.connect(f"/tmp/{os.getpid()}-never")
            assert client.ready_state == "open"
            client.end("ping")
            with pytest.raises(StreamStateError, match=r"connect\(\).*'readOnly'"):
                client.connect(port)
            assert client.ready_state == "readOnly"
        server.close()
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == b"ping"


# === write() / end() / destroy() =================================================

BAD_WRITES = [
    ((42,), TypeError, "data"),
    ((None,), TypeError, "data"),
    ((["x"],), TypeError, "data"),
    ((3.5,), TypeError, "data"),
    (("x", 5), TypeError, "encoding"),
    (("x", b"utf8"), TypeError, "encoding"),
    (("x", "klingon"), ValueError, "klingon"),
    (("café", "ascii"), ValueError, "ascii"),
    (("あ", "latin1"), ValueError, "latin"),
    (("zz", "hex"), ValueError, "hex"),
    (("abc", "hex"), ValueError, "hex"),
]


@pytest.mark.parametrize(("args", "error", "fragment"), BAD_WRITES)
@bounded
async def test_bad_write_raises_at_the_call_and_sends_nothing(
    args: tuple[Any, ...], error: type[Exception], fragment: str, record: Any
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        assert stream.write(b"ok") is True
        assert (stream.bytes_written, stream.write_queue_size) == (2, 2)
        with pytest.raises(error, match=fragment):
            stream.write(*args)
        if args[0] is not None:  # end(None) is a plain end()
            with pytest.raises(error, match=fragment):
                stream.end(*args)
        assert (stream.bytes_written, stream.write_queue_size) == (2, 2)
        assert stream.ready_state == "open"  # a failed end() did not end
        assert stream.write("!") is True  # still writable
        stream.end()
        assert await read_to_eof(b) == b"ok!"
        await b.send_eof()
    assert rec.events == ["connect", "end", ("close", False)]
    assert stream.bytes_written == 3


@bounded
async def test_never_connected_stream_refuses_writes_and_ignores_end_and_destroy(
    record: Any,
) -> None:
    stream = Stream()
    rec = record(stream)
    for call in (lambda: stream.write(b"x"), lambda: stream.write("x")):
        with pytest.raises(StreamStateError, match=r"write\(\).*'closed'"):
            call()
    with pytest.raises(StreamStateError, match=r"write\(\).*'closed'"):
        stream.end(b"x")
    stream.end()  # nothing to end: does nothing
    stream.destroy()  # nothing to destroy: does nothing
    stream.pause()  # allowed before connecting
    assert stream.is_paused
    stream.resume()
    assert not stream.is_paused
    await stream.drain()  # nothing queued: returns at once
    assert stream.ready_state == "closed"
    assert (stream.bytes_written, stream.write_queue_size) == (0, 0)
    async with stream:
        stream.end()
        stream.destroy()
        stream.destroy()
        with pytest.raises(StreamStateError, match=r"write\(\)"):
            stream.write(b"x")
    assert rec.events == []
    assert stream.ready_state == "closed"


@pytest.mark.parametrize(
    "bad", ["not an exception", ValueError, 42], ids=["str", "exception-class", "int"]
)
@bounded
async def test_destroy_with_a_non_exception_raises_and_changes_nothing(
    bad: Any, record: Any
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        stream.write(b"queued")
        with pytest.raises(TypeError, match="exception"):
            stream.destroy(bad)
        assert stream.ready_state == "open"
        assert stream.write_queue_size == 6  # queued writes were not dropped
        await wait_all_tasks_blocked()
        assert await b.receive_some() == b"queued"
        assert rec.events == ["connect"]
        stream.destroy()
    assert rec.events == ["connect", ("close", False)]  # no 'error': the bad one was refused


# === set_timeout / set_no_delay / set_keep_alive / set_encoding ===================

BAD_TIMEOUTS = [
    (True, TypeError),
    ("10", TypeError),
    (None, TypeError),
    ([1], TypeError),
    (-1, ValueError),
    (-0.5, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (math.nan, ValueError),
]


@pytest.mark.parametrize(("value", "error"), BAD_TIMEOUTS)
def test_bad_timeout_raises_and_keeps_the_previous_one(value: Any, error: type[Exception]) -> None:
    stream = Stream()
    stream.set_timeout(2000)
    assert stream.timeout == 2000
    with pytest.raises(error, match="timeout"):
        stream.set_timeout(value)
    with pytest.raises(error, match="timeout"):
        stream.set_timeout(value, lambda: None)  # the callback is not added either
    assert stream.timeout == 2000
    assert stream.listener_count("timeout") == 0


@pytest.mark.parametrize("callback", ["cb", 42, True], ids=["str", "int", "bool"])
def test_set_timeout_with_a_non_callable_callback_raises_and_changes_nothing(
    callback: Any,
) -> None:
    stream = Stream()
    stream.set_timeout(2000)
    with pytest.raises(TypeError, match="callback"):
        stream.set_timeout(500, callback)
    assert stream.timeout == 2000
    assert stream.listener_count("timeout") == 0


@bounded
async def test_rejected_set_timeout_leaves_the_running_timeout_in_effect(
    record: Any, autojump_clock: Any
) -> None:
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        stream.set_timeout(1000)
        with pytest.raises(ValueError):
            stream.set_timeout(-1)
        with pytest.raises(TypeError):
            stream.set_timeout(0, "not callable")
        await trio.sleep(1.5)
        assert rec.events == ["connect", "timeout"]
        assert stream.timeout == 1000
        stream.destroy()
    assert rec.events == ["connect", "timeout", ("close", False)]


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda s: s.set_no_delay("yes"), TypeError, "no_delay"),
        (lambda s: s.set_no_delay(1), TypeError, "no_delay"),
        (lambda s: s.set_no_delay(None), TypeError, "no_delay"),
        (lambda s: s.set_keep_alive(1), TypeError, "enable"),
        (lambda s: s.set_keep_alive("yes"), TypeError, "enable"),
        (lambda s: s.set_keep_alive(True, -1), ValueError, "initial_delay"),
        (lambda s: s.set_keep_alive(True, "x"), TypeError, "initial_delay"),
        (lambda s: s.set_keep_alive(True, math.nan), ValueError, "initial_delay"),
        (lambda s: s.set_keep_alive(True, True), TypeError, "initial_delay"),
        (lambda s: s.setNoDelay("yes"), TypeError, "no_delay"),
        (lambda s: s.setKeepAlive(True, -1), ValueError, "initial_delay"),
    ],
    ids=[
        "no_delay-str",
        "no_delay-int",
        "no_delay-None",
        "keep_alive-int",
        "keep_alive-str",
        "delay-negative",
        "delay-str",
        "delay-nan",
        "delay-bool",
        "setNoDelay",
        "setKeepAlive",
    ],
)
def test_bad_socket_option_call_raises(
    call: Callable[[Stream], None], error: type[Exception], fragment: str
) -> None:
    stream = Stream()
    with pytest.raises(error, match=fragment):
        call(stream)


@bounded
async def test_rejected_socket_option_calls_leave_the_socket_as_it_was() -> None:
    async with net.create_server(echo) as server:
        await server.listen(0, "127.0.0.1")
        client = net.create_connection(server.address()[1])
        connected = trio.Event()
        client.on("connect", connected.set)
        async with client:
            await connected.wait()
            sock = client.socket
            assert sock is not None
            client.set_no_delay(True)
            client.set_keep_alive(True, 5000)
            with pytest.raises(TypeError):
                client.set_no_delay("no")
            with pytest.raises(TypeError):
                client.set_keep_alive("off", 1000)
            with pytest.raises(ValueError):
                client.set_keep_alive(False, -1)  # the bad delay also blocks enable=False
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
            client.end()
        server.close()


@bounded
async def test_bad_encoding_raises_and_the_previous_encoding_stays(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream, keep_data=True)
    stream.set_encoding("hex")
    for bad, error in ((5, TypeError), (b"utf8", TypeError), ("klingon", ValueError)):
        with pytest.raises(error, match=r"encoding|klingon"):
            stream.set_encoding(bad)
        with pytest.raises(error, match=r"encoding|klingon"):
            stream.setEncoding(bad)
    assert stream.encoding == "hex"
    async with stream:
        await b.send_all(b"\xab\xcd")
        await wait_all_tasks_blocked()
        with pytest.raises(ValueError, match="klingon"):
            stream.set_encoding("klingon")
        await b.send_all(b"\x01")
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    assert rec.events == ["connect", ("data", "abcd"), ("data", "01"), "end", ("close", False)]
    assert stream.encoding == "hex"


# === set_secure() =================================================================

SET_SECURE_MISUSE = [
    (("context",), {}, TypeError, "context"),
    ((True,), {}, TypeError, "context"),
    ((), {"server_side": "yes"}, TypeError, "server_side"),
    ((), {"server_side": 1}, TypeError, "server_side"),
    ((), {"server_hostname": 5}, TypeError, "server_hostname"),
    ((), {"reject_unauthorized": "no"}, TypeError, "reject_unauthorized"),
    ((), {"reject_unauthorized": 0}, TypeError, "reject_unauthorized"),
    ((), {"server_side": True}, ValueError, "certificate"),  # a server needs its own context
]


@pytest.mark.parametrize(("args", "kwargs", "error", "fragment"), SET_SECURE_MISUSE)
@bounded
async def test_bad_set_secure_raises_and_the_stream_stays_plaintext(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    fragment: str,
    record: Any,
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        stream.write(b"before")
        with pytest.raises(error, match=fragment):
            stream.set_secure(*args, **kwargs)
        with pytest.raises(error, match=fragment):
            stream.setSecure(*args, **kwargs)
        assert not stream.secure
        stream.write(b" after")
        await b.send_all(b"plain reply")
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
        assert await read_to_eof(b) == b"before after"  # never encrypted
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == b"plain reply"
    assert not stream.verify_peer()
    assert stream.get_peer_certificate() is None


@bounded
async def test_set_secure_outside_an_open_connection_raises(record: Any) -> None:
    stream = Stream()
    rec = record(stream)
    with pytest.raises(StreamStateError, match=r"set_secure\(\).*'closed'"):
        stream.set_secure()
    a, b = memory_stream_pair()
    wrapped = Stream.wrap(a)
    wrapped_rec = record(wrapped)
    async with wrapped:
        wrapped.end(b"bye")
        with pytest.raises(StreamStateError, match=r"set_secure\(\).*'readOnly'"):
            wrapped.set_secure()
        assert not wrapped.secure
        assert await read_to_eof(b) == b"bye"  # plaintext, then FIN
        await b.send_eof()
    assert rec.events == []
    assert wrapped_rec.events == ["connect", "end", ("close", False)]


@bounded
async def test_second_set_secure_raises_already_secure(record: Any) -> None:
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        stream.set_secure(ssl.create_default_context(), server_hostname="example.org")
        with pytest.raises(StreamStateError, match=r"set_secure\(\).*already secure"):
            stream.set_secure(ssl.create_default_context(), server_hostname="example.org")
        assert stream.ready_state == "open"
        stream.destroy()
    assert rec.events == ["connect", ("close", False)]


# === event registration ========================================================

REGISTRATION_MISUSE = [
    (lambda e, f: e.on(5, f), "event name"),
    (lambda e, f: e.on(None, f), "event name"),
    (lambda e, f: e.on("data", 5), "listener"),
    (lambda e, f: e.on("data", "print"), "listener"),
    (lambda e, f: e.once(5, f), "event name"),
    (lambda e, f: e.once("data", 5), "listener"),
    (lambda e, f: e.off("data", 5), "listener"),
    (lambda e, f: e.off(5, f), "event name"),
    (lambda e, f: e.on(5), "event name"),  # decorator form
    (lambda e, f: e.once(5), "event name"),
    (lambda e, f: e.on("data")(5), "listener"),
    (lambda e, f: e.addListener(5, f), "event name"),
    (lambda e, f: e.removeListener("data", 5), "listener"),
    (lambda e, f: e.remove_all_listeners(5), "event name"),
]


@pytest.mark.parametrize("emitter", ["Stream", "Server"])
@pytest.mark.parametrize(("call", "fragment"), REGISTRATION_MISUSE)
def test_event_registration_misuse_raises_and_changes_no_listener(
    emitter: str, call: Callable[[Any, Any], Any], fragment: str
) -> None:
    target: Any = Stream() if emitter == "Stream" else net.create_server()

    def listener(*args: object) -> None: ...

    target.on("data", listener)
    target.on("close", listener)
    with pytest.raises(TypeError, match=fragment):
        call(target, listener)
    assert target.listeners("data") == [listener]
    assert target.listeners("close") == [listener]
    assert target.listener_count("5") == 0


# === async with / async for misuse ===============================================


@bounded
async def test_entering_a_running_stream_again_raises_and_it_keeps_running(
    record: Any,
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        with pytest.raises(StreamStateError, match="already running"):
            async with stream:
                pytest.fail("the body of a second block must not run")  # pragma: no cover
        assert stream.ready_state == "open"
        await b.send_all(b"after")
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == b"after"


@bounded
async def test_entering_a_running_server_again_raises_and_it_keeps_serving(
    unix_path: str, record: Any
) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=("listening", "close", "error"))
        await server.listen(unix_path)
        with pytest.raises(StreamStateError, match="already running"):
            async with server:
                pytest.fail("the body of a second block must not run")  # pragma: no cover
        assert server.listening
        client = await send_and_end((unix_path,), "still serving", record)
        server.close()
    assert client.data == b"still serving"
    assert rec.events == ["listening", "close"]


@bounded
async def test_a_server_side_stream_cannot_be_entered(unix_path: str, record: Any) -> None:
    refused: list[BaseException] = []

    async def handler(conn: Stream) -> None:
        try:
            async with conn:
                pytest.fail("a server-side stream must not run a block")  # pragma: no cover
        except StreamStateError as exc:
            refused.append(exc)
        echo(conn)  # the connection is unharmed and is served as usual

    async with net.create_server(handler) as server:
        await server.listen(unix_path)
        client = await send_and_end((unix_path,), "unharmed", record)
        server.close()
    assert len(refused) == 1
    assert "server" in str(refused[0])
    assert client.events == ["connect", "data", "end", ("close", False)]
    assert client.data == b"unharmed"


@bounded
async def test_a_second_async_for_raises_and_the_first_gets_every_chunk() -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    received: list[bytes] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)

    async with stream:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await wait_all_tasks_blocked()
            with pytest.raises(StreamStateError, match="already being iterated"):
                async for _ in stream:
                    pytest.fail("the second loop must not get chunks")  # pragma: no cover
            for part in (b"one", b"two"):
                await b.send_all(part)
                await wait_all_tasks_blocked()
            await b.send_eof()
        stream.end()
    assert b"".join(received) == b"onetwo"


# === Server.listen() / close() ====================================================

BAD_LISTEN = [
    ((-1,), {}, ValueError, "port"),
    ((70000,), {}, ValueError, "port"),
    ((3.5,), {}, TypeError, "port"),
    ((None,), {}, TypeError, "port"),
    ((True,), {}, TypeError, "port"),
    ((b"/tmp/sock",), {}, TypeError, "port"),
    ((0, 5), {}, TypeError, "host"),
    ((0, b"127.0.0.1"), {}, TypeError, "host"),
    ((0, "127.0.0.1"), {"backlog": "x"}, TypeError, "backlog"),
    ((0, "127.0.0.1"), {"backlog": True}, TypeError, "backlog"),
    ((0, "127.0.0.1"), {"backlog": 1.5}, TypeError, "backlog"),
    ((0, "127.0.0.1"), {"reuse_port": "y"}, TypeError, "reuse_port"),
    ((0, "127.0.0.1"), {"reuse_port": 1}, TypeError, "reuse_port"),
    ((), {"sock": "not a socket"}, TypeError, "sock"),
    ((), {"sock": 3}, TypeError, "sock"),
]


@pytest.mark.parametrize(("args", "kwargs", "error", "fragment"), BAD_LISTEN)
@bounded
async def test_bad_listen_arguments_raise_and_the_server_can_still_listen(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    fragment: str,
    unix_path: str,
    record: Any,
) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        with pytest.raises(error, match=fragment):
            await server.listen(*args, **kwargs)
        assert not server.listening
        assert server.address() is None
        assert rec.events == []
        await server.listen(unix_path)
        assert server.address() == unix_path
        server.close()
    assert rec.events == ["listening", "close"]


@bounded
async def test_listen_rejects_a_datagram_socket_and_leaves_it_open(
    unix_path: str, record: Any
) -> None:
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dgram.bind(("127.0.0.1", 0))
        async with net.create_server(echo) as server:
            rec = record(server, events=SERVER_EVENTS)
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                await server.listen(sock=dgram)
            assert dgram.fileno() != -1  # not taken over, not closed
            assert not server.listening
            assert server.address() is None
            await server.listen(unix_path)
            server.close()
    finally:
        dgram.close()
    assert rec.events == ["listening", "close"]


@bounded
async def test_listen_outside_the_block_raises_and_binds_nothing(
    unix_path: str, record: Any
) -> None:
    server = net.create_server(echo)
    rec = record(server, events=SERVER_EVENTS)
    with pytest.raises(StreamStateError, match=r"listen\(\).*async with"):
        await server.listen(unix_path)
    assert not os.path.exists(unix_path)  # noqa: ASYNC240  # nothing was bound
    async with server:
        await server.listen(unix_path)
        server.close()
    with pytest.raises(StreamStateError, match=r"listen\(\).*async with"):
        await server.listen(unix_path)  # after the block
    assert rec.events == ["listening", "close"]
    assert not server.listening
    assert server.address() is None


@bounded
async def test_listen_twice_raises_and_keeps_the_first_socket(unix_path: str, record: Any) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        await server.listen(0, "127.0.0.1")
        first = server.address()
        with pytest.raises(StreamStateError, match=r"listen\(\).*already listening"):
            await server.listen(unix_path)
        with pytest.raises(StreamStateError, match=r"listen\(\).*already listening"):
            await server.listen(0, "127.0.0.1")
        assert server.address() == first
        assert server.listening
        assert not os.path.exists(unix_path)  # noqa: ASYNC240  # the second was never bound
        client = await send_and_end((first[1], "127.0.0.1"), "first socket", record)
        server.close()
    assert client.data == b"first socket"
    assert rec.events == ["listening", "close"]


@bounded
async def test_listen_after_close_raises(unix_path: str, record: Any) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        await server.listen(unix_path)
        server.close()
        assert not server.listening
        with pytest.raises(StreamStateError, match=r"listen\(\).*closing"):
            await server.listen(0, "127.0.0.1")
    assert rec.events == ["listening", "close"]
    assert server.address() is None


@bounded
async def test_close_before_listen_emits_one_close_and_ends_the_block(record: Any) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        assert server.address() is None
        assert not server.listening
        server.close()
        server.close()
        with pytest.raises(StreamStateError, match="closing"):
            await server.listen(0, "127.0.0.1")
    assert rec.events == ["close"]
    assert server.address() is None
    assert server.connections == 0


@bounded
async def test_close_twice_gives_one_close_and_address_is_none_after(
    unix_path: str, record: Any
) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        assert (server.listening, server.address()) == (False, None)
        await server.listen(unix_path)
        assert (server.listening, server.address()) == (True, unix_path)
        assert unix_path in repr(server)
        server.close()
        assert not server.listening  # at once
        server.close()
        await server.wait_closed()
        assert server.address() is None
        server.close()
    assert rec.events == ["listening", "close"]
    assert (server.listening, server.address()) == (False, None)


def test_close_on_a_server_that_never_ran_does_nothing(record: Any) -> None:
    server = net.create_server()
    rec = record(server, events=SERVER_EVENTS)
    server.close()
    server.close()
    assert rec.events == []
    assert (server.listening, server.address(), server.connections) == (False, None, 0)


@bounded
async def test_cancelled_listen_leaves_the_server_not_listening(
    unix_path: str, record: Any
) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.listen(0, "127.0.0.1")
        assert scope.cancelled_caught
        assert (server.listening, server.address()) == (False, None)
        assert rec.events == []
        await server.listen(unix_path)  # a later listen() works
        client = await send_and_end((unix_path,), "after cancel", record)
        server.close()
    assert client.data == b"after cancel"
    assert rec.events == ["listening", "close"]


@bounded
async def test_bind_to_an_address_not_on_this_host_raises_and_can_retry(
    unix_path: str, record: Any
) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        with pytest.raises(OSError) as info:
            await server.listen(0, "192.0.2.1")  # TEST-NET-1: never a local address
        assert info.value.errno == errno.EADDRNOTAVAIL
        assert info.value.code == "EADDRNOTAVAIL"
        assert (server.listening, server.address()) == (False, None)
        await server.listen(unix_path)
        server.close()
    assert rec.events == ["listening", "close"]


# === Server: failures and unusual listeners ============================================


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    """A bound IPv4 socket, not yet listening, for ``listen(sock=...)``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.bind(("127.0.0.1", 0))
        yield listening


async def listen_then_break_accept(server: net.Server, listening: socket.socket) -> None:
    """Listen on *listening*, then shut it down: every accept() now fails
    with EINVAL, a lasting failure."""
    await server.listen(sock=listening)
    listening.shutdown(socket.SHUT_RDWR)


@bounded
async def test_lasting_accept_failure_emits_error_then_close(
    record: Any, bound: socket.socket
) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        await listen_then_break_accept(server, bound)
        await server.wait_closed()
        assert not server.listening
        assert server.address() is None
    assert len(rec.events) == 3
    assert rec.events[0] == "listening"
    assert rec.events[2] == "close"
    name, error = rec.events[1]
    assert name == "error"
    assert isinstance(error, OSError)
    assert error.code == "EINVAL"


@bounded
async def test_an_async_error_listener_of_an_accept_failure_runs_to_its_end_before_close(
    bound: socket.socket,
) -> None:
    """The server closed (cancelling its accept loop) before emitting
    'error': an async listener was cancelled at its first checkpoint, and
    'close' could come before it ended."""
    events: list[str] = []

    async def on_error(error: BaseException) -> None:
        events.append("error")
        for _ in range(5):
            await trio.sleep(0.01)
        events.append("error listener done")

    async with net.create_server(echo) as server:
        server.on("error", on_error)
        server.on("close", lambda: events.append("close"))
        await listen_then_break_accept(server, bound)
        await server.wait_closed()
    assert events == ["error", "error listener done", "close"]


@bounded
async def test_an_async_error_listener_of_an_accept_failure_ends_with_the_block(
    bound: socket.socket,
) -> None:
    """The listener ran in no scope the block's shutdown cancels: a failing
    body waited for it to end."""
    events: list[str] = []
    started = trio.Event()

    async def on_error(error: BaseException) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            events.append("error listener cancelled")
            raise

    with pytest.raises(RuntimeError, match="body failed"), trio.move_on_after(5) as hang:
        async with net.create_server(echo) as server:
            server.on("error", on_error)
            server.on("close", lambda: events.append("close"))
            await listen_then_break_accept(server, bound)
            await started.wait()
            raise RuntimeError("body failed")
    assert not hang.cancel_called, "the block waited for the 'error' listener"
    assert sorted(events) == ["close", "error listener cancelled"]


@bounded
async def test_an_error_listener_that_listens_anew_keeps_the_server_listening(
    bound: socket.socket,
) -> None:
    """The server closed after the listener returned, shutting down the
    socket the listener had just opened."""
    relistened = trio.Event()

    async def on_error(error: BaseException) -> None:
        server.close()
        await server.wait_closed()
        await server.listen(0, "127.0.0.1")
        relistened.set()

    async with net.create_server(lambda stream: stream.end(b"hi")) as server:
        server.on("error", on_error)
        await listen_then_break_accept(server, bound)
        await relistened.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert server.listening
        address = server.address()
        assert isinstance(address, tuple)
        async with await trio.open_tcp_stream("127.0.0.1", address[1]) as client:
            assert await client.receive_some(10) == b"hi"
        server.close()


@bounded
async def test_a_server_listening_anew_when_its_block_is_cancelled_still_closes(
    bound: socket.socket,
) -> None:
    """The block had seen the first 'close' and waited for its tasks when it
    was cancelled: the accept loop of the new socket ended without closing
    it, and the server still said it was listening."""
    events: list[str] = []
    relistened = trio.Event()
    server = net.create_server(echo)

    async def on_error(error: BaseException) -> None:
        server.close()
        await server.wait_closed()
        await server.listen(0, "127.0.0.1")
        relistened.set()

    server.on("error", on_error)
    server.on("close", lambda: events.append("close"))
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as stop:

            async def cancel_when_relistened() -> None:
                await relistened.wait()
                await trio.testing.wait_all_tasks_blocked()
                stop.cancel()  # the block's body has ended: it waits for its tasks

            nursery.start_soon(cancel_when_relistened)
            async with server:
                await listen_then_break_accept(server, bound)
    assert stop.cancelled_caught
    assert events == ["close", "close"]
    assert not server.listening
    assert server.address() is None


@bounded
async def test_lasting_accept_failure_without_error_listener_is_raised_from_the_block(
    record: Any, bound: socket.socket
) -> None:
    with pytest.raises(OSError) as info:
        async with net.create_server(echo) as server:
            rec = record(server, events=("listening", "close"))
            await listen_then_break_accept(server, bound)
            await trio.sleep_forever()
    assert type(info.value) is OSError  # unwrapped, not an ExceptionGroup
    assert info.value.code == "EINVAL"
    assert rec.events == ["listening", "close"]


class _LogEvent(logging.Handler):
    """Sets a Trio event when the library logs a record."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = trio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.event.set()


@bounded
async def test_accept_out_of_file_descriptors_is_retried(record: Any) -> None:
    handler = _LogEvent()
    library_logger = logging.getLogger("trio_netstream")
    library_logger.addHandler(handler)
    served = trio.Event()

    def on_connection(conn: Stream) -> None:
        echo(conn)
        served.set()

    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        async with net.create_server(on_connection) as server:
            rec = record(server, events=SERVER_EVENTS)
            await server.listen(0, "127.0.0.1")
            client.setblocking(False)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            lowest_free = os.open(os.devnull, os.O_RDONLY)
            os.close(lowest_free)
            try:
                # No new descriptor can be made: the server's accept() gets EMFILE.
                resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
                try:
                    client.connect(server.address())
                except BlockingIOError:
                    pass
                await handler.event.wait()
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await served.wait()  # the retry accepted the pending connection
            client.setblocking(True)
            client.sendall(b"ping")
            client.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := await trio.to_thread.run_sync(client.recv, 100):
                got += chunk
            server.close()
    finally:
        client.close()
        library_logger.removeHandler(handler)
    assert got == b"ping"
    assert rec.events == ["listening", "close"]  # no 'error'
    assert any("Too many open files" in message for message in handler.messages)


class _Session:
    """A connection handler that is an awaitable object, not a coroutine."""

    def __init__(self, conn: Stream) -> None:
        self.conn = conn

    def __await__(self) -> Generator[Any, None, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        async for chunk in self.conn:
            self.conn.write(chunk.upper())
        self.conn.end()


async def _upper_session(conn: Stream) -> None:
    await _Session(conn)


def _returns_coroutine(conn: Stream) -> Any:
    return _upper_session(conn)


@pytest.mark.parametrize(
    "listener", [_Session, _returns_coroutine], ids=["awaitable-object", "returns-coroutine"]
)
@bounded
async def test_awaitable_returned_by_a_connection_listener_runs_as_its_task(
    listener: Any, unix_path: str, record: Any
) -> None:
    async with net.create_server(listener) as server:
        await server.listen(unix_path)
        client = await send_and_end((unix_path,), "shout", record)
        server.close()
    assert client.events == ["connect", "data", "end", ("close", False)]
    assert client.data == b"SHOUT"


@bounded
async def test_async_connection_listener_that_never_awaits(unix_path: str, record: Any) -> None:
    server_side: list[Any] = []

    async def greet(conn: Stream) -> None:
        server_side.append(record(conn))
        conn.end(b"bye")  # returns without ever suspending

    async with net.create_server(greet) as server:
        await server.listen(unix_path)
        client = net.create_connection(unix_path)
        rec = record(client)
        client.on("end", client.end)
        async with client:
            pass
        server.close()
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == b"bye"
    assert server_side[0].events == ["connect", "end", ("close", False)]


@bounded
async def test_async_server_listeners_are_awaited(unix_path: str) -> None:
    order: list[str] = []

    async def on_listening() -> None:
        await trio.lowlevel.checkpoint()
        order.append("listening")

    async def on_close() -> None:
        await trio.lowlevel.checkpoint()
        order.append("close")

    async with net.create_server(echo) as server:
        server.on("listening", on_listening)
        server.on("close", on_close)
        await server.listen(unix_path)
        assert order == ["listening"]  # listen() returned after the listener finished
        server.close()
        await server.wait_closed()
        assert order == ["listening", "close"]
    assert order == ["listening", "close"]


@bounded
async def test_listening_listener_exception_is_raised_from_the_server_block(
    unix_path: str,
) -> None:
    boom = Boom("listening listener")
    closes: list[str] = []

    def fail() -> None:
        raise boom

    with pytest.raises(Boom) as info:
        async with net.create_server(echo) as server:
            server.on("listening", fail)
            server.on("close", lambda: closes.append("close"))
            await server.listen(unix_path)
            await trio.sleep_forever()
    assert info.value is boom
    assert closes == ["close"]
    assert not server.listening
    assert not os.path.exists(unix_path)  # noqa: ASYNC240  # the run is over


@bounded
async def test_socket_file_removed_by_someone_else_still_closes_cleanly(
    unix_path: str, record: Any
) -> None:
    async with net.create_server(echo) as server:
        rec = record(server, events=SERVER_EVENTS)
        await server.listen(unix_path)
        os.unlink(unix_path)  # e.g. a cleanup script got there first
        server.close()
    assert rec.events == ["listening", "close"]
    assert server.address() is None


# === Stream: lifecycle paths ============================================================


@bounded
async def test_cancellation_while_the_block_waits_for_close_destroys_the_stream(
    record: Any, autojump_clock: Any
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    with trio.move_on_after(5) as scope:
        async with stream:
            stream.write(b"sent")
        # The peer never ends, so the block waits for 'close' until cancelled.
    assert scope.cancelled_caught
    assert rec.events == ["connect", ("close", False)]
    assert stream.ready_state == "closed"
    assert await read_to_eof(b) == b"sent"  # the transport was closed


@bounded
async def test_destroy_right_after_connect_cancels_the_attempt(unix_path: str, record: Any) -> None:
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(unix_path)
        listening.listen(1)
        listening.setblocking(False)
        stream = Stream()
        rec = record(stream)
        async with stream:
            stream.connect(unix_path)
            assert stream.ready_state == "opening"
            assert unix_path in repr(stream)
            stream.destroy()
            assert stream.ready_state == "closed"
        with pytest.raises(BlockingIOError):
            listening.accept()  # no connection was ever made
    finally:
        listening.close()
    assert rec.events == [("close", False)]


@bounded
async def test_set_timeout_restart_disable_and_reenable(record: Any, autojump_clock: Any) -> None:
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        stream.set_timeout(1000)
        await trio.sleep(0.5)
        stream.set_timeout(1000)  # starts a new idle period
        await trio.sleep(0.7)
        assert rec.events == ["connect"]
        stream.set_timeout(0)
        assert stream.timeout == 0
        await trio.sleep(5)
        assert rec.events == ["connect"]
        stream.setTimeout(2000)
        assert stream.timeout == 2000
        await trio.sleep(1.5)
        assert rec.events == ["connect"]
        await trio.sleep(1)
        assert rec.events == ["connect", "timeout"]
        stream.destroy()
    assert rec.events == ["connect", "timeout", ("close", False)]


@bounded
async def test_timeout_waits_for_a_running_async_data_listener(autojump_clock: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    order: list[str] = []

    async def slow(chunk: bytes) -> None:
        order.append("data start")
        await trio.sleep(5)
        order.append("data end")

    stream.on("data", slow)
    stream.on("timeout", lambda: order.append("timeout"))
    stream.set_timeout(1000)
    async with stream:
        await b.send_all(b"x")
        await trio.sleep(6)
        assert order == ["data start", "data end", "timeout"]  # never interleaved
        stream.destroy()


@bounded
async def test_many_queued_writes_arrive_whole_and_in_order() -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    chunks = [b"a" * 100, b"b" * 200_000, b"c" * 100_000, b"d" * 300_000, b"e" * 10]
    for chunk in chunks:
        stream.write(chunk)
    assert stream.bytes_written == sum(map(len, chunks))
    async with stream:
        stream.end()
        assert await read_to_eof(b) == b"".join(chunks)
        await b.send_eof()


@bounded
async def test_bytes_held_by_the_decoder_come_out_when_encoding_is_dropped_before_eof(
    record: Any,
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    stream.set_encoding("utf8")
    async with stream:
        await b.send_all(b"ok\xe3\x81")  # two bytes of U+3042: held by the decoder
        await wait_all_tasks_blocked()
        stream.set_encoding(None)
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    assert rec.chunks == ["ok", b"\xe3\x81"]
    assert rec.events == ["connect", "data", "end", ("close", False)]


@bounded
async def test_data_received_before_any_listener_goes_to_the_first_one(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream, events=("connect", "end", "close"))
    got: list[bytes] = []
    async with stream:
        await b.send_all(b"early")
        await wait_all_tasks_blocked()
        assert got == []
        stream.on("data", got.append)
        await wait_all_tasks_blocked()
        assert got == [b"early"]  # without any further byte from the peer
        await b.send_all(b"late")
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    assert got == [b"early", b"late"]
    assert rec.events == ["connect", "end", ("close", False)]


@bounded
async def test_async_for_after_end_yields_what_nobody_took(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream, events=("connect", "end", "close"))
    async with stream:
        await b.send_all(b"kept")
        await b.send_eof()
        await wait_all_tasks_blocked()
        assert stream.ready_state == "writeOnly"
        got = [chunk async for chunk in stream]
        assert got == [b"kept"]
        stream.end()
    assert rec.events == ["connect", "end", ("close", False)]


@bounded
async def test_drain_raises_the_error_that_closed_the_stream(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await b.receive_stream.aclose()  # the peer stops reading: sends fail
        stream.write(b"lost")
        with pytest.raises(BrokenPipeError) as info:
            await stream.drain()
        assert info.value.code == "EPIPE"
    assert rec.events == ["connect", ("error", info.value), ("close", True)]


@bounded
async def test_end_on_a_stream_without_send_eof_flushes_then_closes_it(record: Any) -> None:
    """``trio.SSLStream`` has no ``send_eof()``: ``end()`` flushes, then closes it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("example.org").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    a, b = memory_stream_pair()
    peer = trio.SSLStream(b, server_context, server_side=True)
    stream = Stream.wrap(trio.SSLStream(a, client_context, server_hostname="example.org"))
    rec = record(stream)
    peer_got = bytearray()

    async def read_peer() -> None:
        while chunk := await peer.receive_some():
            peer_got.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_peer)
        async with stream:
            await peer.send_all(b"from peer")
            await wait_all_tasks_blocked()
            stream.write(b"hello ")
            stream.end("world")
            assert stream.ready_state == "readOnly"
    assert bytes(peer_got) == b"hello world"
    assert rec.data == b"from peer"
    assert rec.events[:2] == ["connect", "data"]
    assert rec.events[-1] == ("close", False)
    assert not any(isinstance(event, tuple) and event[0] == "error" for event in rec.events)


# === listener exceptions are never swallowed nor wrapped ===================================


@bounded
async def test_drain_listener_exception_is_raised_from_the_block(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a, high_water_mark=1)
    rec = record(stream)
    boom = Boom("drain listener")

    def fail() -> None:
        raise boom

    stream.on("drain", fail)
    with pytest.raises(Boom) as info:
        async with stream:
            assert stream.write(b"xx") is False
            await trio.sleep_forever()
    assert info.value is boom
    assert rec.events == ["connect", "drain", ("close", False)]
    assert await b.receive_some() == b"xx"


@pytest.mark.parametrize("event", ["close", "error"])
@bounded
async def test_late_listener_exception_is_raised_unwrapped_from_the_block(event: str) -> None:
    """SPEC: a listener's exception propagates out of the ``async with``, and
    "a user never has to catch an ``ExceptionGroup`` made by the library"."""
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    boom = Boom(f"{event} listener")

    def fail(*args: object) -> None:
        raise boom

    stream.on(event, fail)
    with pytest.raises(Boom) as info:
        async with stream:
            # 'error' needs a failure to be emitted; 'close' comes after any destroy().
            stream.destroy(ConnectionResetError("gone") if event == "error" else None)
    assert info.value is boom
    assert stream.ready_state == "closed"


@bounded
async def test_server_side_close_listener_exception_is_raised_unwrapped_from_the_server(
    unix_path: str, record: Any
) -> None:
    boom = Boom("server-side close listener")

    def handler(conn: Stream) -> None:
        def fail(had_error: bool) -> None:
            raise boom

        conn.on("close", fail)
        echo(conn)

    with pytest.raises(Boom) as info:
        async with net.create_server(handler) as server:
            await server.listen(unix_path)
            await send_and_end((unix_path,), "x", record)
            await trio.sleep_forever()
    assert info.value is boom
