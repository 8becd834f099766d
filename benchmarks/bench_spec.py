"""What the benchmark suite measures: the peers, the benchmarks and their
result rows, the sizes, and the targets trio_netstream is held to.

Plain data, imported by every other module of the harness (and by
``tests/test_bench_smoke.py``); it imports nothing of the library.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST = "127.0.0.1"
TIMES, GE, LE, NONE = "\u00d7", "\u2265", "\u2264", "\u2013"  # times, >=, <=, en dash
BACKLOG = 4096
#: The name every TLS client checks the server's certificate against (and
#: sends as SNI); trustme issues the certificate for it and for ``HOST``.
TLS_NAME = "localhost"
#: The one TLS version of the handshake rows, on both sides (Node.js's spelling;
#: Python's ``ssl.TLSVersion`` member is the same with ``_`` for ``.``).
HANDSHAKE_TLS = "TLSv1.3"
#: Connections a client opens at once in the idle benchmark.
IDLE_CONNECT_BATCH = 100
#: The http rows' load: connections kept alive at once, and wrk's threads
#: (one: wrk in C outruns every server here on one core).
HTTP_CONNECTIONS = 100
WRK_THREADS = 1
#: The http rows' load generators: the program each runs, and its Debian package.
HTTP_TOOLS: dict[str, tuple[str, str]] = {
    "http-wrk": ("wrk", "wrk"),
    "http-ab": ("ab", "apache2-utils"),
}

#: Peer ids (as given to ``--peers``) and their display names, in run order.
PEERS: dict[str, str] = {
    "trio_netstream": "trio_netstream",
    "trio": "raw trio",
    "asyncio-protocol": "asyncio Protocol",
    "asyncio-streams": "asyncio Streams",
    "node": "Node.js net",
}
BASELINE = "trio"
#: The extra peer of ``--baseline DIR``: the trio_netstream roles, with
#: trio_netstream imported from DIR (another checkout) instead of this one.
BASE_PEER = "trio_netstream@base"

#: Benchmarks as given to ``--only``, and the result rows each one makes.
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "bulk": ("bulk",),
    "pingpong": ("pingpong-cross", "pingpong-same"),
    "churn": ("churn", "churn-node", "churn-node-client", "churn-node-server"),
    "idle": ("idle",),
    "tls": ("tls",),
    "handshake": ("handshake", "handshake-resume"),
    "sendfile": ("sendfile", "sendfile-write"),
    "proxy": ("proxy",),
    "readline": ("readline",),
    "http": ("http-wrk", "http-ab"),
}
#: Benchmarks that need the TLS certificates (made with trustme).
TLS_BENCHMARKS = ("tls", "handshake")

#: Whose process plays each role of a run, in start order: ``PEER`` (the
#: implementation measured) or ``COMMON`` (raw trio's role, the same for every
#: implementation, so that only the measured role varies). The rows of a
#: benchmark not listed run a server and a client of the measured implementation.
PEER, COMMON = "peer", "common"
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    # the measured server sends the file; a common receiver counts it
    "sendfile": (("server", PEER), ("client", COMMON)),
    # a common sender, through the measured proxy, to a common sink
    "proxy": (("server", COMMON), ("proxy", PEER), ("client", COMMON)),
    # a common sender of the lines; the measured client reads them
    "readline": (("server", COMMON), ("client", PEER)),
    # the measured HTTP server; the common client runs wrk or ab against it
    "http": (("server", PEER), ("client", COMMON)),
    # the measured Node-style churn client against the common echo server
    "churn-node-client": (("server", COMMON), ("client", PEER)),
    # the common Node-style churn client against the measured echo server
    "churn-node-server": (("server", PEER), ("client", COMMON)),
}
DEFAULT_LAYOUT = (("server", PEER), ("client", PEER))
#: The peer whose roles are the common ones.
COMMON_PEER = "trio"


def layout(row: str) -> tuple[tuple[str, str], ...]:
    """The roles of *row*'s runs and whose each is (see :data:`LAYOUTS`): the
    row's own entry, else its benchmark's."""
    if row in LAYOUTS:
        return LAYOUTS[row]
    return LAYOUTS.get(row.split("-")[0], DEFAULT_LAYOUT)


#: The readline benchmark's lines: line *i* is ``line_length(i)`` bytes, its
#: ``\n`` included (16 to 32 bytes, 24 on average), cut from this text.
LINE_TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 2
LINE_CYCLE = 17


def line_length(index: int) -> int:
    return 16 + index % LINE_CYCLE


def lines_bytes(count: int) -> int:
    """The size of the first *count* lines."""
    cycles, rest = divmod(count, LINE_CYCLE)
    return cycles * sum(map(line_length, range(LINE_CYCLE))) + sum(map(line_length, range(rest)))


def peer_name(peer: str) -> str:
    """A peer's display name (``trio_netstream@base`` is its own)."""
    return PEERS.get(peer, peer)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Row:
    """One result row: a benchmark (or a variant of one) and its metrics."""

    key: str
    title: str
    short: str
    metrics: tuple[Metric, ...]

    @property
    def main(self) -> Metric:
        return self.metrics[0]


