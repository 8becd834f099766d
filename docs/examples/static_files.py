"""A static file server: HTTP/1.0 over ``read_until()`` and ``send_file()``.

Each connection is one ``async def`` task that reads the request head with
``await stream.read_until(b"\\r\\n\\r\\n")``, writes the response headers
with ``write()`` and the file with ``await stream.send_file(path)`` (zero
copy, ``os.sendfile``, on a plain socket), then ends the connection::

    python docs/examples/static_files.py --port 8000 --root ./public
    curl -O http://127.0.0.1:8000/index.html

Only ``GET`` and ``HEAD`` of regular files under the root are served:
a path with a ``..`` segment is refused (``400``), a missing file is
``404``. No keep-alive: one request per connection.
"""

from __future__ import annotations

import argparse
import logging
import mimetypes
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

import trio_netstream as net

log = logging.getLogger("static_files")

#: The largest request head (request line and headers) accepted.
MAX_HEAD = 8192
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def resolve(root: Path, target: str) -> Path | int:
    """The file *target* (a request path) names under *root*, or the error status."""
    path = unquote(urlsplit(target).path)
    parts = [part for part in path.split("/") if part]
    if not path.startswith("/") or ".." in parts or any("\\" in part for part in parts):
        return 400
    file = root.joinpath(*parts) if parts else root / "index.html"
    return file if file.is_file() else 404


def head(status: int, length: int, content_type: str = "text/plain") -> bytes:
    """A response's status line and headers."""
    return (
        f"HTTP/1.0 {status} {REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")


async def respond(stream: net.Stream, root: Path) -> None:
    """Read one request and answer it."""
    try:
        request = await stream.read_until(b"\r\n\r\n", max_size=MAX_HEAD)
        method, target, _ = request.decode("latin-1").split("\r\n", 1)[0].split(" ", 2)
    except (ValueError, EOFError):  # too long, not a request line, or cut short
        method, target = "", ""
    found = resolve(root, target) if method in ("GET", "HEAD") else 400 if not method else 405
    if isinstance(found, int):
        body = f"{found} {REASONS[found]}\n".encode()
        stream.end(head(found, len(body)) + body)
        log.info("%s %s -> %d", method, target, found)
        return
    kind = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    stream.write(head(200, found.stat().st_size, kind))
    if method == "GET":
        await stream.send_file(found)  # after the headers, before the FIN
    stream.end()
    log.info("%s %s -> 200", method, target)


async def serve(
    root: str | Path,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the files under *root* on *host*:*port* until the server is
    closed (``await nursery.start(serve, root)`` starts with the
    :class:`trio_netstream.Server`)."""
    directory = Path(await trio.Path(root).resolve())

    async def on_connection(stream: net.Stream) -> None:
        stream.on("error", lambda error: log.info("%r failed: %r", stream, error))
        try:
            await respond(stream, directory)
        except OSError:
            pass  # the client went away: logged by the 'error' listener

    async with net.create_server(on_connection) as server:
        await server.listen(port, host)
        log.info("serving %s on %s", directory, server.address())
        task_status.started(server)


def main(argv: list[str] | None = None) -> None:
    """``python static_files.py [--port 8000] [--root .]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--root", default=".", help="the directory to serve (default: .)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        trio.run(partial(serve, args.root, args.port, args.host))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
