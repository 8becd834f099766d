"""Where a connection's (or a round trip's) CPU time goes: the library's
code, Trio's, the program's, the kernel's.

``python benchmarks/cost_split.py [--kinds churn,churn-node,pingpong]
[--count N] [--runs N] [--baseline DIR] [--output FILE]`` runs the bench's own roles
(``python_peer.py``): each side, trio_netstream's and raw trio's, against
the other side played by raw trio, so that one process is the side
measured and the other is the same in every pairing. While the measured
process works, ``py-spy`` (``pip install py-spy``; ``--native``, 400 Hz;
each sample stops the process for a moment) samples it. Its CPU time
comes from ``/proc/PID/stat``: user and system time from the moment the
client is told the port to the moment it reports (the interpreter's start
and the imports are not counted). The kernel's share is the system time.
The user time is split in proportion to py-spy's samples, each counted
for the innermost frame of:

* ``trio_netstream``: the library (``trio_netstream/``);
* ``Trio``: ``trio/``, ``outcome/``, ``sniffio/`` (its scheduler, its cancel
  scopes, its ``SocketStream``);
* ``program``: the peer program (``benchmarks/``) and anything else.

A sample whose innermost frame is a system call's C wrapper
(``socketmodule.c``, ``selectmodule.c``, libc) is the kernel's; it is left
out of the split of the user time (system time is measured, not sampled).

Every figure is a median over ``--runs`` runs, per connection (churn) or
per round trip (pingpong), in microseconds. The sampling itself costs the
process some time, the same for every side; compare the sides, not the
absolute figures with ``bench.py``'s. Not part of the harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OWNERS = ("trio_netstream", "Trio", "program")
_TRIO_DIRS = ("/trio/", "/outcome/", "/sniffio/")
_SYSCALL_FILES = ("socketmodule.c", "selectmodule.c", "libc.so")
_TICKS = os.sysconf("SC_CLK_TCK")
#: Round trips measured for each connection *count* asks for (a round trip
#: costs a tenth of a connection or less).
PINGPONG_PER_CONNECTION = 10


def owner_of(frame: str) -> str | None:
    """The owner of one py-spy frame (``name (path:line)``), or ``None``
    for a frame that belongs to whoever called it (the standard library)."""
    where = frame.rsplit("(", 1)[-1]
    if "trio_netstream/" in where:
        return "trio_netstream"
    if any(part in "/" + where for part in _TRIO_DIRS):
        return "Trio"
    if "benchmarks/" in where or where.startswith(("peer_", "python_peer", "bench")):
        return "program"
    return None


def split_samples(raw: str) -> Counter[str]:
    """py-spy's raw (collapsed) stacks, counted by owner, and ``kernel``."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        if any("importlib" in frame for frame in frames):
            continue  # a late import, not the work measured
        if any(name in frames[-1] for name in _SYSCALL_FILES):
            counts["kernel"] += int(number)
            continue
        owner = next((o for f in reversed(frames) if (o := owner_of(f))), "program")
        counts[owner] += int(number)
    return counts