_MBPS = Metric("mbps", "throughput", "MB/s", True)
_PINGPONG = (
    Metric("rtps", "round trips/s", "rt/s", True),
    Metric("p50_us", "p50", "µs", False),
    Metric("p99_us", "p99", "µs", False),
)
_RPS = Metric("rps", "requests/s", "req/s", True)
_CPS = Metric("cps", "connections/s", "conn/s", True)
ROWS: dict[str, Row] = {
    "bulk": Row("bulk", "Bulk transfer (one way)", "bulk", (_MBPS,)),
    "pingpong-cross": Row(
        "pingpong-cross",
        "Ping-pong, client and server on different cores",
        "ping-pong cross-core",
        _PINGPONG,
    ),
    "pingpong-same": Row(
        "pingpong-same",
        "Ping-pong, client and server on the same core",
        "ping-pong same-core",
        _PINGPONG,
    ),
    "churn": Row(
        "churn", "Connection churn", "churn", (Metric("cps", "connections/s", "conn/s", True),)
    ),
    "churn-node": Row(
        "churn-node",
        "Connection churn, Node-style client (destroy() on the echo)",
        "churn Node-style",
        (_CPS,),
    ),
    "churn-node-client": Row(
        "churn-node-client",
        "Connection churn, Node-style client alone (against a raw trio server)",
        "churn Node-style client",
        (_CPS,),
    ),
    "churn-node-server": Row(
        "churn-node-server",
        "Connection churn, server alone (against a raw trio Node-style client)",
        "churn Node-style server",
        (_CPS,),
    ),
    "idle": Row(
        "idle",
        "Idle memory (server RSS per connection)",
        "idle memory",
        (Metric("kib_per_conn", "RSS per connection", "KiB", False),),
    ),
    "tls": Row("tls", "TLS bulk transfer (one way)", "TLS bulk", (_MBPS,)),
    "handshake": Row(
        "handshake",
        "TLS 1.3 handshakes (full)",
        "TLS handshake",
        (Metric("hps", "handshakes/s", "hs/s", True),),
    ),
    "handshake-resume": Row(
        "handshake-resume",
        "TLS 1.3 handshakes (session resumption)",
        "TLS resumption",
        (Metric("hps", "handshakes/s", "hs/s", True),),
    ),
    "sendfile": Row("sendfile", "File sending (the file API)", "sendfile", (_MBPS,)),
    "sendfile-write": Row(
        "sendfile-write", "File sending (64 KiB reads and writes)", "file by writes", (_MBPS,)
    ),
    "proxy": Row("proxy", "Bulk through a proxy", "proxy", (_MBPS,)),
    "readline": Row(
        "readline", "Reading lines", "readline", (Metric("lps", "lines/s", "lines/s", True),)
    ),
    "http-wrk": Row("http-wrk", "HTTP/1.1 keep-alive load (wrk)", "HTTP (wrk)", (_RPS,)),
    "http-ab": Row("http-ab", "HTTP/1.1 keep-alive load (ab -k)", "HTTP (ab -k)", (_RPS,)),
}


@dataclass(frozen=True)
class Sizes:
    bulk_bytes: int
    chunk: int
    rounds: int
    message: int
    churn: int
    idle: int
    tls_bytes: int
    handshakes: int
    sendfile_bytes: int
    proxy_bytes: int
    lines: int
    #: The http rows: wrk's duration, and ab's number of requests.
    http_seconds: int
    http_requests: int
    runs: int


FULL = Sizes(
    bulk_bytes=1 << 30,
    chunk=64 * 1024,
    rounds=20_000,
    message=64,
    churn=5_000,
    idle=10_000,
    tls_bytes=256 << 20,
    handshakes=1_000,
    sendfile_bytes=1 << 30,
    proxy_bytes=1 << 30,
    lines=1_000_000,
    http_seconds=10,
    http_requests=200_000,
    runs=5,
)
QUICK = Sizes(
    bulk_bytes=4 << 20,
    chunk=64 * 1024,
    rounds=200,
    message=64,
    churn=50,
    idle=100,
    tls_bytes=4 << 20,
    handshakes=20,
    sendfile_bytes=4 << 20,
    proxy_bytes=4 << 20,
    lines=10_000,
    http_seconds=1,
    http_requests=2_000,
    runs=1,
)


@dataclass(frozen=True)
class Target:
    what: str
    row: str
    metric: str
    versus: str
    ratio: float
    at_least: bool
    per: str = ""

    @property
    def text(self) -> str:
        sign = GE if self.at_least else LE
        return f"{self.what} {sign} {self.ratio}{TIMES} {PEERS[self.versus]}{self.per}"


TARGETS = (
    Target("bulk", "bulk", "mbps", "trio", 1.1, True),
    Target("bulk", "bulk", "mbps", "node", 1.5, True),
    Target("same-core ping-pong", "pingpong-same", "rtps", "trio", 1.6, True),
    Target("cross-core ping-pong", "pingpong-cross", "rtps", "trio", 1.0, True),
    Target("churn", "churn", "cps", "trio", 1.2, True),
    Target("idle memory", "idle", "kib_per_conn", "trio", 1.0, False, " per connection"),
    Target("TLS handshakes", "handshake", "hps", "trio", 1.0, True),
    Target("send_file()", "sendfile", "mbps", "trio", 1.3, True),
    Target("proxy (two pipe()s)", "proxy", "mbps", "trio", 1.0, True),
    Target("readline()", "readline", "lps", "asyncio-streams", 1.0, True, " readline()"),
    Target("HTTP keep-alive (wrk)", "http-wrk", "rps", "trio", 1.0, True),
    Target("HTTP keep-alive (ab -k)", "http-ab", "rps", "trio", 1.0, True),
    Target("Node-style churn", "churn-node", "cps", "trio", 1.2, True),
    Target("Node-style churn, client alone", "churn-node-client", "cps", "trio", 1.1, True),
    Target("Node-style churn, server alone", "churn-node-server", "cps", "trio", 1.1, True),
)


class BenchError(Exception):
    """A run failed: a role exited, timed out or printed something unexpected."""


class Unsupported(Exception):
    """A peer cannot do what a row measures (its client said ``UNSUPPORTED
    <reason>``): the row shows n/a for it, which is not a failure."""
