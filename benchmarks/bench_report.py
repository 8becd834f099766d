"""The report: medians and ratios to raw trio, the Markdown page
(``performance.md``) and the chart (``performance.png``, with matplotlib)."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import platform
import resource
import shutil
import ssl
import statistics
import subprocess
import warnings
from pathlib import Path
from typing import Any

from bench_run import Suite, progress
from bench_spec import (
    BASE_PEER,
    BASELINE,
    HTTP_CONNECTIONS,
    NONE,
    ROWS,
    TARGETS,
    TIMES,
    WRK_THREADS,
    peer_name,
)


def _median(suite: Suite, row: str, peer: str, metric: str) -> float | None:
    runs = suite.results.get(row, {}).get(peer)
    if not runs:
        return None
    return statistics.median(run[metric] for run in runs)


def _ratio(suite: Suite, row: str, peer: str, metric: str, versus: str = BASELINE) -> float | None:
    value = _median(suite, row, peer, metric)
    base = _median(suite, row, versus, metric)
    if value is None or not base:
        return None
    return value / base


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return NONE
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:,.1f}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}".strip()


def _fmt_ratio(ratio: float | None) -> str:
    return NONE if ratio is None else f"{ratio:.2f}{TIMES}"


#: The cell of a peer that cannot do what a row measures (its client said UNSUPPORTED).
NOT_APPLICABLE = "n/a"


def _unsupported(suite: Suite, row: str, peer: str) -> str | None:
    """Why *peer* cannot do what *row* measures, or ``None``."""
    return suite.unsupported.get(row, {}).get(peer)


def _machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0))
    return {
        "CPU": model,
        "cores": f"{os.cpu_count()} ({usable} usable by this process)",
        "kernel": f"{platform.system()} {platform.release()}",
        "RLIMIT_NOFILE (soft/hard)": "/".join(
            str(limit) for limit in resource.getrlimit(resource.RLIMIT_NOFILE)
        ),
    }


def _node_versions() -> tuple[str, str] | None:
    if shutil.which("node") is None:
        return None
    try:
        out = subprocess.run(
            ["node", "-p", "process.version + ' ' + process.versions.openssl"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0], out[1]


def _versions(suite: Suite) -> dict[str, str]:
    import trio

    versions = {
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "trio": trio.__version__,
        "trio_netstream": _library(suite, "trio_netstream"),
    }
    if suite.baseline is not None:
        versions[BASE_PEER] = _library(suite, BASE_PEER)
    versions["OpenSSL (Python)"] = ssl.OPENSSL_VERSION
    node = _node_versions()
    versions["Node.js"] = node[0] if node else "not found"
    if node:
        versions["OpenSSL (Node.js)"] = node[1]
    return versions


def _library(suite: Suite, peer: str) -> str:
    """The version the peer's roles reported; with ``--baseline``, also which
    commit of which checkout (the point of such a run is to compare them)."""
    reported = suite.libraries.get(peer)
    version = reported["version"] if reported else "not measured"
    if suite.baseline is None:
        return version
    root = suite.library_root(peer)
    where = f"{_commit(root)}, {root}" if peer == BASE_PEER else _commit(root)
    return f"{version} ({where})"


def _commit(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"commit {head}" + (" with uncommitted changes" if changed else "")


def targets(suite: Suite) -> list[tuple[str, str, str]]:
    lines: list[tuple[str, str, str]] = []
    for target in TARGETS:
        ratio = _ratio(suite, target.row, "trio_netstream", target.metric, target.versus)
        if ratio is None:
            verdict = "not measured"
        else:
            met = ratio >= target.ratio if target.at_least else ratio <= target.ratio
            verdict = "met" if met else "**not met**"
        lines.append((target.text, _fmt_ratio(ratio), verdict))
    return lines


def markdown(suite: Suite, chart: str | None) -> str:
    s = suite.sizes
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out: list[str] = ["# Performance", ""]
    if suite.quick:
        out += [
            "> **Smoke run (`--quick`)**: tiny sizes and one run each. These figures only show "
            "that the harness works; they are not a measurement.",
            "",
        ]
    out += [
        "trio_netstream against its peers, all measured in the same run by "
        "`python benchmarks/bench.py`. Client and server are separate processes on "
        f"127.0.0.1; runs are interleaved (A B C … A B C …) and every figure is the median of "
        f"{s.runs} run{'s' if s.runs != 1 else ''}. **Ratios are to raw `trio.SocketStream` "
        "measured in the same invocation** (for latency and memory, lower is better). "
        "Where a connection's CPU time goes (the library's, Trio's, the kernel's): "
        "[costs.md](costs.md).",
        "",
        f"Generated {now}.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    machine = _machine()
    if suite.load:
        machine["load average (1 min), start / end"] = " / ".join(f"{x:.2f}" for x in suite.load)
    for key, value in {**machine, **_versions(suite)}.items():
        out.append(f"| {key} | {value} |")
    out += [
        "",
        "## Targets (trio_netstream)",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    out += [f"| {text} | {ratio} | {verdict} |" for text, ratio, verdict in targets(suite)]
    out += ["", "## Summary: ratio to raw trio", ""]
    rows = [row for row in ROWS if row in suite.results]
    header = " | ".join(f"{ROWS[row].short} ({ROWS[row].main.label})" for row in rows)
    out += [f"| implementation | {header} |", "|---" * (len(rows) + 1) + "|"]
    for peer in suite.peers:
        cells: list[str] = [
            NOT_APPLICABLE
            if _unsupported(suite, row, peer)
            else _fmt_ratio(_ratio(suite, row, peer, ROWS[row].main.key))
            for row in rows
        ]
        out.append(f"| {peer_name(peer)} | " + " | ".join(cells) + " |")
    out += ["", "Higher is better, except for idle memory."]
    if chart:
        out += ["", f"![ratios to raw trio]({chart})"]
    out += ["", "## Results", ""]
    for row_key in rows:
        row = ROWS[row_key]
        out += [f"### {row.title}", "", _row_setup(suite, row_key), ""]
        head = " | ".join(f"{m.label} ({m.unit}) | ratio" for m in row.metrics)
        out += [
            f"| implementation | {head} | {row.main.label}, each run |",
            "|---" * (2 * len(row.metrics) + 2) + "|",
        ]
        for peer in suite.peers:
            failure = suite.failures.get(row_key, {}).get(peer)
            unsupported = _unsupported(suite, row_key, peer)
            runs = suite.results[row_key].get(peer, [])
            cells = []
            for metric in row.metrics:
                if unsupported:
                    cells += [NOT_APPLICABLE, NOT_APPLICABLE]
                    continue
                cells.append(_fmt(_median(suite, row_key, peer, metric.key), metric.unit))
                cells.append(_fmt_ratio(_ratio(suite, row_key, peer, metric.key)))
            per_run = ", ".join(_fmt(run[row.main.key]) for run in runs)
            if failure:
                per_run += f" failed: {failure}"
            if unsupported:
                per_run = f"{NOT_APPLICABLE}: {unsupported}"
            out.append(f"| {peer_name(peer)} | " + " | ".join(cells) + f" | {per_run} |")
        out.append("")
    out += ["## How it was measured", ""]
    out += [
        "- **bulk**: the client writes the whole payload in "
        f"{s.chunk // 1024} KiB writes, respecting each implementation's backpressure "
        "(trio_netstream and Node.js: `write()` → `False` then `'drain'`; asyncio Protocol: "
        "`pause_writing`/`resume_writing`; asyncio Streams: `await drain()`; raw trio: "
        "`await send_all()`). The server counts the bytes and answers one byte once all have "
        "arrived; the time runs from connect to that byte. 1 MB = 10⁶ bytes. Every sender "
        "has `TCP_NODELAY` set, as raw trio and asyncio do by default (trio_netstream and "
        "Node.js default to Nagle on, as Node does: the bench passes `no_delay=True` and "
        "calls `setNoDelay(true)`). With Nagle on, each 64 KiB write leaves a tail shorter "
        "than a segment waiting for an ACK; on the 2-core VM where this was developed, that "
        "alone cost trio_netstream about 30% of its loopback throughput in some runs.",
        "- **ping-pong**: a 64-byte request, the full 64-byte echo, then the next; `no_delay` on "
        "both sides; each process pinned with `sched_setaffinity` to its own core "
        "(cross-core) or both to the same core (same-core).",
        "- **churn**: sequential connections, each: connect, send 1 byte, read the echo, end, "
        "wait for the server's end and the close. **Node-style** rows: each connection "
        "as a new user writes it, no wait for the server's end: write on connect, close on "
        "the echo, the next connection once closed (trio_netstream `write()` in "
        "`'connect'`, `destroy()` in `'data'`, the `async with` left at `'close'`; Node.js "
        "the same with `net.connect`; raw trio `open_tcp_stream`, `send_all`, "
        "`receive_some(1)`, `aclose()`; asyncio Protocol `transport.write()` in "
        "`connection_made`, `transport.close()` in `data_received` (its write buffer is "
        "empty: the socket closes at once, as `destroy()` does), the next at "
        "`connection_lost`; asyncio Streams `write`, `drain`, `read(1)`, `close()`, "
        "`wait_closed()`). Every run checks that each connection got its byte back. "
        "`churn Node-style` runs both sides of the implementation; `churn Node-style "
        "client` its client against a common raw trio echo server, `churn Node-style "
        "server` its echo server against the common raw trio Node-style client "
        "(`bench_spec.LAYOUTS`; for raw trio all three are the same all-raw pair).",
        "- **idle memory**: the server's `VmRSS` (`/proc/<pid>/status`) once listening, and "
        "again once it holds every connection (opened by a client process, both with "
        "`RLIMIT_NOFILE` raised to the hard limit); the difference divided by the count.",
        "- **TLS bulk**: bulk over TLS with `trustme` certificates; `ssl=` for "
        "trio_netstream, `trio.SSLStream` for raw trio, `ssl=` for asyncio, `tls` for Node.js.",
        "- **TLS handshakes**: sequential connections, each: connect, a full TLS 1.3 "
        "handshake, send 1 byte, read the echo, close: the client's close_notify, the "
        "server's, then the TCP close (trio_netstream and Node.js: `end()` and the server's "
        "`end()` on `'end'`; asyncio: `close()`; raw trio: `unwrap()`, then the server's "
        "`aclose()`). TLS 1.3 only (minimum and maximum version) on both sides; the TLS "
        "bulk row's certificates, one client context for all the connections, the name "
        "`localhost` sent (SNI) and checked; `TCP_NODELAY` everywhere. Clients: "
        "`create_connection(ssl=, server_hostname=)`, `trio.SSLStream` over "
        "`open_tcp_stream`, asyncio's `ssl=` and `server_hostname=`, `tls.connect` with a "
        "`secureContext` made once; servers as for TLS bulk. With **session resumption**, "
        "each connection resumes the latest session: the one the connection before it got, "
        "taken after the echo since TLS 1.3 tickets arrive after the handshake, or the one "
        "it resumed if no new ticket came (Node.js's server sends none on resumption); an "
        "untimed first connection makes the first. Resumption by: trio_netstream "
        "`session=` / `get_session()`, Node.js "
        "`session` / the `'session'` event, raw trio by setting `SSLStream.session` (which "
        "it forwards to its `SSLObject`) before the handshake; asyncio has no session "
        "option, so an `SSLContext` subclass passes the session to the `wrap_bio` call "
        "asyncio makes. Every run checks `session_reused` (`isSessionReused()`): none "
        "resumed in the full row, all in the other. n/a: the implementation cannot resume.",
        "- **one measured process**: in the rows below only one process is the "
        "implementation's; the others are raw trio's, the same in every run, so that only "
        "the measured side varies (`bench_spec.LAYOUTS`).",
        "- **sendfile**: the measured server sends the file (random data, written once per "
        "invocation, so in the page cache) as soon as a common receiver connects; the "
        "receiver counts the bytes with a blocking `recv_into` into one 256 KiB buffer, no "
        "event loop (the cheapest receiver, so that the sender is what is measured; a raw "
        "trio receiver capped both senders at its own rate) and answers one byte; the time "
        "runs from connect to the last byte. File API row: trio_netstream "
        "`await stream.send_file(path)` "
        "(`os.sendfile`), asyncio `await loop.sendfile(transport, file)` (`os.sendfile` on a "
        "plain socket), Node.js `fs.createReadStream(path).pipe(socket)` (Node.js has no "
        "zero-copy send); raw trio has no file API: blocking 64 KiB reads, each "
        "`await send_all(chunk)`. Reads-and-writes row: the same reads, each written with the "
        "implementation's backpressure (`write()` → `False` then `'drain'`; "
        "`pause_writing`; `await drain()`; `send_all`). `TCP_NODELAY` on every sender.",
        "- **proxy**: a common raw trio client sends the payload in 64 KiB `send_all`s "
        "through the measured proxy (its own process) to a common raw trio sink, which "
        "answers one byte once all came; the answer comes back through the proxy, and the "
        "time runs from connect to it. Three processes on this machine's cores: the proxy's "
        "CPU cost shows directly. Proxies: trio_netstream `client.pipe(upstream)` and "
        "`upstream.pipe(client)`; raw trio a task per direction (`receive_some(65536)`, "
        "`send_all`, then `send_eof`); asyncio Protocol two protocols writing to each other "
        "(`pause_writing` pauses the other's reading); asyncio Streams a task per direction "
        "(`read(65536)`, `write`, `await drain()`, then `write_eof`); Node.js "
        "`client.pipe(upstream); upstream.pipe(client)`. `TCP_NODELAY` on every socket.",
        "- **readline**: a common raw trio server sends every line at once (one `send_all`) "
        "and then EOF; the measured client reads the lines one call each and counts them and "
        "their bytes (checked); the time runs from connect to the last line. Readers: "
        "trio_netstream `await stream.readline()`, asyncio Streams `await reader.readline()`, "
        "Node.js `readline.createInterface({input: socket, crlfDelay: Infinity})` and its "
        "`'line'` event (lines decoded to strings, as it does); raw trio a hand-written "
        "reader (`bytearray` filled by `receive_some(65536)`, `find` from where the last "
        "search stopped, the line taken as `bytes` and `del`eted from the front), asyncio "
        "Protocol the same in `data_received`.",
        "- **HTTP keep-alive**: the measured server is a minimal HTTP/1.1 server on the "
        "implementation's TCP API (not an HTTP library): it takes each request head (up to "
        "the blank line; no body), keeps the connection alive (HTTP/1.1 unless "
        "`Connection: close`, HTTP/1.0 with `Connection: keep-alive`) and answers a fixed "
        "200 reply of 13 bytes with `Content-Length` and `Connection`; the requests one "
        "read completed (pipelined ones too) are answered in one write. trio_netstream: a "
        "`'data'` listener filling a `bytearray`, `write()`; raw trio: a `serve_tcp` handler, "
        "`receive_some(65536)` and `send_all`; asyncio Protocol: the same in `data_received`; "
        "these three share the parser (`peer_common.http_replies`), Node.js has it in "
        "JavaScript on `net.createServer` (not its `http` module); asyncio Streams "
        "`readuntil(b'\\r\\n\\r\\n')`, `write()` and `await drain()` per request. The "
        "load is a common raw trio client that runs `wrk` (one thread) or `ab -k` (HTTP/1.0 "
        f"and `Connection: Keep-Alive`) with {HTTP_CONNECTIONS} connections, the server "
        "pinned to one core and the load generator to another; its requests/s are the "
        "figure. A run fails on any socket error, failed request or reply that is not 2xx, "
        "and for ab unless every request was on a kept-alive connection.",
        "- **servers**: trio_netstream uses Node-port style listeners (`on('data', "
        "stream.write)` echo, a counting `'data'` listener as the sink); raw trio uses "
        "`serve_tcp` handlers; Node.js runs `benchmarks/node_peer.js`.",
        "",
    ]
    if suite.notes:
        out += ["## Notes", ""] + [f"- {note}" for note in suite.notes] + [""]
    return "\n".join(out)


def _row_setup(suite: Suite, row: str) -> str:
    s = suite.sizes
    return {
        "bulk": f"{s.bulk_bytes / 2**20:,.0f} MiB one way in {s.chunk // 1024} KiB writes.",
        "pingpong-cross": f"{s.rounds:,} round trips of {s.message} bytes; server on CPU "
        f"{suite.cpus[0] if suite.cpus else '?'}, client on CPU "
        f"{suite.cpus[1] if len(suite.cpus) > 1 else '?'}.",
        "pingpong-same": f"{s.rounds:,} round trips of {s.message} bytes; server and client "
        f"both on CPU {suite.cpus[0] if suite.cpus else '?'}.",
        "churn": f"{s.churn:,} sequential connections.",
        "churn-node": f"{s.churn:,} sequential connections, the client `destroy()`ing each "
        "on its echo.",
        "churn-node-client": f"{s.churn:,} sequential connections of the implementation's "
        "Node-style client to a common raw trio echo server.",
        "churn-node-server": f"{s.churn:,} sequential connections of a common raw trio "
        "Node-style client (`send_all`, `receive_some`, `aclose`) to the implementation's "
        "echo server.",
        "idle": f"{s.idle:,} concurrent idle connections.",
        "tls": f"{s.tls_bytes / 2**20:,.0f} MiB one way over TLS in {s.chunk // 1024} KiB writes.",
        "handshake": f"{s.handshakes:,} sequential TLS 1.3 connections, each a full "
        "handshake, a 1-byte echo and the close.",
        "handshake-resume": f"{s.handshakes:,} sequential TLS 1.3 connections, each "
        "resuming the previous one's session, a 1-byte echo and the close.",
        "sendfile": f"A {s.sendfile_bytes / 2**20:,.0f} MiB file sent by the server with the "
        "implementation's file API (trio_netstream `send_file()`, asyncio `loop.sendfile()`, "
        "Node.js `fs.createReadStream().pipe(socket)`; raw trio has none: "
        f"{s.chunk // 1024} KiB reads, each `send_all`), to a common raw trio receiver.",
        "sendfile-write": f"The same file in {s.chunk // 1024} KiB reads, each written with the "
        "implementation's backpressure, to the common raw trio receiver.",
        "proxy": f"{s.proxy_bytes / 2**20:,.0f} MiB from a common raw trio client through the "
        f"implementation's proxy to a common raw trio sink, in {s.chunk // 1024} KiB writes.",
        "readline": f"{s.lines:,} lines of 16 to 32 bytes from a common raw trio sender, read "
        "with the implementation's line reader. **Target: trio_netstream against asyncio "
        "Streams' `readline()`** (the ratio column is still to raw trio).",
        "http-wrk": f"`wrk -t{WRK_THREADS} -c{HTTP_CONNECTIONS} -d{s.http_seconds}s` against the "
        "implementation's minimal HTTP/1.1 server (keep-alive, a 13-byte reply).",
        "http-ab": f"`ab -k -c {HTTP_CONNECTIONS} -n {s.http_requests}` against the "
        "implementation's minimal HTTP/1.1 server (HTTP/1.0 keep-alive, a 13-byte reply).",
    }[row]


def chart(suite: Suite, path: Path) -> bool:
    """The bar chart of ratios to raw trio; ``False`` (and a note) without matplotlib."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        suite.notes.append("Chart skipped: matplotlib is not installed (pip install matplotlib).")
        progress("note: " + suite.notes[-1])
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a plotting library's deprecations are not ours
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
        peers = [peer for peer in suite.peers if peer != BASELINE]
        speed_rows = [r for r in ROWS if r in suite.results and ROWS[r].main.higher_is_better]
        has_idle = "idle" in suite.results
        fig, axes = plt.subplots(
            1,
            2 if has_idle else 1,
            figsize=(12 if has_idle else 9, 4.8),
            gridspec_kw={"width_ratios": [3, 1]} if has_idle else None,
            squeeze=False,
        )
        colours = plt.get_cmap("tab10").colors
        ax = axes[0][0]
        width = 0.8 / max(1, len(speed_rows))
        for i, row in enumerate(speed_rows):
            values = [_ratio(suite, row, peer, ROWS[row].main.key) or 0.0 for peer in peers]
            xs = [p + (i - (len(speed_rows) - 1) / 2) * width for p in range(len(peers))]
            label = ROWS[row].short
            bars = ax.bar(xs, values, width, label=label, color=colours[i % 10])
            texts = [
                NOT_APPLICABLE if _unsupported(suite, row, peer) else f"{value:.2f}"
                for peer, value in zip(peers, values, strict=True)
            ]
            ax.bar_label(bars, labels=texts, fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(peers)))
        ax.set_xticklabels([peer_name(p) for p in peers])
        ax.set_ylabel("ratio to raw trio (higher is better)")
        ax.set_title("Throughput: ratio to raw trio (dashed line = raw trio)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.1), ncol=3, frameon=False)
        if has_idle:
            ax2 = axes[0][1]
            values = [_ratio(suite, "idle", peer, "kib_per_conn") or 0.0 for peer in peers]
            bars = ax2.bar(range(len(peers)), values, 0.6, color=colours[len(speed_rows) % 10])
            ax2.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
            ax2.axhline(1.0, color="black", linestyle="--", linewidth=1)
            ax2.set_xticks(range(len(peers)))
            ax2.set_xticklabels([peer_name(p) for p in peers], rotation=30, ha="right")
            ax2.set_ylabel("ratio to raw trio (lower is better)")
            ax2.set_title("Idle memory per connection")
        title = "trio_netstream and peers vs raw trio.SocketStream"
        if suite.quick:
            title += " (smoke run: not a measurement)"
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return True
