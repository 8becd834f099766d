"""Node.js itself as the peer: ``node tests/interop/node/peer.js``.

The JS peer (Node's own ``net`` / ``tls`` modules, no npm packages) is a
small command-line program: ``peer.js server <mode> <tcp|PATH> [CONFIG]``
prints ``{"listening": PORT_OR_PATH}`` once listening and serves one
connection; ``peer.js client <mode> <PORT|PATH> [CONFIG]`` connects. Either
way it prints one JSON report when its socket emits ``'close'``: the events
Node saw (consecutive ``'data'`` collapsed), byte counts, sha256 digests and
error codes, so each test asserts on Node's view as well as ours.

Where the expected Node behaviour is not obvious (what a peer sees when the
other side destroys mid-transfer), the same Node peer also runs against
another Node process, and our result must equal that control's.

Every Node process is started by :func:`node_peer`, read line by line, and
reaped (killed first if the test failed) when its block ends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest
import trio
import trustme

import trio_netstream as net

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js (the node binary) is not installed")

PEER_JS = Path(__file__).resolve().parent / "node" / "peer.js"
KiB = 1024
MiB = 1024 * KiB
STREAM_EVENTS = ("connect", "data", "end", "drain", "timeout", "error", "close")
TLS_EVENTS = (*STREAM_EVENTS, "secure")


# -- the Node process ------------------------------------------------------------


class NodePeer:
    """A running ``peer.js``: its JSON lines, read on demand."""

    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self._stderr = stderr
        self._buffer = bytearray()

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    async def message(self) -> dict[str, Any]:
        """The next JSON line Node printed."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(64 * KiB)
            if not chunk:
                await self.process.wait()
                raise AssertionError(
                    f"node exited ({self.process.returncode}) without a report;"
                    f" stderr:\n{self.stderr()}"
                )
            self._buffer += chunk
        line, _, rest = self._buffer.partition(b"\n")
        self._buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        assert "watchdog" not in message, f"node's watchdog fired: {message}"
        return message

    async def listening(self) -> Any:
        """Where a ``server`` peer listens (a port, or the UNIX path)."""
        message = await self.message()
        assert "listening" in message, message
        return message["listening"]

    async def finished(self) -> dict[str, Any]:
        """Node's final report; the process must then exit with status 0."""
        report = await self.message()
        assert await self.process.wait() == 0, self.stderr()
        return report


