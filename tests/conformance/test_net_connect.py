"""Connecting: state while connecting, destroy before the connection is
up, argument checks, and connection failures reported as ``'error'``
(Node's test-net-connect-*.js, test-net-socket-connecting.js,
test-net-dns-error.js, test-net-pipe-connect-errors.js...)."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net

from ._support import LOOPBACK, code_of, port_of, unused_port

# Node's test-net-dns-error.js host: 256 characters in one label. It can
# never resolve, and it fails without any DNS query leaving the machine.
UNRESOLVABLE = "********" * 32


async def test_ready_state_while_connecting_and_once_connected(record: Any) -> None:
    """From test-net-socket-connecting.js.

    Node's ``socket.connecting`` is our ``ready_state == "opening"``: true
    right after ``connect()``, false (``"open"``) in the ``'connect'``
    listener.
    """
    states: list[str] = []
    with trio.fail_after(10):
        async with net.create_server(lambda conn: conn.end()) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)
            states.append(client.ready_state)

            def on_connect() -> None:
                states.append(client.ready_state)
                client.end()

            client.on("connect", on_connect)
            async with client:
                pass
            server.close()
    assert states == ["opening", "open"]
    assert rec.events == ["connect", "end", ("close", False)]


async def test_remote_address_unset_while_connecting(record: Any) -> None:
    """From test-net-remote-address.js.

    ``remote_address`` is ``None`` (Node: ``undefined``) while connecting
    and set once ``'connect'`` is emitted.
    """
    seen: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(allow_half_open=False) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)
            assert client.ready_state == "opening"
            assert client.remote_address is None

            def on_connect() -> None:
                seen.append(client.remote_address)
                client.end()

            client.on("connect", on_connect)
            async with client:
                pass
            server.close()
    assert seen == [LOOPBACK]
    assert rec.events == ["connect", "end", ("close", False)]


async def test_address_fields_readable_while_connecting(record: Any) -> None:
    """From test-net-during-close.js.

    Reading ``remote_address``, ``remote_family`` and ``remote_port`` of a
    stream that is still connecting (its server already closing) does not
    raise; they are ``None``. The stream is then destroyed before it
    connected: only ``'close'(False)`` follows.
    """
    with trio.fail_after(10):
        async with net.create_server(lambda conn: conn.end()) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)
            server.close()
            assert (client.remote_address, client.remote_family, client.remote_port) == (
                None,
                None,
                None,
            )
            async with client:
                client.destroy()
    assert rec.events == [("close", False)]


async def test_destroy_never_connected_stream_emits_nothing(record: Any) -> None:
    """From test-net-connect-destroy.js.

    Deliberate difference (docs/behaviour.md): Node emits ``'close'`` when
    ``destroy()`` is called on a socket that never connected; ours does
    nothing and emits no event.
    """
    stream = net.Stream()
    rec = record(stream)
    async with stream:
        stream.destroy()
        await wait_all_tasks_blocked()
    assert stream.ready_state == "closed"
    assert rec.events == []


async def test_destroy_right_after_connect_call(record: Any) -> None:
    """From test-net-connect-immediate-destroy.js.

    ``destroy()`` right after ``connect()``: neither ``'connect'`` nor
    ``'error'`` is emitted, only ``'close'(False)``.
    """
    with trio.fail_after(10):
        async with net.create_server() as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server), LOOPBACK)
            rec = record(client)
            server.close()
            async with client:
                client.destroy()
    assert rec.events == [("close", False)]


async def test_destroy_while_resolving_a_hostname(record: Any) -> None:
    """From test-net-connect-after-destroy.js.

    A connection to a host name that must be resolved, destroyed at once:
    no crash, no ``'connect'``, no ``'error'``, one ``'close'(False)``.
    (Node resolves google.com; we stay on loopback with ``localhost``.)
    """
    client = net.create_connection(unused_port(), "localhost")
    rec = record(client)
    with trio.fail_after(10):
        async with client:
            await trio.lowlevel.checkpoint()
            client.destroy()
    assert rec.events == [("close", False)]


async def test_refused_connection_errors_once_and_closes_once(record: Any) -> None:
    """From test-net-socket-destroy-twice.js.

    Connecting to a port nobody listens on gives one ``'error'``
    (``ConnectionRefusedError``, ``code == "ECONNREFUSED"``); calling
    ``destroy()`` from the ``'error'`` listener does not add a second
    ``'close'``.
    """
    client = net.create_connection(unused_port())
    rec = record(client)
    client.on("error", lambda err: client.destroy())
    with trio.fail_after(10):
        async with client:
            pass
    assert len(rec.events) == 2
    name, err = rec.events[0]
    assert name == "error"
    assert isinstance(err, ConnectionRefusedError)
    assert err.errno == errno.ECONNREFUSED
    assert code_of(err) == "ECONNREFUSED"
    assert rec.events == [("error", err), ("close", True)]


async def test_end_before_a_failed_lookup_still_reports_error(record: Any) -> None:
    """From test-net-connect-immediate-finish.js.

    ``end()`` right after connecting to a host that cannot resolve: the
    failure still arrives as ``'error'`` (then ``'close'(True)``); it is
    not lost because the writable side was already ended. (Node's host is
    ``no.way.you.will.resolve.this``; resolving it would query a DNS
    server, so we use the over-long label of test-net-dns-error.js.)
    """
    client = net.create_connection(80, UNRESOLVABLE)
    rec = record(client)
    client.end()
    with trio.fail_after(10):
        async with client:
            pass
    assert [event[0] for event in rec.events] == ["error", "close"]
    assert rec.events[1] == ("close", True)


async def test_unresolvable_host_reports_enotfound(record: Any) -> None:
    """From test-net-dns-error.js and test-net-better-error-messages-port-hostname.js.

    A host name that cannot resolve gives ``'error'`` with
    ``err.code == "ENOTFOUND"`` and no ``'connect'``. (Node's ``'lookup'``
    event is not part of our API.)
    """
    client = net.create_connection(42, UNRESOLVABLE)
    rec = record(client)
    with trio.fail_after(10):
        async with client:
            pass
    assert [event[0] for event in rec.events] == ["error", "close"]
    err = rec.events[0][1]
    assert isinstance(err, OSError)
    assert code_of(err) == "ENOTFOUND"
    assert rec.events[1] == ("close", True)


async def test_unix_connect_errors(record: Any, unix_path: str) -> None:
    """From test-net-pipe-connect-errors.js.

    Connecting to a path that is a regular file fails with ``ENOTSOCK`` or
    ``ECONNREFUSED``; to a path that does not exist with ``ENOENT``; both as
    ``'error'`` then ``'close'(True)``. (Node's ``EACCES`` case is skipped
    when running as root, as in Node; it is not translated here.)
    """
    directory = Path(unix_path).parent
    regular = directory / "0.txt"
    regular.write_text("")
    missing = directory / "no-ent-file"
    codes: list[str] = []
    with trio.fail_after(10):
        for path in (regular, missing):
            client = net.create_connection(os.fspath(path))
            rec = record(client)
            async with client:
                pass
            assert [event[0] for event in rec.events] == ["error", "close"]
            assert rec.events[1] == ("close", True)
            err = rec.events[0][1]
            assert isinstance(err, OSError)
            assert err.errno is not None
            assert code_of(err) == errno.errorcode[err.errno]
            codes.append(code_of(err))
    assert codes[0] in ("ENOTSOCK", "ECONNREFUSED")
    assert codes[1] == "ENOENT"


@pytest.mark.parametrize(
    ("port", "error"),
    [
        (True, TypeError),
        (False, TypeError),
        ([], TypeError),
        ({}, TypeError),
        (None, TypeError),
        (math.nan, TypeError),
        (math.inf, TypeError),
        (-1, ValueError),
        (65536, ValueError),
    ],
)
@pytest.mark.parametrize("how", ["create_connection", "connect", "Stream.connect"])
async def test_bad_ports_raise_at_the_call(port: Any, error: type[Exception], how: str) -> None:
    """From test-net-connect-options-port.js.

    A port of the wrong type raises ``TypeError`` at the call (Node:
    ``ERR_INVALID_ARG_TYPE``), an int out of range ``ValueError`` (Node:
    ``ERR_SOCKET_BAD_PORT``, a ``RangeError``), through every entry point.
    Deliberate difference (SPEC): a ``str`` argument is a UNIX socket path,
    not a port number, so Node's ``"80"`` / ``"0x50"`` spellings do not
    apply; NaN and infinity are floats, hence ``TypeError`` here.
    """
    with pytest.raises(error):
        if how == "create_connection":
            net.create_connection(port)
        elif how == "connect":
            net.connect(port, "localhost")
        else:
            net.Stream().connect(port)


async def test_valid_ports_connect_through_every_entry_point(record: Any) -> None:
    """From test-net-connect-options-port.js (the ``canConnect`` part).

    ``create_connection(port)``, ``connect(port, "localhost")`` and
    ``Stream().connect(port)`` all reach a server listening on
    ``localhost`` and get its data.
    """
    received: list[bytes] = []
    with trio.fail_after(10):
        async with net.create_server(lambda conn: conn.end("ok")) as server:
            await server.listen(0, "localhost")
            port = port_of(server)
            clients = [
                net.create_connection(port, "localhost"),
                net.connect(port, "localhost"),
                net.Stream().connect(port, "localhost"),
            ]
            recs = [record(client) for client in clients]
            for client in clients:
                client.on("end", client.end)
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_run, client)
            server.close()
    for rec in recs:
        assert rec.events == ["connect", "data", "end", ("close", False)]
        received.append(rec.data)
    assert received == [b"ok", b"ok", b"ok"]


async def _run(stream: net.Stream) -> None:
    async with stream:
        pass
