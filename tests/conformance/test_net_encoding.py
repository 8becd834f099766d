"""Encodings on the wire: large multi-byte strings, latin1/binary round
trips, hex writes (Node's test-net-large-string.js, test-net-binary.js,
test-net-write-fully-async-hex-string.js)."""

from __future__ import annotations

import trio

import trio_netstream as net

from ._support import LOOPBACK, port_of


async def test_large_multibyte_string_arrives_whole() -> None:
    """From test-net-large-string.js.

    40 Ki copies of a 3-byte character written with encoding ``"UTF-8"``
    (any case, as Node) arrive as exactly as many characters on a server
    stream that decodes with ``set_encoding("UTF-8")``: no character is
    broken at a read boundary.
    """
    text = "あ" * (40 * 1024)
    received: list[str] = []

    def handler(conn: net.Stream) -> None:
        conn.set_encoding("UTF-8")
        conn.on("data", received.append)
        conn.on("end", conn.end)

    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            client.write(text, "UTF-8")
            client.end()
            async with client:
                pass
            server.close()
    assert all(isinstance(chunk, str) for chunk in received)
    assert len("".join(received)) == 40 * 1024
    assert "".join(received) == text


async def test_latin1_binary_round_trip_of_all_256_characters() -> None:
    """From test-net-binary.js.

    The 256 one-byte characters (255 down to 0) written with ``"binary"``
    (Node's alias of ``"latin1"``) are echoed by a server that decodes and
    re-encodes with ``"latin1"``; the client then writes 0..255 one character
    at a time as replies come in. Both halves come back exact.
    """
    reversed_chars = "".join(chr(i) for i in range(255, -1, -1))

    def handler(conn: net.Stream) -> None:
        conn.set_encoding("latin1")
        conn.on("data", lambda chunk: conn.write(chunk, "latin1"))
        conn.on("end", conn.end)

    received: list[str] = []
    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            client.set_encoding("latin1")
            sent = {"next": 0}

            def on_data(chunk: str) -> None:
                received.append(chunk)
                target = sent["next"] + len(chunk)
                while sent["next"] < target and sent["next"] < 256:
                    client.write(chr(sent["next"]), "latin1")
                    sent["next"] += 1
                if sent["next"] == 256:
                    client.end()

            client.on("data", on_data)
            client.on("connect", lambda: client.write(reversed_chars, "binary"))
            async with client:
                pass
            server.close()
    recv = "".join(received)
    assert len(recv) == 2 * 256
    assert recv[:256] == reversed_chars
    assert recv[256:] == "".join(chr(i) for i in range(256))


async def test_hex_string_writes_in_a_drain_loop() -> None:
    """From test-net-write-fully-async-hex-string.js (10 rounds of 200 kB
    instead of 20 of 1 MB).

    Large ``write(text, "hex")`` calls made in a write-until-``False`` /
    ``'drain'`` loop deliver exactly the decoded bytes. (Node's test ends
    with ``destroy()`` and only checks that nothing crashes; ours ends
    cleanly and checks every byte.)
    """
    data = bytes(200_000).hex()
    counts = {"bytes": 0, "nonzero": 0}

    def handler(conn: net.Stream) -> None:
        def on_data(chunk: bytes) -> None:
            counts["bytes"] += len(chunk)
            counts["nonzero"] += len(chunk) - chunk.count(0)

        conn.on("data", on_data)
        conn.on("end", conn.end)

    written = {"rounds": 0, "bytes": 0}
    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0, LOOPBACK)
            conn = net.create_connection(port_of(server))

            def write_loop() -> None:
                if written["rounds"] == 10:
                    conn.end()
                    return
                written["rounds"] += 1
                while True:
                    written["bytes"] += len(data) // 2
                    if not conn.write(data, "hex"):
                        break

            conn.on("connect", write_loop)
            conn.on("drain", write_loop)
            async with conn:
                pass
            server.close()
    assert written["rounds"] == 10
    assert conn.bytes_written == written["bytes"]
    assert counts == {"bytes": written["bytes"], "nonzero": 0}