@asynccontextmanager
async def node_peer(
    role: str, mode: str, address: object, **config: Any
) -> AsyncIterator[NodePeer]:
    """Run ``node peer.js role mode address config`` for the block's duration.

    Leaving normally waits (bounded) for Node to exit; leaving by an exception
    kills it at once. Either way the process is reaped and its pipes closed.
    """
    assert NODE is not None
    with tempfile.TemporaryFile() as stderr:
        process = await trio.lowlevel.open_process(
            [NODE, str(PEER_JS), role, mode, str(address), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        peer = NodePeer(process, stderr)
        failed = True
        try:
            yield peer
            failed = False
        finally:
            with trio.CancelScope(shield=True):
                if not failed:
                    with trio.move_on_after(5):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                await process.wait()
                assert process.stdout is not None
                await process.stdout.aclose()


# -- our side, as server or as client -----------------------------------------------


class Transport:
    """Loopback TCP or a UNIX socket path, for both sides."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        self.path = path

    async def listen(self, server: net.Server) -> Any:
        """Listen; returns the address argument for a Node client."""
        if self.kind == "unix":
            await server.listen(self.path)
            return self.path
        await server.listen(0, "127.0.0.1")
        address = server.address()
        assert isinstance(address, tuple)
        return address[1]

    @property
    def node_listen(self) -> str:
        return self.path if self.kind == "unix" else "tcp"

    def connect(self, where: Any, **options: Any) -> net.Stream:
        if self.kind == "unix":
            assert where == self.path
            return net.create_connection(where, **options)
        return net.create_connection(int(where), "127.0.0.1", **options)


@pytest.fixture(params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest, unix_path: str) -> Transport:
    return Transport(request.param, unix_path)


@pytest.fixture
def tcp(unix_path: str) -> Transport:
    return Transport("tcp", unix_path)


Setup = Callable[[net.Stream], Any]
Driver = Callable[[net.Stream], Awaitable[None]]


async def against_node_client(
    transport: Transport,
    mode: str,
    setup: Setup,
    driver: Driver | None = None,
    *,
    server_options: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[net.Stream, Any, dict[str, Any]]:
    """Our server, a Node client in *mode*: ``(our stream, setup(stream), node report)``."""
    accepted: list[tuple[net.Stream, Any]] = []

    async def on_connection(conn: net.Stream) -> None:
        accepted.append((conn, setup(conn)))
        if driver is not None:
            await driver(conn)

    async with net.create_server(on_connection, **(server_options or {})) as server:
        where = await transport.listen(server)
        async with node_peer("client", mode, where, **config) as peer:
            report = await peer.finished()
        server.close()
    assert len(accepted) == 1
    stream, result = accepted[0]
    return stream, result, report


async def against_node_server(
    transport: Transport,
    mode: str,
    setup: Setup,
    driver: Driver | None = None,
    *,
    client_options: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[net.Stream, Any, dict[str, Any]]:
    """A Node server in *mode*, our client: ``(our stream, setup(stream), node report)``."""
    async with node_peer("server", mode, transport.node_listen, **config) as peer:
        where = await peer.listening()
        stream = transport.connect(where, **(client_options or {}))
        result = setup(stream)
        async with stream:
            if driver is not None:
                await driver(stream)
        report = await peer.finished()
    return stream, result, report


async def node_against_node(
    transport: Transport, server_mode: str, client_mode: str, server_config: Any, client_config: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The control: two Node processes. Returns ``(server report, client report)``."""
    async with node_peer("server", server_mode, transport.node_listen, **server_config) as server:
        where = await server.listening()
        async with node_peer("client", client_mode, where, **client_config) as client:
            client_report = await client.finished()
        server_report = await server.finished()
    return server_report, client_report


DIRECTIONS = ["node_client", "node_server"]


async def against_node(direction: str, *args: Any, **kwargs: Any) -> Any:
    if direction == "node_client":
        return await against_node_client(*args, **kwargs)
    return await against_node_server(*args, **kwargs)


def node_first_event(direction: str, *, tls: bool = False) -> str:
    """The first event a Node peer records: its client's or its server's."""
    if direction == "node_client":
        return "secureConnect" if tls else "connect"
    return "secureConnection" if tls else "connection"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- echo ---------------------------------------------------------------------------

MESSAGE = "hello from the other runtime: héllo wörld € 日本 🎉\n" * 20


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_echo(direction: str, transport: Transport, record: Any) -> None:
    """Whoever is the client sends and ends; the server echoes and ends after it."""

    def echo(stream: net.Stream) -> Any:
        rec = record(stream)
        stream.on("data", stream.write)
        stream.on("end", stream.end)
        return rec

    def send(stream: net.Stream) -> Any:
        stream.set_encoding("utf8")
        rec = record(stream)

        def on_connect() -> None:
            for start in range(0, len(MESSAGE), 97):
                stream.write(MESSAGE[start : start + 97])
            stream.end()

        stream.on("connect", on_connect)
        return rec

    with trio.fail_after(10):
        if direction == "node_client":
            stream, rec, report = await against_node_client(
                transport, "send", echo, message=MESSAGE, piece=101
            )
        else:
            stream, rec, report = await against_node_server(transport, "echo", send)

    encoded = MESSAGE.encode()
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert stream.bytes_read == stream.bytes_written == len(encoded)
    assert report["received"] == report["sent"] == len(encoded)
    assert report["error"] is None
    if direction == "node_client":
        assert rec.data == encoded
        assert report["text"] == MESSAGE
        assert report["events"] == ["connect", "finish", "data", "end", "close:false"]
    else:
        assert rec.data == MESSAGE
        assert report["received_sha256"] == sha256(encoded)
        # Node's echo server ends in its 'end' listener: 'finish' follows 'end'.
        assert report["events"] == ["connection", "data", "end", "finish", "close:false"]
        assert report["extra"]["readyStateAtEnd"] == "writeOnly"


# -- half-close -----------------------------------------------------------------------

AFTER_END = ["after-end-1 ", "après-la-fin-2 ", "終わった後-3"]


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_half_close_we_end_first_node_keeps_writing(
    direction: str, transport: Transport, record: Any
) -> None:
    """We write and end(); Node (allowHalfOpen) writes three more chunks after
    our FIN, then ends; we read them all in ``"readOnly"``."""
    states: list[str] = []

    def setup(stream: net.Stream) -> Any:
        stream.set_encoding("utf8")
        rec = record(stream)

        def on_connect() -> None:
            stream.write("request: ")
            stream.end("please keep talking")
            states.append(stream.ready_state)

        stream.on("connect", on_connect)
        stream.on("end", lambda: states.append(stream.ready_state))
        return rec

    with trio.fail_after(10):
        stream, rec, report = await against_node(
            direction, transport, "write_after_end", setup, after=AFTER_END
        )

    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == "".join(AFTER_END)
    assert stream.bytes_read == len("".join(AFTER_END).encode())
    assert states == ["readOnly", "closed"]
    assert report["text"] == "request: please keep talking"
    assert report["extra"]["readyStateAtEnd"] == "writeOnly"
    assert report["extra"]["writableAtEnd"] is True
    assert report["extra"]["writeResults"] == [True, True, True]
    assert report["events"] == [node_first_event(direction), "data", "end", "finish", "close:false"]
    assert report["error"] is None


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_half_close_node_ends_first_we_keep_writing(
    direction: str, transport: Transport, record: Any
) -> None:
    """Node writes and end()s at once; we (allow_half_open=True) answer after
    its FIN with several writes over several ticks, then end()."""
    states: list[str] = []

    def setup(stream: net.Stream) -> Any:
        assert stream.allow_half_open is True
        stream.set_encoding("utf8")
        rec = record(stream)

        async def on_end() -> None:
            states.append(stream.ready_state)
            for part in AFTER_END:
                assert stream.write(part) is True
                await trio.sleep(0.002)
            stream.end()
            states.append(stream.ready_state)

        stream.on("end", on_end)
        return rec

    with trio.fail_after(10):
        stream, rec, report = await against_node(
            direction, transport, "send", setup, message="I am done talking"
        )

    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == "I am done talking"
    assert stream.bytes_written == len("".join(AFTER_END).encode())
    assert states == ["writeOnly", "closed"]
    assert report["text"] == "".join(AFTER_END)
    assert report["extra"]["readyStateAfterEnd"] == "readOnly"
    assert report["events"] == [node_first_event(direction), "finish", "data", "end", "close:false"]
    assert report["error"] is None


# -- 64 MiB with pause/resume on the receiving side -------------------------------------

BIG = 64 * MiB


@pytest.fixture(scope="module")
def big_payload() -> bytes:
    return random.Random(2024).randbytes(BIG)


async def test_64mib_to_node_pausing_and_resuming(
    transport: Transport, big_payload: bytes, record: Any
) -> None:
    """Our server sends 64 MiB honouring write()/'drain'; the Node client
    pauses for 20 ms after every 8 MiB. Nothing lost, nothing reordered."""
    falses = 0
    drains = 0

    def setup(stream: net.Stream) -> Any:
        def on_drain() -> None:
            nonlocal drains
            drains += 1

        stream.on("drain", on_drain)
        return record(stream, events=("connect", "end", "error", "close"))

    async def driver(stream: net.Stream) -> None:
        nonlocal falses
        view = memoryview(big_payload)
        for offset in range(0, BIG, 256 * KiB):
            if not stream.write(view[offset : offset + 256 * KiB]):
                falses += 1
                await stream.drain()
        stream.end()

    with trio.fail_after(20):
        stream, rec, report = await against_node_client(
            transport, "sink", setup, driver, pause_every=8 * MiB, pause_ms=20
        )

    assert report["received"] == BIG
    assert report["received_sha256"] == sha256(big_payload)
    assert report["extra"]["pauses"] == 8
    assert report["extra"]["dataWhilePaused"] == 0
    assert report["extra"]["isPausedSeen"] is True
    assert report["events"] == ["connect", "data", "end", "finish", "close:false"]
    assert rec.events == ["connect", "end", ("close", False)]
    assert stream.bytes_written == BIG
    assert falses > 0
    assert drains == falses


async def test_64mib_from_node_we_pause_and_resume(transport: Transport, record: Any) -> None:
    """A Node server sends 64 MiB honouring write()/'drain'; we pause for
    20 ms after every 8 MiB. Node sees the backpressure; the digest matches."""
    digest = hashlib.sha256()
    received = 0
    pauses = 0
    data_while_paused = 0
    next_pause = 8 * MiB

    def setup(stream: net.Stream) -> Any:
        rec = record(stream, events=("connect", "end", "error", "close"))

        def on_data(chunk: bytes) -> None:
            nonlocal received, pauses, data_while_paused, next_pause
            if stream.is_paused:
                data_while_paused += 1
            received += len(chunk)
            digest.update(chunk)
            if received >= next_pause:
                next_pause += 8 * MiB
                pauses += 1
                stream.pause()
                nursery.start_soon(resume_later, stream)

        stream.on("data", on_data)
        stream.on("end", stream.end)
        return rec

    async def resume_later(stream: net.Stream) -> None:
        await trio.sleep(0.02)
        stream.resume()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            stream, rec, report = await against_node_server(transport, "source", setup, size=BIG)

    assert received == BIG == report["sent"]
    assert digest.hexdigest() == report["sent_sha256"]
    assert pauses == 8
    assert data_while_paused == 0
    assert stream.bytes_read == BIG
    assert rec.events == ["connect", "end", ("close", False)]
    assert report["events"] == ["connection", "finish", "end", "close:false"]
    # Node's write() reported the backpressure, and 'drain' followed each time.
    assert report["extra"]["writeFalse"] > 0
    assert report["extra"]["drains"] == report["extra"]["writeFalse"]
    assert report["error"] is None


# -- set_encoding against Node's own decoding ------------------------------------------

ENCODINGS = ["utf8", "ascii", "base64", "hex", "latin1", "utf16le"]
TEXT = "héllo wörld — ¿qué tal? ß € 日本語のテキスト 𝄞🎉 Ωμέγα\n" * 6


def payload_for(encoding: str) -> bytes:
    return TEXT.encode("utf-16-le" if encoding == "utf16le" else "utf-8")


def python_expectation(encoding: str, payload: bytes) -> str:
    """What the whole byte stream decodes to, computed without Node."""
    if encoding in ("utf8", "utf16le"):
        return TEXT
    if encoding == "ascii":  # Node's ascii drops the high bit of every byte
        return bytes(b & 0x7F for b in payload).decode("ascii")
    if encoding == "base64":
        return base64.b64encode(payload).decode()
    if encoding == "hex":
        return payload.hex()
    return payload.decode("latin-1")


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_set_encoding_matches_node_decoding_of_odd_slices(
    encoding: str, direction: str, tcp: Transport, record: Any
) -> None:
    """Node writes the bytes as slices of 1, 2, 3, 5, 7, ... bytes (some
    corked together, a few ms apart, no Nagle); our concatenated ``'data'``
    strings equal Node's ``buffer.toString(encoding)`` of the whole."""
    payload = payload_for(encoding)

    def setup(stream: net.Stream) -> Any:
        stream.set_encoding(encoding)
        rec = record(stream)
        stream.on("end", stream.end)
        return rec

    with trio.fail_after(10):
        stream, rec, report = await against_node(
            direction, tcp, "slices", setup, payload_hex=payload.hex(), encodings=[encoding]
        )

    node_whole = report["extra"]["whole"][encoding]
    assert report["extra"]["stringDecoder"][encoding] == node_whole  # Node agrees with itself
    assert node_whole == python_expectation(encoding, payload)
    assert report["sent"] == len(payload)
    assert report["extra"]["slices"] > 50
    assert all(isinstance(chunk, str) for chunk in rec.chunks)
    assert rec.data == node_whole
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert stream.bytes_read == len(payload)


TAILS = {
    # invalid sequences in the middle, then a truncated 3-byte character
    "utf8-invalid-and-truncated": (
        "utf8",
        TEXT.encode() + b"\xc0\xaf\xed\xa0\x80\xff" + b"ok" + b"\xe2\x82",
    ),
    # an odd number of bytes: half a UTF-16 code unit at the end
    "utf16le-odd-byte": ("utf16le", TEXT.encode("utf-16-le") + b"\x3d"),
    # unpaired surrogates: a low one in the middle, a high one at the end
    "utf16le-lone-surrogates": (
        "utf16le",
        TEXT.encode("utf-16-le") + b"\x00\xdc" + "ok".encode("utf-16-le") + b"\x3c\xd8",
    ),
}


@pytest.mark.parametrize("case", sorted(TAILS))
async def test_invalid_and_truncated_input_decodes_like_node(
    case: str, tcp: Transport, record: Any
) -> None:
    """Bytes that are not valid text, and an incomplete tail at 'end': the
    concatenated strings equal Node's decoding of the whole byte stream
    (Node keeps an unpaired UTF-16 surrogate as it is, and drops an odd
    last byte)."""
    encoding, payload = TAILS[case]

    def setup(stream: net.Stream) -> Any:
        stream.set_encoding(encoding)
        rec = record(stream)
        stream.on("end", stream.end)
        return rec

    with trio.fail_after(10):
        stream, rec, report = await against_node_server(
            tcp, "slices", setup, payload_hex=payload.hex(), encodings=[encoding]
        )

    node_whole = report["extra"]["whole"][encoding]
    assert report["extra"]["stringDecoder"][encoding] == node_whole
    assert rec.data == node_whole
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert stream.bytes_read == len(payload)


# -- socket options ---------------------------------------------------------------------


def sockopts(stream: net.Stream) -> tuple[int, int, int | None]:
    sock = stream.socket
    assert sock is not None
    idle = None
    if hasattr(socket, "TCP_KEEPIDLE"):
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    return (
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        idle,
    )


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_no_delay_and_keep_alive_on_both_sides(
    direction: str, tcp: Transport, record: Any
) -> None:
    """Node calls setNoDelay(true) / setKeepAlive(true, 1000) on its socket,
    we call set_no_delay() / set_keep_alive(True, 3000) on ours; our socket
    shows them (and showed Node's defaults before), and the echo still works."""
    seen: dict[str, Any] = {}

    def setup(stream: net.Stream) -> Any:
        rec = record(stream)
        if direction == "node_client":  # server side: set at once
            seen["before"] = sockopts(stream)[:2]
            stream.set_no_delay()
            stream.set_keep_alive(True, 3000)
        else:  # client: set before connecting, applied on connect
            stream.set_no_delay(True)
            stream.set_keep_alive(True, 3000)

        def on_connect() -> None:
            seen["after"] = sockopts(stream)
            if direction == "node_server":
                stream.end("ping over tuned sockets")

        stream.on("connect", on_connect)
        if direction == "node_client":
            stream.on("data", stream.write)
            stream.on("end", stream.end)
        return rec

    with trio.fail_after(10):
        mode = "send" if direction == "node_client" else "echo"
        _, rec, report = await against_node(
            direction,
            tcp,
            mode,
            setup,
            message="ping over tuned sockets",
            no_delay=True,
            keep_alive=True,
            keep_alive_ms=1000,
        )

    if direction == "node_client":
        assert seen["before"] == (0, 0)  # Nagle on and no keep-alive, as Node's defaults
    expected_idle = 3 if hasattr(socket, "TCP_KEEPIDLE") else None
    assert seen["after"] == (1, 1, expected_idle)
    assert report["extra"]["setNoDelay_returns_socket"] is True
    assert report["extra"]["setKeepAlive_returns_socket"] is True
    assert rec.data == b"ping over tuned sockets"
    assert report["received"] == len(b"ping over tuned sockets")
    assert rec.events == ["connect", "data", "end", ("close", False)]


# -- destroy mid-transfer -----------------------------------------------------------------


async def test_we_destroy_while_node_sends(transport: Transport, record: Any) -> None:
    """A Node client floods us; after 1 MiB we pause, let its writes block on
    the full buffers, and destroy() with data unread. Node sees exactly what
    it sees when a Node server does the same (the control): ECONNRESET.

    (Pausing first makes the control deterministic: a destroy() while the
    flooder is in the middle of a write() gives EPIPE or ECONNRESET at
    random, for Node against Node too.)
    """
    with trio.fail_after(10):
        control_server, control_client = await node_against_node(
            transport, "destroy_after_read", "flood", {"limit": MiB, "settle_ms": 100}, {}
        )
    assert control_server["events"] == ["connection", "data", "destroy()", "close:false"]
    reached = trio.Event()

    def setup(stream: net.Stream) -> Any:
        rec = record(stream)
        received = 0

        def on_data(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)
            if received >= MiB and not reached.is_set():
                stream.pause()
                reached.set()

        stream.on("data", on_data)
        return rec

    async def driver(stream: net.Stream) -> None:
        await reached.wait()
        await trio.sleep(0.1)
        stream.destroy()

    with trio.fail_after(10):
        stream, rec, report = await against_node_client(transport, "flood", setup, driver)

    assert rec.events == ["connect", "data", ("close", False)]
    assert stream.ready_state == "closed"
    assert (report["events"], report["error"]) == (
        control_client["events"],
        control_client["error"],
    ), (report, control_client)
    assert report["events"] == ["connect", "error:ECONNRESET", "close:true"]


async def test_we_destroy_while_sending_to_node(transport: Transport, record: Any) -> None:
    """We queue 32 MiB, the Node client pauses, we destroy() 50 ms later:
    Node gets part of it, then 'end', as from a Node server doing the same."""
    size = 32 * MiB
    sink_config: dict[str, Any] = {"pause_every": MiB, "pause_ms": 100}
    with trio.fail_after(10):
        control_server, control_client = await node_against_node(
            transport, "destroy_while_sending", "sink", {"size": size, "delay_ms": 50}, sink_config
        )
    assert control_server["events"] == ["connection", "destroy()", "close:false"]

    def setup(stream: net.Stream) -> Any:
        return record(stream)

    async def driver(stream: net.Stream) -> None:
        assert stream.write(b"b" * size) is False
        await trio.sleep(0.05)
        assert stream.write_queue_size > 0  # still mid-transfer
        stream.destroy()

    with trio.fail_after(10):
        stream, rec, report = await against_node_client(
            transport, "sink", setup, driver, **sink_config
        )

    assert rec.events == ["connect", ("close", False)]
    assert stream.bytes_written == size  # counted at the call
    assert report["events"] == control_client["events"]
    assert report["events"] == ["connect", "data", "end", "finish", "close:false"]
    assert report["error"] is None
    assert 0 < report["received"] < size
    assert report["received_sha256"] == sha256(b"b" * report["received"])


async def test_node_destroys_while_we_send(transport: Transport, record: Any) -> None:
    """A Node server reads 1 MiB, pauses, and destroy()s with our data unread
    while we flood it: we see one 'error' with the code a Node sender sees in
    the same place (ECONNRESET, from the control), then 'close'(True)."""
    with trio.fail_after(10):
        control_server, control_client = await node_against_node(
            transport, "destroy_after_read", "flood", {"limit": MiB, "settle_ms": 100}, {}
        )
    assert control_server["events"] == ["connection", "data", "destroy()", "close:false"]
    assert control_client["events"] == ["connect", "error:ECONNRESET", "close:true"]
    errors: list[BaseException] = []

    def setup(stream: net.Stream) -> Any:
        rec = record(stream, events=("connect", "data", "end", "error", "close"))
        stream.on("error", errors.append)
        return rec

    async def driver(stream: net.Stream) -> None:
        chunk = b"a" * (256 * KiB)
        while stream.ready_state in ("opening", "open"):
            if not stream.write(chunk):
                try:
                    await stream.drain()
                except OSError:
                    return

    with trio.fail_after(10):
        stream, rec, report = await against_node_server(
            transport, "destroy_after_read", setup, driver, limit=MiB, settle_ms=100
        )
    assert stream.ready_state == "closed"

    assert report["events"] == ["connection", "data", "destroy()", "close:false"]
    assert len(errors) == 1, errors
    error = errors[0]
    assert rec.events == ["connect", ("error", error), ("close", True)]
    assert (type(error), getattr(error, "code", None)) == (
        ConnectionResetError,
        control_client["error"]["code"],
    )


async def test_node_destroys_while_sending_to_us(transport: Transport, record: Any) -> None:
    """A Node server queues 32 MiB and destroy()s while we are paused: we get
    part of it, then 'end' and 'close'(False), as a Node client does."""
    size = 32 * MiB
    with trio.fail_after(10):
        control_server, control_client = await node_against_node(
            transport,
            "destroy_while_sending",
            "sink",
            {"size": size, "delay_ms": 50},
            {"pause_every": MiB, "pause_ms": 100},
        )
    received = 0

    def setup(stream: net.Stream) -> Any:
        rec = record(stream)

        def on_data(chunk: bytes) -> None:
            nonlocal received
            assert set(chunk) == {ord("b")}
            received += len(chunk)
            if received >= MiB and received - len(chunk) < MiB:
                stream.pause()
                nursery.start_soon(resume_later, stream)

        stream.on("data", on_data)
        return rec

    async def resume_later(stream: net.Stream) -> None:
        await trio.sleep(0.1)
        stream.resume()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            stream, rec, report = await against_node_server(
                transport,
                "destroy_while_sending",
                setup,
                client_options={"allow_half_open": False},
                size=size,
                delay_ms=50,
            )

    assert report["events"] == ["connection", "destroy()", "close:false"]
    assert control_server["events"] == report["events"]
    assert control_client["events"] == ["connect", "data", "end", "finish", "close:false"]
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert 0 < received < size
    assert stream.bytes_read == received


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path: Path) -> SimpleNamespace:
    """A trustme CA and a ``localhost`` certificate, as PEM files for Node."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    files = SimpleNamespace(
        ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem")
    )
    ca.cert_pem.write_to_path(files.ca)
    leaf.private_key_pem.write_to_path(files.key)
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(files.cert, append=i > 0)
    return files


def tls_config(certs: SimpleNamespace) -> dict[str, str]:
    return {"ca": certs.ca, "cert": certs.cert, "key": certs.key}


def server_context(certs: SimpleNamespace) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    return context


def client_context(certs: SimpleNamespace) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs.ca)


@pytest.mark.parametrize("mode", ["send", "ping"])
async def test_node_tls_connect_to_our_ssl_server(
    mode: str, tcp: Transport, certs: SimpleNamespace, record: Any
) -> None:
    """``tls.connect`` to ``create_server(ssl=context)``, which echoes. Node
    either writes and ends at once (``send``), or writes, waits for the whole
    echo and only then ends (``ping``: nothing more arrives after its first
    record, so each record must be decrypted as soon as it is in)."""

    def echo(stream: net.Stream) -> Any:
        rec = record(stream, events=TLS_EVENTS)
        stream.on("data", stream.write)
        stream.on("end", stream.end)
        return rec

    with trio.fail_after(4):
        _, rec, report = await against_node_client(
            tcp,
            mode,
            echo,
            server_options={"ssl": server_context(certs)},
            message=MESSAGE,
            piece=333,
            tls=tls_config(certs),
        )

    assert rec.events == ["connect", "secure", "data", "end", ("close", False)], (
        rec.events,
        report,
    )
    assert rec.data == MESSAGE.encode()
    if mode == "send":
        assert report["events"] == ["secureConnect", "finish", "data", "end", "close:false"]
    else:
        assert report["events"] == ["secureConnect", "data", "finish", "end", "close:false"]
    assert report["extra"]["authorized"] is True
    assert report["extra"]["authorizationError"] is None
    assert report["text"] == MESSAGE
    assert report["error"] is None


async def test_our_ssl_client_to_node_tls_server(
    tcp: Transport, certs: SimpleNamespace, record: Any
) -> None:
    peer: dict[str, Any] = {}

    def send(stream: net.Stream) -> Any:
        stream.set_encoding("utf8")
        rec = record(stream, events=TLS_EVENTS)

        def on_secure() -> None:
            peer["verified"] = stream.verify_peer()
            peer["cert"] = stream.get_peer_certificate()
            stream.write(MESSAGE)
            stream.end()

        stream.on("secure", on_secure)
        return rec

    with trio.fail_after(10):
        _, rec, report = await against_node_server(
            tcp,
            "echo",
            send,
            client_options={"ssl": client_context(certs), "server_hostname": "localhost"},
            tls=tls_config(certs),
        )

    assert rec.events == ["connect", "secure", "data", "end", ("close", False)]
    assert rec.data == MESSAGE
    assert peer["verified"] is True
    assert "DNS:localhost" in peer["cert"]["subjectaltname"]
    assert report["events"] == ["secureConnection", "data", "end", "finish", "close:false"]
    assert report["received_sha256"] == sha256(MESSAGE.encode())
    assert report["extra"]["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert report["error"] is None


async def test_starttls_node_upgrades_its_plain_socket(
    tcp: Transport, certs: SimpleNamespace, record: Any
) -> None:
    """Node: net.connect, HELLO/HI in plaintext, STARTTLS, then
    ``tls.connect({socket})`` on the same socket. Us: on the STARTTLS line,
    write GO (plaintext) and set_secure(server context); echo over TLS."""
    context = server_context(certs)
    plain: list[bytes] = []

    def setup(stream: net.Stream) -> Any:
        rec = record(stream, events=TLS_EVENTS, keep_data=True)
        buffer = bytearray()

        def on_data(chunk: bytes) -> None:
            if stream.secure:
                stream.write(chunk)  # echo over TLS
                return
            buffer.extend(chunk)
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                plain.append(line)
                if line == b"HELLO":
                    stream.write("HI\n")
                elif line == b"STARTTLS":
                    stream.write("GO\n")
                    stream.set_secure(context)

        stream.on("data", on_data)
        stream.on("end", stream.end)
        return rec

    with trio.fail_after(4):
        _, rec, report = await against_node_client(
            tcp, "starttls_client", setup, message=MESSAGE, tls=tls_config(certs)
        )

    assert plain == [b"HELLO", b"STARTTLS"]
    # HELLO and STARTTLS come in separate round trips, then TLS.
    assert rec.events[:4] == ["connect", ("data", b"HELLO\n"), ("data", b"STARTTLS\n"), "secure"]
    assert rec.events[4:] == [*[("data", c) for c in rec.chunks[2:]], "end", ("close", False)]
    assert b"".join(rec.chunks[2:]) == MESSAGE.encode()
    # Node orders its own 'finish' (its close_notify written) and 'end' (ours
    # read) by its internal timing on a socket it upgraded; both come, then close.
    assert report["events"][:5] == ["connect", "plain:HI", "plain:GO", "secureConnect", "data"]
    assert sorted(report["events"][5:7]) == ["end", "finish"]
    assert report["events"][7:] == ["close:false"]
    assert report["extra"]["plainAfterGo"] == ""
    assert report["extra"]["authorized"] is True
    assert report["extra"]["encrypted"] is True
    assert report["text"] == MESSAGE
    assert report["error"] is None


async def test_starttls_we_upgrade_against_node_tls_socket(
    tcp: Transport, certs: SimpleNamespace, record: Any
) -> None:
    """The other way round: our client says HELLO and STARTTLS in plaintext,
    then set_secure(client context) on GO; Node wraps its socket in a server
    ``tls.TLSSocket`` and echoes over TLS."""
    context = client_context(certs)
    verified: list[bool] = []

    def setup(stream: net.Stream) -> Any:
        rec = record(stream, events=TLS_EVENTS, keep_data=True)
        buffer = bytearray()

        def on_connect() -> None:
            stream.write("HELLO\n")

        def on_data(chunk: bytes) -> None:
            if stream.secure:
                return
            buffer.extend(chunk)
            if bytes(buffer) == b"HI\n":
                buffer.clear()
                stream.write("STARTTLS\n")
            elif bytes(buffer) == b"GO\n":
                buffer.clear()
                stream.set_secure(context, server_hostname="localhost")

        def on_secure() -> None:
            verified.append(stream.verify_peer())
            stream.end(MESSAGE)

        stream.on("connect", on_connect)
        stream.on("data", on_data)
        stream.on("secure", on_secure)
        return rec

    with trio.fail_after(10):
        _, rec, report = await against_node_server(
            tcp, "starttls_server", setup, tls=tls_config(certs)
        )

    assert verified == [True]
    assert rec.events[:4] == ["connect", ("data", b"HI\n"), ("data", b"GO\n"), "secure"]
    assert rec.events[4:] == [*[("data", c) for c in rec.chunks[2:]], "end", ("close", False)]
    assert b"".join(rec.chunks[2:]) == MESSAGE.encode()
    assert report["events"] == [
        "connection",
        "plain:HELLO",
        "plain:STARTTLS",
        "secure",
        "data",
        "end",
        "finish",
        "close:false",
    ]
    assert report["extra"]["plainAfterStarttls"] == ""
    assert report["extra"]["encrypted"] is True
    assert report["received_sha256"] == sha256(MESSAGE.encode())
    assert report["error"] is None
