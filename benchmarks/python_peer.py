"""The Python peers of the benchmark suite: one server or client role per process.

``python python_peer.py ROLE PEER CONFIG`` (ROLE ``server`` or ``client``,
PEER ``trio_netstream``, ``trio``, ``asyncio-protocol`` or
``asyncio-streams``, CONFIG a JSON object), started by the orchestrator
(``bench.py``), as ``node node_peer.js ROLE CONFIG`` is for Node.js.

The line protocol on stdout: a server prints ``READY <port>`` once listening
(and ``ACCEPTED <n>`` once it holds the idle benchmark's *n* connections); a
client reads the port from its first line of stdin, then prints
``RESULT <json>``, or ``CONNECTED <n>`` for the idle benchmark, where it then
holds its connections until its stdin is closed, or ``UNSUPPORTED <reason>``
when it cannot do what the row measures (the row shows n/a for it). A trio_netstream role first
prints ``LIBRARY <json>``: the ``__file__`` and ``__version__`` of the
trio_netstream it imported, which the orchestrator checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from peer_common import raise_nofile, say

Role = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


def _trio_netstream_roles() -> tuple[Role, Role]:
    import trio_netstream

    say(
        "LIBRARY "
        + json.dumps({"file": trio_netstream.__file__, "version": trio_netstream.__version__})
    )
    from peer_netstream import netstream_client, netstream_server

    return netstream_server, netstream_client


def _trio_roles() -> tuple[Role, Role]:
    from peer_trio import trio_client, trio_server

    return trio_server, trio_client


def _protocol_roles() -> tuple[Role, Role]:
    from peer_asyncio import protocol_client, protocol_server

    return protocol_server, protocol_client


def _streams_roles() -> tuple[Role, Role]:
    from peer_asyncio import streams_client, streams_server

    return streams_server, streams_client


#: The roles of each peer (imported only by its own processes), and its event loop.
PEERS: dict[str, tuple[Callable[[], tuple[Role, Role]], str]] = {
    "trio_netstream": (_trio_netstream_roles, "trio"),
    "trio": (_trio_roles, "trio"),
    "asyncio-protocol": (_protocol_roles, "asyncio"),
    "asyncio-streams": (_streams_roles, "asyncio"),
}


def main(argv: list[str]) -> int:
    """Run one role of one peer in this process (a child of the orchestrator)."""
    role, peer, config = argv
    if role not in ("server", "client") or peer not in PEERS:
        raise SystemExit(f"usage: python_peer.py server|client {'|'.join(PEERS)} CONFIG")
    cfg: dict[str, Any] = json.loads(config)
    raise_nofile()
    if cfg.get("cpus"):
        os.sched_setaffinity(0, cfg["cpus"])
    roles, loop = PEERS[peer]
    server, client = roles()
    if role == "client":
        line = sys.stdin.readline()  # the orchestrator sends the port once the server listens
        if not line.strip():
            return 1
        cfg["port"] = int(line)
    run = server if role == "server" else client
    if loop == "trio":
        import trio

        trio.run(run, cfg)
    else:
        asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
