"""The orchestrator: start each run's server and client processes, read their
results, and interleave the runs (A B C ... A B C ...).

It never measures anything itself except the server's memory (``VmRSS``
from ``/proc/<pid>/status``). The Python peers run ``python_peer.py`` next
to this file, Node.js runs ``node_peer.js``; both speak the line protocol
described in ``python_peer.py``.

Which trio_netstream a role imports: every Python role starts with this
checkout's root first on ``PYTHONPATH``, except the ``trio_netstream@base``
peer's, which start with the ``--baseline`` directory there instead. The
roles run as scripts, so ``sys.path[0]`` is this directory (which has no
``trio_netstream``), never the current directory; the editable install's
path entry comes after ``PYTHONPATH``. Each trio_netstream role reports the
file it imported (``LIBRARY``), and a run whose file is not under the
expected directory fails.

A client that cannot do what a row measures (the resumption row with a
``--baseline`` checkout older than the ``session`` option) says
``UNSUPPORTED <reason>``: the row shows n/a for that peer, and its other
runs of that row are skipped; that is not a failure.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench_spec import (
    BASE_PEER,
    BENCHMARKS,
    COMMON_PEER,
    HANDSHAKE_TLS,
    HOST,
    HTTP_CONNECTIONS,
    HTTP_TOOLS,
    PEER,
    TLS_BENCHMARKS,
    BenchError,
    Sizes,
    Unsupported,
    layout,
    lines_bytes,
    peer_name,
)

HERE = Path(__file__).resolve().parent
#: The checkout this harness belongs to: the ``trio_netstream`` peer measures its package.
ROOT = HERE.parent
PYTHON_PEER = HERE / "python_peer.py"

#: Starts a program (Node.js) the way a Python role starts itself: the file
#: limit raised to the hard limit, pinned to the CPUs given as JSON (if any).
_EXEC_PINNED = """\
import json, os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
cpus = json.loads(sys.argv[1])
if cpus:
    os.sched_setaffinity(0, cpus)
