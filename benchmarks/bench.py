"""The benchmark suite: trio_netstream against its peers, in one run.

Run it from a checkout with ``python benchmarks/bench.py`` (``--help`` lists
the options; ``--quick`` is a smoke run of a few seconds), or ``nox -s
bench``. It is not part of the library (the wheel does not carry it); it
measures the trio_netstream of the checkout it lives in.

How it works: this process (the *orchestrator*, ``bench_run.py``) starts,
for every run, a server process and a client process of the same
implementation (the *peer*) on 127.0.0.1, reads their results from their
stdout, and never measures anything itself except the server's memory
(``VmRSS`` from ``/proc/<pid>/status``). Runs are interleaved (A B C A B C
...) and every figure is the median over the runs; every figure is also
given as a ratio to raw ``trio.SocketStream`` measured in the same
invocation (``bench_report.py``). The Python peers are
``python_peer.py`` (``peer_*.py``), the Node.js peer ``node_peer.js``.

``--baseline DIR`` adds the peer ``trio_netstream@base``: the trio_netstream
roles, run with trio_netstream imported from DIR (a checkout of another
commit, e.g. a ``git worktree``), interleaved with the others, so that two
commits are compared in one invocation.

Benchmarks:

* ``bulk``: the client sends ``bytes`` in ``chunk`` writes (respecting each
  implementation's backpressure); the server counts them and answers one
  byte once all have arrived. Time from connect to that byte: MB/s
  (1 MB = 10**6 bytes).
* ``pingpong``: ``rounds`` round trips of a ``size``-byte request and its
  full echo, ``no_delay`` on both sides; client and server pinned to
  different cores (``pingpong-cross``) or to the same core
  (``pingpong-same``): round trips/s, p50 and p99 in microseconds.
* ``churn``: ``count`` sequential connections, each: connect, send one
  byte, read its echo, end, wait for the peer's end and the close:
  connections/s. ``churn-node``: the same with a Node-style client, which
  closes at the echo (``destroy()``) without waiting for the peer's end;
  ``churn-node-client`` and ``churn-node-server`` measure its client alone
  (against the common raw trio echo server) and the echo server alone
  (against the common raw trio Node-style client: ``send_all``,
  ``receive_some``, ``aclose``), see ``bench_spec.LAYOUTS``. Each
  Node-style run checks that every connection got its byte back.
* ``idle``: the server's RSS growth per connection while it holds
  ``connections`` idle echo connections, opened by a client process.
* ``tls``: ``bulk`` over TLS (trustme certificates).
* ``handshake``: ``count`` sequential TLS 1.3 connections (TLS 1.3 only, on
  both sides; the ``tls`` benchmark's certificates, the name ``localhost``
  checked), each: connect, the handshake, send one byte, read its echo,
  close (close_notify each way, then TCP's): handshakes/s. Two rows: full
  handshakes (``handshake``), and each resuming the previous connection's
  session (``handshake-resume``; the session is taken after the echo, as
  TLS 1.3 tickets come after the handshake). Every run checks that none
  resp. all of its handshakes resumed. A peer that cannot resume says so
  (``UNSUPPORTED``) and the row shows n/a for it.

The benchmarks below measure one process of the run; the others are raw
trio's, the same for every implementation (``bench_spec.LAYOUTS``):

* ``sendfile``: the server sends a file of ``sendfile_bytes`` (random data,
  made once per invocation) to a common raw trio receiver (``recv_into``
  one 256 KiB buffer), which counts the bytes and answers one byte. Time
  from connect to the last byte: MB/s. Two rows: ``sendfile``, each
  implementation's way to send a file (trio_netstream ``send_file()``,
  asyncio ``loop.sendfile()``, Node.js ``fs.createReadStream().pipe()``;
  raw trio has none: reads and ``send_all``), and ``sendfile-write``, the
  file in ``chunk`` reads, each written with the implementation's
  backpressure.
* ``proxy``: a common raw trio bulk client sends ``proxy_bytes`` through
  the implementation's proxy (a process of its own) to a common raw trio
  sink, whose one-byte answer comes back through it: MB/s.
* ``readline``: a common raw trio server sends ``lines`` lines of 16 to 32
  bytes as fast as it can; the implementation's client reads them with its
  line reader (a hand-written ``bytearray`` one for raw trio and asyncio
  Protocol): lines/s. Its target is against asyncio Streams' ``readline()``.
* ``http``: the implementation's minimal HTTP/1.1 server (written on its
  TCP API, not an HTTP library: each request head up to its blank line, a
  fixed 13-byte reply, keep-alive unless the request says otherwise) under a
  load run by a common raw trio client: ``wrk`` (``http-wrk``, one thread,
  ``http_seconds``) or ``ab -k`` (``http-ab``, ``http_requests``), both with
  100 connections, the server and the load generator pinned to different
  cores: requests/s. A row whose program is not on ``PATH`` is skipped with
  a note (Debian: ``wrk``, ``apache2-utils``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_report import chart, markdown, targets
from bench_run import HERE, ROOT, Suite, progress, run_suite
from bench_spec import (
    BASE_PEER,
    BASELINE,
    BENCHMARKS,
    FULL,
    HTTP_CONNECTIONS,
    PEERS,
    QUICK,
    Sizes,
    peer_name,
)
from peer_common import raise_nofile

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description="Benchmark trio_netstream against raw trio, asyncio and Node.js "
        "(client and server in separate processes on 127.0.0.1).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: tiny sizes, 1 run each (a few seconds)"
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks (default: all of {','.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated implementations (default: all of {','.join(PEERS)}); "
        "raw trio is always added, as the baseline",
    )
    parser.add_argument("--runs", type=int, help="runs per implementation (default 5, quick 1)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=ROOT / "docs",
        help="where performance.md and performance.png go (default: docs/ of this checkout)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument("--bulk-mib", type=int, help="bulk payload in MiB (default 1024)")
    parser.add_argument("--tls-mib", type=int, help="TLS bulk payload in MiB (default 256)")
    parser.add_argument("--rounds", type=int, help="ping-pong round trips (default 20000)")
    parser.add_argument("--churn", type=int, help="churn connections (default 5000)")
    parser.add_argument("--idle", type=int, help="idle connections (default 10000)")
    parser.add_argument(
        "--handshakes", type=int, help="TLS handshakes per handshake row run (default 1000)"
    )
    parser.add_argument(
        "--sendfile-mib", type=int, help="the sendfile rows' file size in MiB (default 1024)"
    )
    parser.add_argument("--proxy-mib", type=int, help="proxy payload in MiB (default 1024)")
    parser.add_argument("--lines", type=int, help="readline lines (default 1000000)")
    parser.add_argument(
        "--http-seconds", type=int, help="wrk's duration per http-wrk run in seconds (default 10)"
    )
    parser.add_argument(
        "--http-requests", type=int, help="ab's requests per http-ab run (default 200000)"
    )
    parser.add_argument(
        "--node-peer",
        type=Path,
        default=HERE / "node_peer.js",
        help="the Node.js peer script (default: node_peer.js next to this file)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds allowed for one client run"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help=f"also run the peer {BASE_PEER}: the trio_netstream roles with trio_netstream "
        "imported from DIR, a checkout of another commit (e.g. a git worktree)",
    )
    return parser


def _split(value: str, known: Sequence[str], what: str) -> list[str]:
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return [item for item in known if item in chosen]  # canonical order


def _suite(args: argparse.Namespace) -> Suite:
    base = QUICK if args.quick else FULL
    overrides: dict[str, int] = {}
    if args.runs is not None:
        overrides["runs"] = args.runs
    if args.bulk_mib is not None:
        overrides["bulk_bytes"] = args.bulk_mib << 20
    if args.tls_mib is not None:
        overrides["tls_bytes"] = args.tls_mib << 20
    if args.sendfile_mib is not None:
        overrides["sendfile_bytes"] = args.sendfile_mib << 20
    if args.proxy_mib is not None:
        overrides["proxy_bytes"] = args.proxy_mib << 20
    for name in ("rounds", "churn", "idle", "handshakes", "lines", "http_seconds", "http_requests"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    sizes = Sizes(**{**base.__dict__, **overrides})
    if sizes.runs < 1 or min(sizes.__dict__.values()) < 1:
        raise SystemExit("sizes and --runs must be at least 1")
    if sizes.http_requests < HTTP_CONNECTIONS:
        raise SystemExit(f"--http-requests must be at least {HTTP_CONNECTIONS} (ab's connections)")
    peers = _split(args.peers, list(PEERS), "peer")
    suite = Suite(
        sizes=sizes,
        benchmarks=_split(args.only, list(BENCHMARKS), "benchmark"),
        peers=peers,
        output_dir=args.output_dir,
        quick=args.quick,
        json_path=args.json,
        node_peer=args.node_peer,
        timeout=args.timeout,
        cpus=sorted(os.sched_getaffinity(0)),
    )
    if BASELINE not in peers:
        suite.peers = [peer for peer in PEERS if peer in (*peers, BASELINE)]
        suite.notes.append("raw trio was added to --peers: every ratio is to it.")
    if "node" in suite.peers:
        if shutil.which("node") is None:
            suite.peers.remove("node")
            suite.notes.append("Node.js skipped: `node` was not found on PATH.")
        elif not suite.node_peer.is_file():
            suite.peers.remove("node")
            suite.notes.append(f"Node.js skipped: {suite.node_peer} does not exist.")
    if args.baseline is not None:
        _add_baseline(suite, args.baseline)
    if not args.quick and sizes.runs < 3:
        suite.notes.append(f"Only {sizes.runs} run(s) per figure: medians of fewer than 3 runs.")
    return suite


def _add_baseline(suite: Suite, directory: Path) -> None:
    """Add the peer trio_netstream@base, run right after trio_netstream."""
    root = directory.resolve()
    if not (root / "trio_netstream" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {directory}: no trio_netstream/__init__.py there")
    suite.baseline = root
    at = suite.peers.index("trio_netstream") + 1 if "trio_netstream" in suite.peers else 0
    suite.peers.insert(at, BASE_PEER)
    suite.notes.append(
        f"{BASE_PEER}: the trio_netstream roles, with trio_netstream imported from {root}."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite.

    Returns the process exit status: 0 when every selected benchmark produced
    a figure for every selected implementation, 1 otherwise.
    """
    args = _parser().parse_args(argv)
    raise_nofile()
    suite = _suite(args)
    for note in suite.notes:
        progress("note: " + note)
    started = time.monotonic()
    progress(
        f"benchmarks: {', '.join(suite.benchmarks)}; peers: "
        f"{', '.join(peer_name(p) for p in suite.peers)}; {suite.sizes.runs} run(s) each"
        + (" (quick)" if suite.quick else "")
    )
    suite.load.append(os.getloadavg()[0])
    run_suite(suite)
    suite.load.append(os.getloadavg()[0])
    suite.output_dir.mkdir(parents=True, exist_ok=True)
    chart_path = suite.output_dir / "performance.png"
    drawn = chart_path.name if suite.results and chart(suite, chart_path) else None
    report = markdown(suite, drawn)
    (suite.output_dir / "performance.md").write_text(report, encoding="utf-8")
    if suite.json_path is not None:
        suite.json_path.parent.mkdir(parents=True, exist_ok=True)
        suite.json_path.write_text(
            json.dumps(
                {
                    "quick": suite.quick,
                    "sizes": suite.sizes.__dict__,
                    "peers": suite.peers,
                    "baseline": None if suite.baseline is None else str(suite.baseline),
                    "rows": list(suite.results),
                    "results": suite.results,
                    "failures": suite.failures,
                    "unsupported": suite.unsupported,
                    "notes": suite.notes,
                    "targets": [list(t) for t in targets(suite)],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    print(report)
    progress(
        f"wrote {suite.output_dir / 'performance.md'}"
        + (f" and {chart_path}" if drawn else "")
        + f" in {time.monotonic() - started:.0f} s"
    )
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main())
