"""A line-based chat server: each line a client sends goes to every other client.

Each connection is one ``async def`` task (an async ``'connection'``
listener) that reads lines with ``await stream.readline()`` and writes each
to the other streams of ``server.streams``, the server's open connections::

    python docs/examples/chat_server.py --port 7000
    nc 127.0.0.1 7000      # in two or more terminals; type lines

A slow client does not slow the others down: ``write()`` queues, and a
client whose queue grows past :data:`MAX_QUEUED` bytes is disconnected.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from typing import Any

import trio

import trio_netstream as net

log = logging.getLogger("chat_server")

#: The longest line a client may send (with its ``\n``).
MAX_LINE = 4096
#: A client that lets this many bytes pile up unread is disconnected.
MAX_QUEUED = 1024 * 1024


async def serve(
    port: int = 0, host: str = "127.0.0.1", *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the chat on *host*:*port* until the server is closed.

    Use it with ``await nursery.start(serve)``: it starts with the
    :class:`trio_netstream.Server`; ``server.close()`` stops accepting, and
    :func:`serve` returns once every client has left.
    """

    async def chat(stream: net.Stream) -> None:
        # A failure (a reset, a write to a client that just left): logged,
        # and raised in the readline() that waits, if one does.
        stream.on("error", lambda error: log.info("%r failed: %r", stream, error))
        try:
            while True:
                line = await stream.readline(max_size=MAX_LINE)
                for other in server.streams:
                    # Not the sender, nor a client that is leaving (it ended).
                    if other is not stream and other.ready_state in ("open", "writeOnly"):
                        other.write(line)
                        if other.write_queue_size > MAX_QUEUED:
                            other.destroy()  # too slow: it would hold the memory
        except EOFError:
            pass  # the client left; allow_half_open=False ended our side
        except ValueError:
            stream.end(b"line too long\n")
        except OSError:
            pass  # logged by the 'error' listener; 'close' follows

    # allow_half_open=False: when a client ends, end our side too.
    async with net.create_server(chat, allow_half_open=False) as server:
        await server.listen(port, host)
        log.info("listening on %s", server.address())
        task_status.started(server)


def main(argv: list[str] | None = None) -> None:
    """``python chat_server.py [--port 7000] [--host 127.0.0.1]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7000, help="TCP port (default: 7000)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        trio.run(partial(serve, args.port, args.host))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
