"""``send_file()`` as a tiny HTTP server's response body, fetched by real
clients: curl, and Node.js's ``http`` module.

The server reads the request head, writes the response head with
``write()`` and the body with ``send_file()`` (zero-copy over plaintext
TCP, a range of the file), then ``end()``. Each client's download is
checked by SHA-256 against the file's slice. Child processes are bounded
by the test's deadline (``trio.run_process`` kills them when cancelled).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import trio_netstream as net

CURL = shutil.which("curl")
NODE = shutil.which("node")

MiB = 1024 * 1024
SIZE = 12 * MiB + 345
OFFSET = 1000
COUNT = 10 * MiB + 17
DEADLINE = 30

NODE_CLIENT = """
const http = require("http");
const crypto = require("crypto");
http.get({host: "127.0.0.1", port: Number(process.argv[1]), path: "/"}, (res) => {
  const hash = crypto.createHash("sha256");
  let size = 0;
  res.on("data", (chunk) => { hash.update(chunk); size += chunk.length; });
  res.on("end", () => {
    console.log(JSON.stringify({status: res.statusCode, size, sha256: hash.digest("hex")}));
  });
}).on("error", (err) => { console.error(err); process.exit(1); });
"""


@pytest.fixture(scope="module")
def body_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("http") / "body.bin"
    with open(path, "wb") as out:
        for _ in range(SIZE // MiB):
            out.write(os.urandom(MiB))
        out.write(os.urandom(SIZE % MiB))
    return path


def expected_sha(path: Path) -> str:
    with open(path, "rb") as source:
        source.seek(OFFSET)
        return hashlib.sha256(source.read(COUNT)).hexdigest()


@asynccontextmanager
async def http_server(path: Path, served: list[int]) -> AsyncIterator[int]:
    """A one-route HTTP/1.1 server whose body is ``send_file(path, OFFSET, COUNT)``."""

    async def handler(stream: net.Stream) -> None:
        head = b""
        async for chunk in stream:
            assert isinstance(chunk, bytes)
            head += chunk
            if b"\r\n\r\n" in head:
                break
        assert head.startswith(b"GET / HTTP/1.1\r\n")
        stream.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Length: " + str(COUNT).encode() + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        await stream.send_file(path, OFFSET, COUNT)
        served.append(stream.bytes_written)
        stream.end()

    async with net.create_server(handler) as server:
        await server.listen(0, "127.0.0.1")
        address = server.address()
        assert isinstance(address, tuple)
        yield int(address[1])
        server.close()


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
async def test_curl_downloads_a_file_sent_with_send_file(body_file: Path, tmp_path: Path) -> None:
    assert CURL is not None
    out = tmp_path / "download.bin"
    served: list[int] = []
    with trio.fail_after(DEADLINE):
        async with http_server(body_file, served) as port:
            result = await trio.run_process(
                [CURL, "-sS", "--fail", "-o", str(out), f"http://127.0.0.1:{port}/"],
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 0, result.stderr
    digest = await trio.to_thread.run_sync(lambda: hashlib.sha256(out.read_bytes()).hexdigest())
    assert digest == expected_sha(body_file)
    assert len(served) == 1
    assert served[0] > COUNT  # the head, then the body


@pytest.mark.skipif(NODE is None, reason="Node.js (the node binary) is not installed")
async def test_node_http_downloads_a_file_sent_with_send_file(body_file: Path) -> None:
    assert NODE is not None
    served: list[int] = []
    with trio.fail_after(DEADLINE):
        async with http_server(body_file, served) as port:
            result = await trio.run_process(
                [NODE, "-e", NODE_CLIENT, str(port)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 0, result.stderr
    report = result.stdout.decode().strip()
    expected = f'{{"status":200,"size":{COUNT},"sha256":"{expected_sha(body_file)}"}}'
    assert report == expected