def cpu_ticks(pid: int) -> tuple[int, int]:
    """A process's user and system time so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _start(peer: str, role: str, cfg: dict[str, Any], library: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(library), str(HERE)])}
    argv = [sys.executable, str(HERE / "python_peer.py"), role, peer, json.dumps(cfg)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)


def _line(out: IO[bytes], prefix: str) -> str:
    for raw in out:
        line = raw.decode().strip()
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"the peer exited before printing {prefix}")


def _configs(kind: str, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    server = {"mode": "echo", "bytes": 0, "connections": 0, "no_delay": True, "tls": None}
    client: dict[str, Any] = {"kind": "churn", "count": count, "tls": None, "no_delay": True}
    if kind == "pingpong":
        client.update(kind="pingpong", rounds=count, size=64)  # count: round trips
    else:
        client["style"] = "destroy" if kind == "churn-node" else "graceful"
    return server, client


def measure(
    spy: str, kind: str, count: int, measured: tuple[str, str], library: Path
) -> dict[str, float]:
    """One run: *measured* (side, peer) against raw trio; microseconds per unit."""
    side, peer = measured
    server_cfg, client_cfg = _configs(kind, count)
    server = _start(peer if side == "server" else "trio", "server", server_cfg, library)
    client = _start(peer if side == "client" else "trio", "client", client_cfg, library)
    target = server if side == "server" else client
    assert server.stdout is not None and client.stdout is not None and client.stdin is not None
    assert target.stdout is not None
    try:
        if peer == "trio_netstream":  # the library measured is the one asked for
            imported = json.loads(_line(target.stdout, "LIBRARY"))["file"]
            if not Path(imported).is_relative_to(library):
                raise RuntimeError(f"imported {imported}, not the library in {library}")
        port = _line(server.stdout, "READY").split()[0]
        with tempfile.NamedTemporaryFile(suffix=".raw") as out:
            record = ["record", "--native", "-r", "400", "-f", "raw", "-o", out.name]
            sampler = subprocess.Popen(
                [spy, *record, "--pid", str(target.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            before = cpu_ticks(target.pid)
            client.stdin.write(f"{port}\n".encode())
            client.stdin.flush()
            _line(client.stdout, "RESULT")
            after = cpu_ticks(target.pid)
            client.stdin.close()
            client.wait()
            server.terminate()
            server.wait()
            sampler.wait()
            samples = split_samples(Path(out.name).read_text())
    finally:
        for proc in (client, server):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    per_unit = 1e6 / _TICKS / count
    user, system = (after[0] - before[0]) * per_unit, (after[1] - before[1]) * per_unit
    sampled = sum(samples[owner] for owner in OWNERS) or 1
    shares = {owner: user * samples[owner] / sampled for owner in OWNERS}
    return {**shares, "kernel": system, "total": user + system}


def _table(kind: str, results: dict[str, list[dict[str, float]]]) -> str:
    unit = "round trip" if kind == "pingpong" else "connection"
    head = ["side", *OWNERS, "kernel", "total"]
    lines = [
        f"µs of CPU per {unit} ({kind}), medians; the other side is raw trio",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, runs in results.items():
        cells = [f"{statistics.median(r[col] for r in runs):.0f}" for col in head[1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _runs(results: dict[str, list[dict[str, float]]]) -> str:
    lines = ["| side | total µs, each run |", "|---|---|"]
    for name, runs in results.items():
        lines.append(f"| {name} | " + ", ".join(f"{r['total']:.0f}" for r in runs) + " |")
    return "\n".join(lines)


def _sides(baseline: Path | None) -> list[tuple[str, str, str, Path]]:
    sides: list[tuple[str, str, str, Path]] = []
    for side in ("client", "server"):
        sides.append((f"{side}: trio", side, "trio", ROOT))
        sides.append((f"{side}: trio_netstream", side, "trio_netstream", ROOT))
        if baseline is not None:
            sides.append((f"{side}: trio_netstream@base", side, "trio_netstream", baseline))
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="churn-node", help="churn, churn-node, pingpong")
    parser.add_argument("--count", type=int, default=5000, help="connections (x10 round trips)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="also measure this checkout's library")
    parser.add_argument("--output", type=Path, help="also write the tables here (Markdown)")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    sides = _sides(args.baseline.resolve() if args.baseline else None)
    report: list[str] = []
    for kind in args.kinds.split(","):
        results: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in sides}
        for _ in range(args.runs):  # interleaved
            count = args.count * (PINGPONG_PER_CONNECTION if kind == "pingpong" else 1)
            for name, side, peer, library in sides:
                results[name].append(measure(spy, kind, count, (side, peer), library))
                print(kind, name, {k: round(v) for k, v in results[name][-1].items()}, flush=True)
        report += [f"## {kind}", "", _table(kind, results), "", _runs(results), ""]
    print("\n".join(report))
    if args.output is not None:
        args.output.write_text(_page(args, report))


def _page(args: argparse.Namespace, report: list[str]) -> str:
    """The Markdown page: what was measured and how, then the tables."""
    base = f" `trio_netstream@base` is the library of `{args.baseline}`." if args.baseline else ""
    return "\n".join(
        [
            "# Where a connection's time goes",
            "",
            "CPU time per connection (churn rows) or per round trip (ping-pong), in µs,",
            "split into trio_netstream's own code, Trio's (its scheduler, cancel scopes,",
            "nurseries, I/O waits; for raw trio also its `SocketStream` and",
            "`open_tcp_stream`), the benchmark program's, and the kernel's (system",
            "time). Each side is measured against raw trio playing the other side, so",
            "that only the side named varies. Made by `python benchmarks/cost_split.py",
            f"--kinds {args.kinds} --count {args.count} --runs {args.runs}` "
            f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the method is in",
            "the script's docstring (user time split by py-spy's samples, system time",
            "from `/proc`). py-spy's sampling slows the process a little, the same for",
            f"every side: compare the rows, not the absolute figures with bench.py's.{base}",
            "",
            *report,
        ]
    )


if __name__ == "__main__":
    main()