os.execvp(sys.argv[2], sys.argv[2:])
"""


class Lines:
    """Lines of a child's stdout, read with a deadline. ``LIBRARY`` lines
    are kept in :attr:`library`, other unexpected lines shown as progress."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str, errors: IO[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.name = name
        self.buffer = b""
        self.errors = errors
        self.library: dict[str, str] | None = None

    def expect(self, prefix: str, timeout: float) -> str:
        return self.expect_any((prefix,), timeout)[1]

    def expect_any(self, prefixes: tuple[str, ...], timeout: float) -> tuple[str, str]:
        """The first line starting with one of *prefixes*: that prefix, and the rest."""
        prefix = " or ".join(prefixes)
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                for each in prefixes:
                    if line.startswith(each + " ") or line == each:
                        return each, line[len(each) :].strip()
                if line.startswith("LIBRARY "):
                    self.library = json.loads(line[len("LIBRARY ") :])
                elif line:
                    progress(f"    ({self.name}) {line}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {prefix} within {timeout:.0f} s{self.tail()}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise BenchError(f"{self.name} exited before {prefix}{self.tail()}")
                self.buffer += chunk

    def tail(self) -> str:
        self.errors.flush()
        self.errors.seek(0)
        text = self.errors.read().decode(errors="replace").strip()
        return ("\n" + "\n".join(text.splitlines()[-15:])) if text else ""


@dataclass
class Suite:
    """What one invocation measures, and where it writes."""

    sizes: Sizes
    benchmarks: list[str]
    peers: list[str]
    output_dir: Path
    quick: bool
    json_path: Path | None
    node_peer: Path
    timeout: float
    baseline: Path | None = None
    notes: list[str] = field(default_factory=list[str])
    results: dict[str, dict[str, list[dict[str, float]]]] = field(
        default_factory=dict[str, dict[str, list[dict[str, float]]]]
    )
    failures: dict[str, dict[str, str]] = field(default_factory=dict[str, dict[str, str]])
    #: Per row, the peers whose client said ``UNSUPPORTED``, and why (n/a, not failures).
    unsupported: dict[str, dict[str, str]] = field(default_factory=dict[str, dict[str, str]])
    cpus: list[int] = field(default_factory=list[int])
    load: list[float] = field(default_factory=list[float])
    #: The trio_netstream each trio_netstream peer imported: ``file`` and ``version``.
    libraries: dict[str, dict[str, str]] = field(default_factory=dict[str, dict[str, str]])

    def library_root(self, peer: str) -> Path:
        """The checkout whose trio_netstream *peer*'s roles import."""
        if peer == BASE_PEER:
            assert self.baseline is not None
            return self.baseline
        return ROOT


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _role_argv(suite: Suite, peer: str, role: str, cfg: dict[str, Any]) -> list[str]:
    blob = json.dumps(cfg)
    if peer == "node":
        pinned = [sys.executable, "-c", _EXEC_PINNED, json.dumps(cfg["cpus"])]
        return [*pinned, "node", str(suite.node_peer), role, blob]
    runs = "trio_netstream" if peer == BASE_PEER else peer  # the same roles, another library
    return [sys.executable, str(PYTHON_PEER), role, runs, blob]


def _role_env(suite: Suite, peer: str) -> dict[str, str]:
    env = dict(os.environ)
    first = str(suite.library_root(peer))
    env["PYTHONPATH"] = os.pathsep.join(
        [first, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    # The roles are not part of the library's coverage, even under `pytest --cov`.
    env.pop("COVERAGE_PROCESS_START", None)
    env.pop("COVERAGE_PROCESS_CONFIG", None)
    return env


@contextlib.contextmanager
def _spawn(
    suite: Suite, peer: str, role: str, cfg: dict[str, Any]
) -> Generator[tuple[subprocess.Popen[bytes], Lines], None, None]:
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            _role_argv(suite, peer, role, cfg),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=_role_env(suite, peer),
        )
        try:
            yield proc, Lines(proc, f"{peer_name(peer)} {role}", errors)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


def _check_library(suite: Suite, peer: str, *outputs: Lines) -> None:
    """Each trio_netstream role imported the package of its checkout."""
    if peer not in ("trio_netstream", BASE_PEER):
        return
    root = suite.library_root(peer).resolve()
    for out in outputs:
        if out.library is None:
            raise BenchError(f"{out.name} did not say which trio_netstream it imported")
        imported = Path(out.library["file"]).resolve()
        if not imported.is_relative_to(root):
            raise BenchError(f"{out.name} imported {imported}, not trio_netstream from {root}")
        if peer not in suite.libraries:
            suite.libraries[peer] = out.library
            progress(f"note: {peer_name(peer)} imports {imported}")


def _vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def _settled_rss_kib(pid: int, quick: bool) -> int:
    """VmRSS once it stops moving (two readings 0.2 s apart within 0.5 %);
    a single reading in a smoke run."""
    previous = _vm_rss_kib(pid)
    if quick:
        return previous
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = _vm_rss_kib(pid)
        if abs(current - previous) <= previous * 0.005:
            return current
        previous = current
    return previous


def _pinning(suite: Suite, row: str) -> tuple[list[int] | None, list[int] | None]:
    if row == "pingpong-cross":
        return [suite.cpus[0]], [suite.cpus[1]]
    if row == "pingpong-same":
        return [suite.cpus[0]], [suite.cpus[0]]
    if row in HTTP_TOOLS and len(suite.cpus) > 1:
        # the server on a core of its own; the client, and the wrk or ab it
        # starts (they inherit its CPUs), on another
        return [suite.cpus[0]], [suite.cpus[1]]
    return None, None


def _configs(suite: Suite, row: str, shared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each role's configuration; *shared* holds the certificates (``tls``)
    and the sendfile rows' file (``file``)."""
    bench = row.split("-")[0]
    if bench in _NEWER:
        return _NEWER[bench](suite, row, shared)
    s = suite.sizes
    tls = shared.get("tls")
    if bench == "tls":
        row_tls = tls
    elif bench == "handshake":
        assert tls is not None
        row_tls = {**tls, "version": HANDSHAKE_TLS}  # forced on both sides
    else:
        row_tls = None
    server: dict[str, Any] = {
        "mode": "sink" if bench in ("bulk", "tls") else "echo",
        "bytes": s.tls_bytes if bench == "tls" else s.bulk_bytes,
        "connections": s.idle if bench == "idle" else 0,
        # The handshake rows' one-byte echo must not wait on Nagle (raw trio
        # and asyncio have TCP_NODELAY by default, the others set it).
        "no_delay": bench in ("pingpong", "handshake"),
        "tls": row_tls,
    }
    client: dict[str, Any] = {
        "kind": "bulk" if bench == "tls" else bench,
        # Every bulk sender has TCP_NODELAY, raw trio's and asyncio's default:
        # the rows compare the libraries, not Nagle against no Nagle.
        "no_delay": bench in ("bulk", "tls"),
        "bytes": server["bytes"],
        "chunk": s.chunk,
        "rounds": s.rounds,
        "size": s.message,
        "count": s.handshakes if bench == "handshake" else s.churn,
        # churn: end() and wait for the peer's end, or Node-style destroy() on the echo
        "style": "destroy" if row.startswith("churn-node") else "graceful",
        "resume": row == "handshake-resume",
        "connections": s.idle,
        "tls": server["tls"],
    }
    return {"server": server, "client": client}


def _sendfile_configs(suite: Suite, row: str, shared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The measured server sends the file (``send_file()`` and the like in
    ``sendfile``, reads and writes in ``sendfile-write``) to a common receiver."""
    size = suite.sizes.sendfile_bytes
    common = {"connections": 0, "no_delay": True, "tls": None, "chunk": suite.sizes.chunk}
    by = "api" if row == "sendfile" else "writes"
    server = {**common, "mode": "sendfile", "by": by, "file": shared["file"], "bytes": size}
    return {"server": server, "client": {**common, "kind": "receive", "bytes": size}}


def _proxy_configs(suite: Suite, row: str, shared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The common bulk sender, through the measured proxy, to the common sink
    (whose one-byte answer comes back through the proxy)."""
    size = suite.sizes.proxy_bytes
    common = {"connections": 0, "no_delay": True, "tls": None, "bytes": size}
    return {
        "server": {**common, "mode": "sink"},
        "proxy": {**common},
        "client": {**common, "kind": "bulk", "chunk": suite.sizes.chunk},
    }


def _readline_configs(suite: Suite, row: str, shared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The common sender of the lines, and the measured reader."""
    lines = suite.sizes.lines
    common = {"connections": 0, "no_delay": False, "tls": None, "lines": lines}
    common["bytes"] = lines_bytes(lines)
    return {"server": {**common, "mode": "lines"}, "client": {**common, "kind": "readline"}}


def _http_configs(suite: Suite, row: str, shared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The measured HTTP server, and the common client, which runs wrk or ab
    (``HTTP_TOOLS``) against it."""
    common = {"connections": HTTP_CONNECTIONS, "no_delay": True, "tls": None, "bytes": 0}
    client = {**common, "kind": HTTP_TOOLS[row][0], "seconds": suite.sizes.http_seconds}
    client["requests"] = suite.sizes.http_requests
    return {"server": {**common, "mode": "http", "connections": 0}, "client": client}


_NEWER = {
    "sendfile": _sendfile_configs,
    "proxy": _proxy_configs,
    "readline": _readline_configs,
    "http": _http_configs,
}


def _ready(out: Lines, peer: str, measured: bool, timeout: float) -> int:
    """The port a server or proxy listens on; :class:`Unsupported` if it is
    the measured implementation's and it cannot do what the row measures."""
    said, text = out.expect_any(("READY", "UNSUPPORTED") if measured else ("READY",), timeout)
    if said == "UNSUPPORTED":
        raise Unsupported(text or "unsupported")
    return int(text)


def _tell(proc: subprocess.Popen[bytes], port: int) -> None:
    assert proc.stdin is not None
    proc.stdin.write(f"{port}\n".encode())
    proc.stdin.flush()


def _measure(suite: Suite, row: str, peer: str, shared: dict[str, Any]) -> dict[str, float]:
    cfgs = _configs(suite, row, shared)
    for cfg in cfgs.values():
        cfg["cpus"] = None
    cfgs["server"]["cpus"], cfgs["client"]["cpus"] = _pinning(suite, row)
    roles = layout(row)
    # Every process starts at once; each waits for its port on its stdin.
    with contextlib.ExitStack() as stack:
        procs: dict[str, tuple[subprocess.Popen[bytes], Lines]] = {}
        for role, whose in roles:
            runs = peer if whose == PEER else COMMON_PEER
            procs[role] = stack.enter_context(_spawn(suite, runs, role, cfgs[role]))
        mine = [procs[role][1] for role, whose in roles if whose == PEER]
        measured = {role for role, whose in roles if whose == PEER}
        server_out = procs["server"][1]
        try:
            port = _ready(server_out, peer, "server" in measured, 60)
            if "proxy" in procs:
                _tell(procs["proxy"][0], port)
                port = _ready(procs["proxy"][1], peer, True, 60)
        except Unsupported:
            _check_library(suite, peer, *mine)
            raise
        client = procs["client"][0]
        values = _client_values(suite, row, peer, procs, port, mine)
        for role, (proc, out) in procs.items():
            if role != "client" and proc.poll() is not None:
                raise BenchError(f"{out.name} exited during the run{out.tail()}")
        _check_library(suite, peer, *mine)
        assert client.stdin is not None
        client.stdin.close()  # the client's cue to exit
        client.wait(30)
    return {key: float(value) for key, value in values.items()}


def _client_values(
    suite: Suite,
    row: str,
    peer: str,
    procs: dict[str, tuple[subprocess.Popen[bytes], Lines]],
    port: int,
    mine: list[Lines],
) -> dict[str, Any]:
    """Give the client the port; what it measured (the idle row: the
    server's memory before and after the client's connections)."""
    server, server_out = procs["server"]
    client, client_out = procs["client"]
    before = 0  # only read by the idle row, which measures it here
    if row == "idle":
        before = _settled_rss_kib(server.pid, suite.quick)
    _tell(client, port)
    if row == "idle":
        connected = int(client_out.expect("CONNECTED", suite.timeout))
        server_out.expect("ACCEPTED", suite.timeout)
        after = _settled_rss_kib(server.pid, suite.quick)
        return {
            "kib_per_conn": (after - before) / connected,
            "rss_before_kib": before,
            "rss_after_kib": after,
        }
    said, text = client_out.expect_any(("RESULT", "UNSUPPORTED"), suite.timeout)
    if said == "UNSUPPORTED":
        _check_library(suite, peer, *mine)
        raise Unsupported(text or "unsupported")
    values: dict[str, Any] = json.loads(text)
    return values


def _describe(row: str, values: dict[str, float]) -> str:
    if "mbps" in values:
        return f"{values['mbps']:,.0f} MB/s"
    if row == "readline":
        return f"{values['lps']:,.0f} lines/s"
    if row.startswith("pingpong"):
        return (
            f"{values['rtps']:,.0f} rt/s, p50 {values['p50_us']:,.1f} µs, "
            f"p99 {values['p99_us']:,.1f} µs"
        )
    if row.startswith("churn"):
        return f"{values['cps']:,.0f} conn/s"
    if row.startswith("handshake"):
        return f"{values['hps']:,.0f} handshakes/s ({values['resumed']:,.0f} resumed)"
    if row in HTTP_TOOLS:
        return f"{values['rps']:,.0f} requests/s"
    return f"{values['kib_per_conn']:,.2f} KiB/conn"


@contextlib.contextmanager
def _certificates(suite: Suite) -> Generator[dict[str, str] | None, None, None]:
    """The certificates of the TLS rows (one set for every implementation),
    made with trustme; without trustme, those rows are skipped."""
    needing = [bench for bench in TLS_BENCHMARKS if bench in suite.benchmarks]
    if not needing:
        yield None
        return
    try:
        trustme: Any = importlib.import_module("trustme")
    except ImportError:
        suite.notes.append(
            f"Skipped {', '.join(needing)}: trustme is not installed (pip install trustme)."
        )
        progress("note: " + suite.notes[-1])
        for bench in needing:
            suite.benchmarks.remove(bench)
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="trio-netstream-bench-") as folder:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", HOST)
        paths = {name: str(Path(folder) / f"{name}.pem") for name in ("ca", "cert", "key")}
        ca.cert_pem.write_to_path(paths["ca"])
        cert.private_key_pem.write_to_path(paths["key"])
        with open(paths["cert"], "wb") as chain:
            for pem in cert.cert_chain_pems:
                chain.write(pem.bytes())
        yield paths


#: The sendfile rows' file is written in blocks of this many random bytes.
_FILE_BLOCK = 4 << 20


@contextlib.contextmanager
def _file(suite: Suite) -> Generator[str | None, None, None]:
    """The sendfile rows' file (``sendfile_bytes`` of real data, random
    blocks: not sparse, and synced, so in the page cache and clean), made
    once per invocation and deleted after. In ``/dev/shm`` (memory) when it
    has room: a VM that reclaims cold page cache (DAMON) had some runs read
    a file on disk from the disk (348 MB/s against 1,300-1,800)."""
    if "sendfile" not in suite.benchmarks:
        yield None
        return
    memory = Path("/dev/shm")
    room = memory.is_dir() and shutil.disk_usage(memory).free > 2 * suite.sizes.sendfile_bytes
    where = str(memory) if room else None
    with tempfile.TemporaryDirectory(prefix="trio-netstream-bench-", dir=where) as folder:
        path = Path(folder) / "sendfile.bin"
        left = suite.sizes.sendfile_bytes
        with open(path, "wb") as file:
            while left:
                block = os.urandom(min(left, _FILE_BLOCK))
                file.write(block)
                left -= len(block)
            # Written back before the first run: a sender reading pages under
            # writeback ran at a quarter of its speed (the first run, 302 and
            # 332 MB/s against 1,100-1,800 for the others).
            file.flush()
            os.fsync(file.fileno())
        yield str(path)


def _with_tools(suite: Suite, rows: list[str]) -> list[str]:
    """*rows* without those whose load generator (``HTTP_TOOLS``) is not on
    ``PATH``: each of those is skipped with a note."""
    kept: list[str] = []
    for row in rows:
        program, package = HTTP_TOOLS.get(row, ("", ""))
        if program and shutil.which(program) is None:
            suite.notes.append(
                f"Skipped {row}: `{program}` was not found on PATH (Debian: {package})."
            )
            progress("note: " + suite.notes[-1])
        else:
            kept.append(row)
    return kept


def run_suite(suite: Suite) -> None:
    rows = [row for bench in suite.benchmarks for row in BENCHMARKS[bench]]
    if "pingpong" in suite.benchmarks and len(suite.cpus) < 2:
        suite.notes.append(
            f"Cross-core ping-pong skipped: this process may use only one CPU ({suite.cpus})."
        )
        progress("note: " + suite.notes[-1])
        rows.remove("pingpong-cross")
    rows = _with_tools(suite, rows)
    with _certificates(suite) as tls, _file(suite) as file:
        shared = {"tls": tls, "file": file}
        rows = [row for row in rows if row.split("-")[0] in suite.benchmarks]
        for row in rows:
            total = suite.sizes.runs * len(suite.peers)
            done = 0
            results = suite.results.setdefault(row, {})
            for run in range(1, suite.sizes.runs + 1):
                for peer in suite.peers:  # interleaved: A B C ... A B C ...
                    done += 1
                    label = f"[{row} {done}/{total}] {peer_name(peer)} run {run}"
                    if peer in suite.failures.get(row, {}) or peer in suite.unsupported.get(
                        row, {}
                    ):
                        continue
                    try:
                        values = _measure(suite, row, peer, shared)
                    except Unsupported as exc:
                        suite.unsupported.setdefault(row, {})[peer] = str(exc)
                        progress(f"{label}: n/a: {exc}")
                        continue
                    except (BenchError, OSError, ValueError, subprocess.SubprocessError) as exc:
                        suite.failures.setdefault(row, {})[peer] = str(exc).splitlines()[0]
                        progress(f"{label}: FAILED: {exc}")
                        continue
                    results.setdefault(peer, []).append(values)
                    progress(f"{label}: {_describe(row, values)}")
