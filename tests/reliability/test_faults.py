"""Fault injection, in process, over real sockets (loopback TCP, UNIX paths,
TLS) and in-memory streams: peers that reset or vanish while we read or
write, failed connects seen through every consumer, ``destroy()`` with
writes queued, listeners that raise during a fault, and cancellation (or
``destroy()``) at every scheduling point of connect, read, write, end and
the TLS handshake.

The faulty peers are plain Trio sockets (a reset is ``SO_LINGER (1, 0)``
then ``close()``; on a UNIX socket, closing with unread data), a child
process killed with ``SIGKILL``, or a trio_netstream server when the peer
only has to be well behaved. Every test body runs under
``trio.fail_after``, so a hang fails instead of blocking the run.
"""

from __future__ import annotations

import errno
import functools
import gc
import random
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from netstream_testing import NETWORK_LIMIT, Certs, KiB, MiB, Tally, open_fds, sha
from trio.testing import lockstep_stream_pair, memory_stream_pair, wait_all_tasks_blocked

import trio_netstream as net
from trio_netstream import StreamStateError

#: A peer in a child process: ``accept FD`` accepts one connection on an
#: inherited listening socket, ``connect PORT`` connects to 127.0.0.1; either
#: way it prints ``ready`` and then never reads, until it is killed.
CHILD_PEER = """
import socket, sys, time
mode, arg = sys.argv[1], int(sys.argv[2])
if mode == "accept":
    conn, _ = socket.socket(fileno=arg).accept()
else:
    conn = socket.create_connection(("127.0.0.1", arg))
print("ready", flush=True)
time.sleep(60)
"""


# -- helpers ------------------------------------------------------------------------


