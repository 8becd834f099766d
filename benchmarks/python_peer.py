"""The Python peers of the benchmark suite: one role per process.

``python python_peer.py ROLE PEER CONFIG`` (ROLE ``server``, ``client`` or ``proxy``,
PEER ``trio_netstream``, ``trio``, ``asyncio-protocol`` or
``asyncio-streams``, CONFIG a JSON object), started by the orchestrator
(``bench.py``), as ``node node_peer.js ROLE CONFIG`` is for Node.js.

The line protocol on stdout: a server prints ``READY <port>`` once listening
(and ``ACCEPTED <n>`` once it holds the idle benchmark's *n* connections); a
proxy (the proxy row's middle process) reads its target's port from the
first line of its stdin, then prints ``READY <port>`` once listening; a
client reads the port from its first line of stdin, then prints ``RESULT
<json>``, or ``CONNECTED <n>`` for the idle benchmark, where it then holds
its connections until its stdin is closed. A role that cannot do what the
row measures prints ``UNSUPPORTED <reason>`` instead of ``READY`` or
``RESULT`` (the row shows n/a for it). A trio_netstream role first prints
``LIBRARY <json>``: the ``__file__`` and ``__version__`` of the
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
#: A peer's roles by name: ``server``, ``client`` and (for the proxy row) ``proxy``.
Roles = dict[str, Role]


def _trio_netstream_roles() -> Roles:
    import trio_netstream

    say(
        "LIBRARY "
        + json.dumps({"file": trio_netstream.__file__, "version": trio_netstream.__version__})
    )
    from peer_netstream import netstream_client, netstream_proxy, netstream_server

    return {"server": netstream_server, "client": netstream_client, "proxy": netstream_proxy}


def _trio_roles() -> Roles:
    from peer_trio import trio_client, trio_proxy, trio_server

    return {"server": trio_server, "client": trio_client, "proxy": trio_proxy}


def _protocol_roles() -> Roles:
    from peer_asyncio import protocol_client, protocol_proxy, protocol_server

    return {"server": protocol_server, "client": protocol_client, "proxy": protocol_proxy}


def _streams_roles() -> Roles:
    from peer_asyncio import streams_client, streams_proxy, streams_server

    return {"server": streams_server, "client": streams_client, "proxy": streams_proxy}


#: The roles of each peer (imported only by its own processes), and its event loop.
PEERS: dict[str, tuple[Callable[[], Roles], str]] = {
    "trio_netstream": (_trio_netstream_roles, "trio"),
    "trio": (_trio_roles, "trio"),
    "asyncio-protocol": (_protocol_roles, "asyncio"),
    "asyncio-streams": (_streams_roles, "asyncio"),
}
#: What the roles read from their stdin's first line, once the orchestrator knows it.
_PORT_FROM_STDIN = {"client": "port", "proxy": "target"}


def main(argv: list[str]) -> int:
    """Run one role of one peer in this process (a child of the orchestrator)."""
    role, peer, config = argv
    if role not in ("server", "client", "proxy") or peer not in PEERS:
        raise SystemExit(f"usage: python_peer.py server|client|proxy {'|'.join(PEERS)} CONFIG")
    cfg: dict[str, Any] = json.loads(config)
    raise_nofile()
    if cfg.get("cpus"):
        os.sched_setaffinity(0, cfg["cpus"])
    roles, loop = PEERS[peer]
    run = roles()[role]
    if role in _PORT_FROM_STDIN:
        # the orchestrator sends the port once the server (the proxy's target) listens
        line = sys.stdin.readline()
        if not line.strip():
            return 1
        cfg[_PORT_FROM_STDIN[role]] = int(line)
    if loop == "trio":
        import trio

        trio.run(run, cfg)
    else:
        asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