def pattern(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def tasks_under(task: trio.lowlevel.Task) -> int:
    """How many tasks live below *task* (its nurseries' children, recursively)."""
    return sum(
        1 + tasks_under(child) for nursery in task.child_nurseries for child in nursery.child_tasks
    )


def assert_reset(err: BaseException) -> None:
    assert type(err) is ConnectionResetError, repr(err)
    assert err.errno == errno.ECONNRESET
    assert err.code == "ECONNRESET"  # type: ignore[attr-defined]  # set by the library


def assert_closed_for_good(stream: net.Stream, rec: Any) -> None:
    """After its ``'close'``: closed, no socket, writes refused, destroy() silent."""
    events = list(rec.events)
    assert stream.ready_state == "closed"
    assert stream.socket is None
    with pytest.raises(StreamStateError):
        stream.write(b"after close")
    stream.destroy()
    assert rec.events == events


async def linger_reset(sock: trio.SocketStream) -> None:
    """Close *sock* with ``SO_LINGER (1, 0)``: the kernel sends RST, not FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await sock.aclose()


@asynccontextmanager
async def raw_listener(
    kind: str, unix_path: str
) -> AsyncIterator[tuple[trio.SocketListener, tuple[Any, ...]]]:
    """A plain Trio listener (``"tcp"`` on 127.0.0.1 or ``"unix"``), and the
    ``create_connection`` arguments that reach it."""
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        if kind == "unix":
            await sock.bind(unix_path)
            target: tuple[Any, ...] = (unix_path,)
        else:
            await sock.bind(("127.0.0.1", 0))
            target = (sock.getsockname()[1], "127.0.0.1")
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    try:
        yield listener, target
    finally:
        await listener.aclose()


@asynccontextmanager
async def child_peer(mode: str, arg: int) -> AsyncIterator[trio.Process]:
    """Run :data:`CHILD_PEER` (see :func:`wait_ready`); killed and reaped on
    the way out."""
    pass_fds = (arg,) if mode == "accept" else ()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD_PEER, mode, str(arg)],
        stdout=subprocess.PIPE,
        pass_fds=pass_fds,
    )
    try:
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            proc.kill()
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


async def wait_ready(proc: trio.Process) -> None:
    """Wait until the child peer holds its connection (it printed ``ready``)."""
    assert proc.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await proc.stdout.receive_some(64)
        assert chunk, "the child peer exited early"
        line += chunk
    assert line == b"ready\n"


@asynccontextmanager
async def rude_peer(how: str, port: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A peer connected to 127.0.0.1:*port* that never reads: a Trio socket
    (``"reset"``) or a child process (``"sigkill"``). Yields what makes it
    vanish: an RST, or ``SIGKILL`` (the kernel then resets the connection,
    since unread data is left)."""
    if how == "sigkill":
        async with child_peer("connect", port) as proc:
            await wait_ready(proc)

            async def kill() -> None:
                proc.kill()
                await proc.wait()

            yield kill
    else:
        sock = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            yield functools.partial(linger_reset, sock)
        finally:
            await sock.aclose()


def tls_options(kind: str, certs: Certs) -> dict[str, Any]:
    if kind != "tls":
        return {}
    return {"ssl": certs.client_ctx, "server_hostname": "localhost"}


# -- the peer resets while we read ----------------------------------------------------


@pytest.mark.parametrize("consumer", ["listener", "async_for", "unhandled"])
@pytest.mark.parametrize("kind", ["tcp", "unix", "tls"])
async def test_peer_reset_while_reading_delivers_every_byte_then_one_error(
    kind: str, consumer: str, unix_path: str, certs: Certs, record: Any
) -> None:
    """Every byte the peer sent before its reset is delivered, then exactly one
    ``ECONNRESET`` (through an ``'error'`` listener, ``async for``, or raised
    from the block), then ``'close'(True)`` and no ``'end'``."""
    with trio.fail_after(NETWORK_LIMIT):
        payload = pattern(1 * MiB, 1)
        got_all = trio.Event()

        async def peer(listener: trio.SocketListener) -> None:
            sock = await listener.accept()
            out: trio.abc.Stream = sock
            if kind == "tls":
                out = trio.SSLStream(sock, certs.server_ctx, server_side=True)
            await out.send_all(payload)
            await got_all.wait()  # our side has read it all: nothing is in flight
            if kind == "unix":
                # A UNIX socket closed with unread data resets its peer.
                assert await sock.socket.recv(6, socket.MSG_PEEK) == b"unread"
                await sock.aclose()
            else:
                await linger_reset(sock)

        async with (
            raw_listener("unix" if kind == "unix" else "tcp", unix_path) as (listener, target),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(peer, listener)
            stream = net.create_connection(*target, **tls_options(kind, certs))
            if kind == "unix":
                stream.write(b"unread")  # its 'drain' races with 'data': not recorded
            names = ["connect", "secure", "end", "close"]
            if consumer == "listener":
                names += ["data", "timeout", "error"]
            rec = record(stream, events=names)
            received = bytearray()

            def on_data(chunk: bytes) -> None:
                received.extend(chunk)
                if len(received) == len(payload):
                    got_all.set()

            if consumer == "listener":
                stream.on("data", on_data)
                async with stream:
                    pass
                err = rec.events[-2][1]
            elif consumer == "async_for":
                async with stream:
                    with pytest.raises(ConnectionResetError) as info:
                        async for chunk in stream:
                            on_data(chunk)
                err = info.value
            else:
                stream.on("data", on_data)
                with pytest.raises(ConnectionResetError) as info:
                    async with stream:
                        await trio.sleep_forever()
                err = info.value

        secure = ["secure"] if kind == "tls" else []
        data = ["data"] if consumer == "listener" else []
        error = [("error", err)] if consumer == "listener" else []
        assert rec.events == ["connect", *secure, *data, *error, ("close", True)]
        assert_reset(err)
        assert sha(received) == sha(payload)
        if kind == "tls":
            assert stream.bytes_read >= len(payload)
        else:
            assert stream.bytes_read == len(payload)  # the peer sent nothing else
        assert_closed_for_good(stream, rec)


# -- the peer resets or vanishes while we write -------------------------------------------


@pytest.mark.parametrize("how", ["tcp-linger", "tcp-unread", "unix-unread", "tls-linger"])
async def test_peer_reset_with_a_large_write_queued(
    how: str, unix_path: str, certs: Certs, record: Any
) -> None:
    """A peer that resets (or closes without reading) while ``write()`` is over
    the high-water mark: one ``'error'`` (``ECONNRESET``, the error a read
    reports), ``await drain()`` raises that same error, ``'close'(True)``,
    and no ``'drain'``."""
    with trio.fail_after(NETWORK_LIMIT):
        kind, fault = how.split("-")
        queued = trio.Event()

        async def peer(listener: trio.SocketListener) -> None:
            sock = await listener.accept()
            if kind == "tls":
                await trio.SSLStream(sock, certs.server_ctx, server_side=True).do_handshake()
            await queued.wait()  # read nothing of it
            if fault == "linger":
                await linger_reset(sock)
            else:
                await sock.aclose()

        async with (
            raw_listener("unix" if kind == "unix" else "tcp", unix_path) as (listener, target),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(peer, listener)
            stream = net.create_connection(*target, **tls_options(kind, certs))
            rec = record(stream)
            ready = trio.Event()
            stream.on("secure" if kind == "tls" else "connect", ready.set)
            async with stream:
                await ready.wait()
                assert stream.write(pattern(16 * MiB, 2)) is False
                await wait_all_tasks_blocked(cushion=0.05)  # the writer is stuck
                assert stream.write_queue_size > 0
                queued.set()
                with pytest.raises(OSError) as info:
                    await stream.drain()

        err = info.value
        assert rec.events == ["connect", ("error", err), ("close", True)]
        assert_reset(err)
        assert_closed_for_good(stream, rec)


async def test_peer_process_killed_with_a_write_queued(record: Any) -> None:
    """The peer is a process that accepted and never read; ``SIGKILL`` makes
    the kernel reset the connection: one ``ECONNRESET``, ``'close'(True)``,
    and a pending ``drain()`` raises instead of hanging."""
    with trio.fail_after(NETWORK_LIMIT):
        listening = socket.socket()
        try:
            listening.bind(("127.0.0.1", 0))
            listening.listen(1)
            port = listening.getsockname()[1]
            stream = net.create_connection(port)
            rec = record(stream)
            outcome: list[BaseException] = []

            async def wait_drain() -> None:
                with pytest.raises(ConnectionResetError) as info:
                    await stream.drain()
                outcome.append(info.value)

            async with child_peer("accept", listening.fileno()) as proc:
                listening.close()  # the child holds the only copy now
                async with stream:
                    assert stream.write(pattern(16 * MiB, 3)) is False
                    await wait_ready(proc)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(wait_drain)
                        await wait_all_tasks_blocked(cushion=0.05)
                        assert stream.ready_state == "open"
                        assert stream.write_queue_size > 0
                        proc.kill()
                assert await proc.wait() == -9
        finally:
            listening.close()

        (err,) = outcome
        assert rec.events == ["connect", ("error", err), ("close", True)]
        assert_reset(err)
        assert_closed_for_good(stream, rec)


@pytest.mark.parametrize("how", ["reset", "sigkill"])
async def test_server_keeps_serving_while_one_peer_vanishes_mid_transfer(
    how: str, record: Any
) -> None:
    """A server-side stream whose peer resets (or whose peer process is
    killed) with a reply queued gets one ``ECONNRESET`` and ``'close'(True)``;
    the connections in flight at that moment finish intact and the server
    goes on listening."""
    with trio.fail_after(NETWORK_LIMIT):
        # More than the kernel holds for a peer that never reads (a send
        # buffer grows to tcp_wmem's 4 MiB here): a reply stays queued.
        payload = pattern(16 * MiB, 4)
        server_recs: list[Any] = []
        server_streams: list[net.Stream] = []
        accepted = Tally()
        closed = Tally()
        paused = Tally()
        resume = trio.Event()
        clients: list[tuple[Any, bytearray]] = []

        def on_connection(conn: net.Stream) -> None:
            server_recs.append(record(conn))
            server_streams.append(conn)
            conn.on("close", closed.add)
            accepted.add()
            conn.end(payload)

        async def good_client(port: int) -> None:
            client = net.create_connection(port)
            rec = record(client)
            received = bytearray()
            clients.append((rec, received))

            def on_data(chunk: bytes) -> None:
                if not received:
                    client.pause()  # hold this transfer in flight across the fault
                    paused.add()
                received.extend(chunk)

            client.on("data", on_data)
            client.on("end", client.end)
            async with client:
                await resume.wait()
                client.resume()

        async with net.create_server(on_connection) as server:
            server_rec = record(server, events=("listening", "error", "close"))
            await server.listen(0, "127.0.0.1")
            port = server.address()[1]
            async with rude_peer(how, port) as vanish:
                await accepted.wait_for(1)
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(good_client, port)
                    await paused.wait_for(3)
                    assert server_streams[0].write_queue_size > 0
                    await vanish()
                    await closed.wait_for(1)
                    assert server.connections == 3
                    resume.set()
            server.close()

        [rude_rec, *good_recs] = server_recs
        err = rude_rec.events[1][1]
        assert rude_rec.events == ["connect", ("error", err), ("close", True)]
        assert_reset(err)
        for rec in good_recs:
            assert rec.events == ["connect", "end", ("close", False)]
        assert len(clients) == 3
        for rec, received in clients:
            assert rec.events == ["connect", "data", "end", ("close", False)]
            assert sha(received) == sha(payload)
        assert server_rec.events == ["listening", "close"]
        assert server.connections == 0


# -- a listener raises during a fault -------------------------------------------------------


class Boom(Exception):
    pass


def _raise_boom(*_: object) -> None:
    raise Boom("listener")


@pytest.mark.parametrize("event", ["error", "close"])
async def test_client_listener_raising_during_a_reset_propagates_once(
    event: str, record: Any
) -> None:
    """An ``'error'`` or ``'close'`` listener that raises while the stream is
    being reset: the exception leaves the block unwrapped, ``'error'`` and
    ``'close'(True)`` are each emitted once, the socket is closed."""
    with trio.fail_after(NETWORK_LIMIT):

        async def peer(listener: trio.SocketListener) -> None:
            sock = await listener.accept()
            assert await sock.receive_some(5) == b"hello"
            await linger_reset(sock)

        async with (
            raw_listener("tcp", "") as (listener, target),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(peer, listener)
            stream = net.create_connection(*target)
            rec = record(stream)
            stream.on(event, _raise_boom)
            stream.write(b"hello")
            with pytest.raises(Boom) as info:
                async with stream:
                    await trio.sleep_forever()

        assert type(info.value) is Boom
        err = rec.events[-2][1]
        assert rec.events == ["connect", "drain", ("error", err), ("close", True)]
        assert_reset(err)
        assert_closed_for_good(stream, rec)


async def test_server_side_error_listener_raising_during_a_reset_ends_the_server_block(
    record: Any,
) -> None:
    """A server-side ``'error'`` listener that raises during a peer's reset:
    the exception leaves the server's block unwrapped, that stream still
    emits ``'close'(True)``, and the server's other connections are destroyed
    (their peers see EOF, not a hang)."""
    with trio.fail_after(NETWORK_LIMIT):
        server_recs: list[Any] = []
        accepted = Tally()

        def on_connection(conn: net.Stream) -> None:
            server_recs.append(record(conn))
            conn.on("error", _raise_boom)
            accepted.add()

        bystander = None
        try:
            with pytest.raises(Boom) as info:
                async with net.create_server(on_connection) as server:
                    await server.listen(0, "127.0.0.1")
                    port = server.address()[1]
                    bystander = await trio.open_tcp_stream("127.0.0.1", port)
                    await accepted.wait_for(1)
                    rude = await trio.open_tcp_stream("127.0.0.1", port)
                    await accepted.wait_for(2)
                    await linger_reset(rude)
                    await trio.sleep_forever()
            assert type(info.value) is Boom
            assert bystander is not None
            assert await bystander.receive_some() == b""  # destroyed with the server
        finally:
            if bystander is not None:
                await bystander.aclose()

        bystander_rec, rude_rec = server_recs
        err = rude_rec.events[1][1]
        assert rude_rec.events == ["connect", ("error", err), ("close", True)]
        assert_reset(err)
        assert bystander_rec.events == ["connect", ("close", False)]


# -- connect failures, seen through every consumer ---------------------------------------


def _failure_target(failure: str, unix_path: str, stack: ExitStack) -> tuple[Any, ...]:
    if failure == "refused":
        # A port bound (so no one else can take it) but not listening: refused.
        probe = stack.enter_context(socket.socket())
        probe.bind(("127.0.0.1", 0))
        return (probe.getsockname()[1], "127.0.0.1")
    if failure == "stale_unix":
        with socket.socket(socket.AF_UNIX) as probe:  # the file stays, nobody listens
            probe.bind(unix_path)
        return (unix_path,)
    return (80, "nonexistent.invalid")


FAILURES = {
    "refused": (ConnectionRefusedError, errno.ECONNREFUSED, "ECONNREFUSED"),
    "stale_unix": (ConnectionRefusedError, errno.ECONNREFUSED, "ECONNREFUSED"),
    "dns": (socket.gaierror, None, "ENOTFOUND"),
}


@pytest.mark.parametrize(
    ("failure", "consumer"),
    [
        (failure, consumer)
        for failure in FAILURES
        for consumer in ("async_listeners", "async_for", "drain", "unhandled")
        # (refused, unhandled) is test_connect_refused_without_error_listener_raises_from_block
        if (failure, consumer) != ("refused", "unhandled")
    ],
)
async def test_connect_failure_reaches_each_consumer_once(
    failure: str, consumer: str, unix_path: str
) -> None:
    """A failed connect (refused, a stale UNIX socket file, an unknown host)
    with writes and ``end()`` queued: the error reaches async ``'error'`` /
    ``'close'`` listeners (awaited in order), ``async for``, ``await drain()``,
    or the block, exactly once; no ``'connect'``; the queued bytes are dropped."""
    with trio.fail_after(NETWORK_LIMIT), ExitStack() as stack:
        kind, number, code = FAILURES[failure]
        stream = net.create_connection(*_failure_target(failure, unix_path, stack))
        assert stream.write(b"queued") is False
        stream.end(b"last")
        assert stream.ready_state == "opening"
        events: list[Any] = []
        stream.on("connect", lambda: events.append("connect"))
        stream.on("end", lambda: events.append("end"))
        stream.on("drain", lambda: events.append("drain"))

        if consumer == "async_listeners":

            async def on_error(error: BaseException) -> None:
                events.append(("error", error))
                await trio.lowlevel.checkpoint()
                events.append("error listener done")

            async def on_close(had_error: bool) -> None:
                await trio.lowlevel.checkpoint()
                events.append(("close", had_error))

            stream.on("error", on_error)
            stream.on("close", on_close)
            async with stream:
                pass
            err = events[0][1]
            assert events == [("error", err), "error listener done", ("close", True)]
        else:
            stream.on("close", lambda had_error: events.append(("close", had_error)))
            if consumer == "async_for":
                async with stream:
                    with pytest.raises(kind) as info:
                        async for _chunk in stream:
                            pytest.fail("no data can come")
                # ...and the block did not raise it again.
            elif consumer == "drain":
                stream.on("error", lambda error: events.append(("error", error)))
                async with stream:
                    with pytest.raises(kind) as info:
                        await stream.drain()
            else:
                with pytest.raises(kind) as info:
                    async with stream:
                        await trio.sleep_forever()
            err = info.value
            handled = [("error", err)] if consumer == "drain" else []
            assert events == [*handled, ("close", True)]

        assert type(err) is kind
        assert err.code == code  # type: ignore[attr-defined]  # set by the library
        if number is not None:
            assert isinstance(err, OSError) and err.errno == number
        assert stream.ready_state == "closed"
        assert stream.socket is None
        assert stream.bytes_read == 0
        with pytest.raises(StreamStateError):
            stream.write(b"after")


# -- destroy() with writes queued ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_destroy_with_many_queued_writes_sends_an_ordered_prefix(
    kind: str, unix_path: str, record: Any
) -> None:
    """``destroy()`` with 16 MiB queued by 256 writes: the peer gets a prefix of
    exactly what was written (nothing reordered, nothing invented), then EOF
    (a graceful close, as Node's ``destroy()``: nothing was left unread); one
    ``'close'(False)``, no ``'drain'`` although ``write()`` returned
    ``False``; a pending ``drain()`` raises ``StreamStateError``, as do
    ``write()`` and ``end(data)`` afterwards."""
    with trio.fail_after(NETWORK_LIMIT):
        chunks = [pattern(64 * KiB, seed) for seed in range(256)]
        sent = b"".join(chunks)
        destroyed = trio.Event()
        outcome: list[tuple[str, bytes]] = []
        drain_raised: list[BaseException] = []

        async def peer(listener: trio.SocketListener) -> None:
            sock = await listener.accept()
            async with sock:
                await destroyed.wait()  # read nothing until our side gave up
                buffer = bytearray()
                try:
                    while chunk := await sock.receive_some(256 * KiB):
                        buffer += chunk
                except trio.BrokenResourceError as exc:
                    assert isinstance(exc.__cause__, ConnectionResetError)
                    outcome.append(("reset", bytes(buffer)))
                else:
                    outcome.append(("EOF", bytes(buffer)))

        async def wait_drain(stream: net.Stream) -> None:
            with pytest.raises(StreamStateError) as info:
                await stream.drain()
            drain_raised.append(info.value)

        async with (
            raw_listener(kind, unix_path) as (listener, target),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(peer, listener)
            stream = net.create_connection(*target)
            rec = record(stream)
            connected = trio.Event()
            stream.on("connect", connected.set)
            async with stream, trio.open_nursery() as waiters:
                await connected.wait()
                accepted = [stream.write(chunk) for chunk in chunks]
                assert accepted[-1] is False
                waiters.start_soon(wait_drain, stream)
                await wait_all_tasks_blocked(cushion=0.05)  # the writer is stuck
                assert 0 < stream.write_queue_size < len(sent)
                stream.destroy()
                assert stream.ready_state == "closed"
                assert stream.write_queue_size == 0
                with pytest.raises(StreamStateError):
                    stream.write(b"more")
                with pytest.raises(StreamStateError):
                    stream.end(b"more")
                stream.end()  # without data: does nothing
                stream.destroy()  # idempotent
                destroyed.set()

        assert rec.events == ["connect", ("close", False)]
        assert len(drain_raised) == 1
        assert stream.bytes_written == len(sent)
        [(how, received)] = outcome
        assert how == "EOF"
        assert len(received) < len(sent)
        assert received == sent[: len(received)]
        assert_closed_for_good(stream, rec)


# -- cancellation (or destroy()) at every scheduling point -------------------------------------
#
# Each run is one conversation: (STARTTLS,) connect, write REQUEST, ``await
# drain()``, read the REPLY with ``async for`` until the peer ends, ``end(BYE)``,
# and leave the block. The run for k = 1, 2, 3, ... cancels the enclosing scope
# (or calls ``destroy()``) just before the k-th task step of the whole program
# after the conversation starts: every await point of every task involved
# (ours, the stream's reader, writer and TLS handshake, the peer's) is hit by
# some k. The loop stops at the first run that completes before its k-th step.

REQUEST = pattern(64 * KiB, 5)
REPLY = pattern(48 * KiB, 6)
BYE = b"bye"
STARTTLS = b"STARTTLS\n"
MAX_STEPS = 5000
CLIENT_EVENTS = ("connect", "secure", "end", "timeout", "error", "close")


class StepTrigger(trio.abc.Instrument):
    """Calls *action* just before the *k*-th task step (of any task) after it
    is installed, then counts the steps *task* takes from there on."""

    def __init__(self, k: int, action: Callable[[], object], task: trio.lowlevel.Task) -> None:
        self.k = k
        self.action = action
        self.task = task
        self.steps = 0
        self.fired = False
        self.task_steps_after = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if not self.fired:
            self.steps += 1
            if self.steps < self.k:
                return
            self.fired = True
            self.action()
        if task is self.task:
            self.task_steps_after += 1


async def converse(stream: net.Stream, got: bytearray, starttls: ssl.SSLContext | None) -> None:
    """The client's side of one conversation; the reply goes into *got*."""
    if starttls is not None:
        stream.write(STARTTLS)
        answer = bytearray()
        async for chunk in stream:
            answer += chunk
            if len(answer) >= 3:
                break
        stream.set_secure(starttls, server_hostname="localhost")
        assert answer == b"OK\n"
    stream.write(REQUEST)
    await stream.drain()
    async for chunk in stream:
        got += chunk
    stream.end(BYE)


@dataclass
class PeerLog:
    """What the peer of one conversation received, and its events."""

    data: bytearray = field(default_factory=bytearray)
    events: list[Any] = field(default_factory=list)
    replied: bool = False
    upgraded: bool = False


class Scene:
    """Where the conversation runs: a memory pair with a raw peer task, or a
    real connection to a trio_netstream server (plain, TLS, STARTTLS)."""

    def __init__(self, variant: str, certs: Certs, unix_path: str) -> None:
        self.variant = variant
        self.certs = certs
        self.unix_path = unix_path
        self.server: net.Server | None = None
        self.nursery: trio.Nursery | None = None
        self.peer_logs: list[PeerLog] = []
        self.memory_peer: PeerLog | None = None
        self.memory_done: trio.Event | None = None
        secure = ["secure"] if variant in ("tls", "starttls") else []
        self.success = ["connect", *secure, "end", ("close", False)]
        self.peer_expects = (STARTTLS if variant == "starttls" else b"") + REQUEST + BYE

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        if self.variant in ("memory", "lockstep"):
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                yield
            return
        options = {"ssl": self.certs.server_ctx} if self.variant == "tls" else {}
        async with net.create_server(self.on_connection, **options) as server:
            self.server = server
            if self.variant == "unix":
                await server.listen(self.unix_path)
            else:
                await server.listen(0, "127.0.0.1")
            yield
            server.close()

    def on_connection(self, conn: net.Stream) -> None:
        log = PeerLog()
        self.peer_logs.append(log)
        head = len(STARTTLS) if self.variant == "starttls" else 0

        def on_data(chunk: bytes) -> None:
            log.data += chunk
            if head and not log.upgraded and len(log.data) >= head:
                log.upgraded = True
                conn.write(b"OK\n")
                conn.set_secure(self.certs.server_ctx)
            if not log.replied and len(log.data) >= head + len(REQUEST):
                log.replied = True
                conn.end(REPLY)

        conn.on("data", on_data)
        conn.on("end", conn.end)
        conn.on("error", lambda err: log.events.append("error"))
        conn.on("close", lambda had_error: log.events.append(("close", had_error)))

    def stream(self) -> net.Stream:
        if self.variant in ("memory", "lockstep"):
            pair = memory_stream_pair if self.variant == "memory" else lockstep_stream_pair
            ours, theirs = pair()
            self.memory_peer, self.memory_done = PeerLog(), trio.Event()
            assert self.nursery is not None
            self.nursery.start_soon(self._memory_peer, theirs, self.memory_peer, self.memory_done)
            return net.Stream.wrap(ours)
        assert self.server is not None
        address = self.server.address()
        if self.variant == "unix":
            return net.create_connection(address)
        assert isinstance(address, tuple)
        if self.variant == "tls":
            return net.create_connection(
                address[1], ssl=self.certs.client_ctx, server_hostname="localhost"
            )
        return net.create_connection(address[1])

    @staticmethod
    async def _memory_peer(peer: trio.abc.Stream, log: PeerLog, done: trio.Event) -> None:
        """Read the request, answer and end, read to EOF: a raw in-memory peer."""
        try:
            while len(log.data) < len(REQUEST):
                chunk = await peer.receive_some()
                if not chunk:
                    log.events.append("EOF")
                    return
                log.data += chunk
            await peer.send_all(REPLY)
            await peer.send_eof()  # type: ignore[attr-defined]  # a StapledStream
            while chunk := await peer.receive_some():
                log.data += chunk
            log.events.append("EOF")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.events.append("broken")
        finally:
            await trio.aclose_forcefully(peer)
            done.set()

    def check_peer(self, *, complete: bool) -> None:
        """The peer saw our end, a reset or an EOF: it is not left hanging."""
        if self.memory_peer is not None:
            assert self.memory_done is not None and self.memory_done.is_set()
            logs = [self.memory_peer]
        else:
            assert self.server is not None and self.server.connections == 0
            logs, self.peer_logs = self.peer_logs, []
            for log in logs:
                assert log.events in ([("close", False)], ["error", ("close", True)])
        for log in logs:
            assert self.peer_expects.startswith(log.data)
        if complete:
            assert [bytes(log.data) for log in logs] == [self.peer_expects]


async def run_once(scene: Scene, mode: str, k: int, baseline: int, record: Any) -> bool:
    """One conversation with the trigger at step *k*; whether it fired.
    Asserts the invariants that hold wherever the trigger landed."""
    test_task = trio.lowlevel.current_task()
    stream = scene.stream()
    rec = record(stream, events=CLIENT_EVENTS)
    got = bytearray()
    scope = trio.CancelScope()
    trigger = StepTrigger(k, scope.cancel if mode == "cancel" else stream.destroy, test_task)
    starttls = scene.certs.client_ctx if scene.variant == "starttls" else None
    completed = False
    with scope:
        trio.lowlevel.add_instrument(trigger)
        try:
            async with stream:
                try:
                    await converse(stream, got, starttls)
                except StreamStateError:
                    # A call refused once the stream is gone: after destroy(), or
                    # after a cancellation whose teardown ran before this task
                    # reached a checkpoint (the next one raises Cancelled).
                    assert trigger.fired
                    assert mode == "destroy" or trigger.task_steps_after <= 1
            completed = True
        finally:
            trio.lowlevel.remove_instrument(trigger)

    where = f"{scene.variant}, {mode} at step {k}"
    if mode == "cancel" and not completed:
        assert scope.cancelled_caught, where
    else:
        assert completed and not scope.cancelled_caught, where
    if mode == "cancel" and completed:
        # The test task did not pass a checkpoint after the cancel: none was swallowed.
        assert trigger.task_steps_after <= 1, where
    events = rec.events
    # Exactly one 'close', last, never with an error; before it, what a
    # conversation would have emitted up to that point.
    assert events[-1] == ("close", False), (where, events)
    assert events[:-1] == scene.success[: len(events) - 1], (where, events)
    complete = not trigger.fired or (mode == "cancel" and completed)
    if complete:
        assert events == scene.success, where
        assert got == REPLY, where
    assert REPLY.startswith(got), where
    assert stream.ready_state == "closed", where
    assert stream.socket is None, where
    await stream.wait_closed()
    await wait_all_tasks_blocked(cushion=0.01)
    scene.check_peer(complete=complete)
    assert tasks_under(test_task) == baseline, where  # the stream's tasks are gone
    return trigger.fired


@pytest.mark.parametrize("mode", ["cancel", "destroy"])
@pytest.mark.parametrize("variant", ["memory", "lockstep", "tcp", "unix", "tls", "starttls"])
async def test_cancel_or_destroy_at_every_step_of_a_conversation(
    variant: str, mode: str, certs: Certs, unix_path: str, record: Any
) -> None:
    """Cancelling the enclosing scope (or calling ``destroy()``) at any point of
    connect, TLS handshake, write/``drain()``, read, ``end()`` and close: the
    cancellation comes out of the block (never swallowed), ``'close'(False)``
    is emitted exactly once and last, the stream is closed with no task or
    descriptor left behind, and the peer sees EOF or a reset, not a hang."""
    with trio.fail_after(NETWORK_LIMIT):
        scene = Scene(variant, certs, unix_path)
        async with scene.running():
            await wait_all_tasks_blocked(cushion=0.01)
            baseline = tasks_under(trio.lowlevel.current_task())
            fds = open_fds()
            for k in range(1, MAX_STEPS):
                if not await run_once(scene, mode, k, baseline, record):
                    break  # the whole conversation fitted in fewer steps
            else:
                pytest.fail(f"the conversation never finished within {MAX_STEPS} steps")
            print(f"\n{variant}/{mode}: {k - 1} interrupted runs")
            gc.collect()
            assert open_fds() == fds
