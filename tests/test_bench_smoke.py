"""The benchmark harness (benchmarks/bench.py) in smoke mode, so it cannot rot.

It runs the harness the way a developer does, ``python benchmarks/bench.py
--quick``, and asserts that the run produced a figure for every benchmark
and every implementation available here, and wrote its report. It never
asserts anything about the figures' size: timings are not tested.
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
BENCH = BENCHMARKS / "bench.py"
NODE_PEER = BENCHMARKS / "node_peer.js"
#: What the harness measures (PEERS, TARGETS...): plain data, read from its file.
SPEC = runpy.run_path(str(BENCHMARKS / "bench_spec.py"))


def _available_peers() -> list[str]:
    peers = ["trio_netstream", "trio", "asyncio-protocol", "asyncio-streams"]
    if shutil.which("node") is not None and NODE_PEER.is_file():
        peers.append("node")
    return peers


def _expected_rows() -> list[str]:
    rows = [
        "bulk",
        "pingpong-cross",
        "pingpong-same",
        "churn",
        "churn-node",
        "churn-node-client",
        "churn-node-server",
        "idle",
        "tls",
        "handshake",
        "handshake-resume",
        "sendfile",
        "sendfile-write",
        "proxy",
        "readline",
        "http-wrk",
        "http-ab",
    ]
    if len(os.sched_getaffinity(0)) < 2:
        rows.remove("pingpong-cross")
    # The http rows' load generators (CI installs them; the harness skips a
    # row whose program is missing, with a note).
    for row, (program, _) in SPEC["HTTP_TOOLS"].items():
        if shutil.which(program) is None:
            rows.remove(row)
    return rows


def _bench(cwd: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/bench.py ARGS``, from another directory (with
    *path* as ``PATH`` if given). The harness is not library code: it runs
    outside ``pytest --cov``'s measurement."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE_")}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _run(
    tmp_path: Path, *args: str
) -> tuple[int, dict[str, Any], str, subprocess.CompletedProcess[str]]:
    out = tmp_path / "docs"
    results = tmp_path / "results.json"
    finished = _bench(tmp_path, "--quick", "--output-dir", str(out), "--json", str(results), *args)
    assert (out / "performance.md").is_file(), finished.stderr
    report = (out / "performance.md").read_text(encoding="utf-8")
    data = json.loads(results.read_text(encoding="utf-8"))
    return finished.returncode, data, report, finished


def test_quick_run_measures_every_benchmark_for_every_available_peer(tmp_path: Path) -> None:
    status, data, report, finished = _run(tmp_path)

    peers = _available_peers()
    rows = _expected_rows()
    assert data["failures"] == {}
    assert status == 0
    assert data["quick"] is True
    assert data["peers"] == peers
    assert data["rows"] == rows
    main_metric = {
        "bulk": "mbps",
        "pingpong-cross": "rtps",
        "pingpong-same": "rtps",
        "churn": "cps",
        "churn-node": "cps",
        "churn-node-client": "cps",
        "churn-node-server": "cps",
        "idle": "kib_per_conn",
        "tls": "mbps",
        "handshake": "hps",
        "handshake-resume": "hps",
        "sendfile": "mbps",
        "sendfile-write": "mbps",
        "proxy": "mbps",
        "readline": "lps",
        "http-wrk": "rps",
        "http-ab": "rps",
    }
    for row in rows:
        assert sorted(data["results"][row]) == sorted(peers), row
        for peer in peers:
            runs = data["results"][row][peer]
            assert len(runs) == 1, (row, peer)
            value = runs[0][main_metric[row]]
            assert isinstance(value, float), (row, peer)
            if row == "idle":
                assert runs[0]["rss_after_kib"] > 0, peer
            else:
                assert value > 0, (row, peer)
            if row.startswith("pingpong"):
                assert 0 < runs[0]["p50_us"] <= runs[0]["p99_us"], (row, peer)

    # The report: every target, and a row per implementation in every table.
    assert report.startswith("# Performance")
    assert "Smoke run" in report
    for target in SPEC["TARGETS"]:
        assert f"| {target.text} |" in report
    baseline = "| raw trio | " + " | ".join(["1.00\u00d7"] * len(rows)) + " |"
    assert baseline in report.splitlines()  # the summary: every ratio is to raw trio
    tables = report.split("## Summary", 1)[1].splitlines()
    for peer in peers:
        name = SPEC["PEERS"][peer]
        # the summary table, then one table per result row
        assert sum(line.startswith(f"| {name} |") for line in tables) == 1 + len(rows), peer
    chart = tmp_path / "docs" / "performance.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![ratios to raw trio](performance.png)" in report
    else:
        assert not chart.exists()
        assert "Chart skipped: matplotlib is not installed" in report

    # A progress line per run on stderr, the report on stdout.
    assert f"[bulk 1/{len(peers)}] trio_netstream run 1: " in finished.stderr
    assert finished.stdout.strip() == report.strip()


def test_selected_benchmarks_and_peers_always_include_raw_trio(tmp_path: Path) -> None:
    status, data, report, _ = _run(tmp_path, "--only", "churn", "--peers", "trio_netstream")

    assert (status, data["failures"]) == (0, {})
    churn_rows = ["churn", "churn-node", "churn-node-client", "churn-node-server"]
    assert data["rows"] == churn_rows
    assert data["peers"] == ["trio_netstream", "trio"]
    for row in churn_rows:
        assert sorted(data["results"][row]) == ["trio", "trio_netstream"], row
    assert data["notes"][0] == "raw trio was added to --peers: every ratio is to it."
    assert "### Connection churn" in report
    assert "### Bulk transfer" not in report


def test_baseline_adds_a_peer_importing_trio_netstream_from_another_checkout(
    tmp_path: Path,
) -> None:
    # This checkout is its own baseline here: what is tested is that the
    # extra peer runs, interleaved, from the directory given.
    root = BENCHMARKS.parent
    status, data, report, finished = _run(
        tmp_path, "--only", "churn", "--peers", "trio_netstream", "--baseline", str(root)
    )

    assert (status, data["failures"]) == (0, {})
    assert data["peers"] == ["trio_netstream", "trio_netstream@base", "trio"]
    assert data["baseline"] == str(root)
    assert sorted(data["results"]["churn"]) == ["trio", "trio_netstream", "trio_netstream@base"]
    progress = [line for line in finished.stderr.splitlines() if line.startswith("[churn ")]
    assert [line.split(" run ")[0] for line in progress] == [
        "[churn 1/3] trio_netstream",
        "[churn 2/3] trio_netstream@base",
        "[churn 3/3] raw trio",
    ]
    imported = root / "trio_netstream" / "__init__.py"
    assert f"note: trio_netstream@base imports {imported}" in finished.stderr
    tables = report.split("## Summary", 1)[1].splitlines()
    # the summary, then the churn rows' tables
    assert sum(line.startswith("| trio_netstream@base | ") for line in tables) == 1 + 4


@pytest.mark.parametrize(
    "args",
    [["--only", "bulk,nonsense"], ["--peers", "java"], ["--runs", "0"], ["--baseline", "/"]],
)
def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path, args: list[str]) -> None:
    finished = _bench(tmp_path, "--quick", "--output-dir", str(tmp_path / "docs"), *args)
    assert finished.returncode != 0  # SystemExit, with a message
    assert finished.stderr.strip()
    assert "Traceback" not in finished.stderr
    assert not (tmp_path / "docs").exists()


def test_http_rows_are_skipped_with_a_note_without_their_load_generators(tmp_path: Path) -> None:
    out = tmp_path / "docs"
    empty = tmp_path / "bin"
    empty.mkdir()
    finished = _bench(
        tmp_path,
        "--quick",
        "--only",
        "http",
        "--peers",
        "trio",
        "--output-dir",
        str(out),
        path=str(empty),
    )

    assert finished.returncode == 0, finished.stderr
    report = (out / "performance.md").read_text(encoding="utf-8")
    assert "- Skipped http-wrk: `wrk` was not found on PATH (Debian: wrk)." in report
    assert "- Skipped http-ab: `ab` was not found on PATH (Debian: apache2-utils)." in report
    assert "### HTTP/1.1" not in report


#: The http rows' requests, as wrk (HTTP/1.1) and ``ab -k`` (HTTP/1.0) send them.
_GET_11 = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
_GET_10 = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize(
    ("received", "replies", "left"),
    [
        (_GET_11[:-2], "", _GET_11[:-2]),  # no request complete yet
        (_GET_11 + _GET_11[:8], "k", _GET_11[:8]),
        (_GET_11 * 3, "kkk", b""),  # pipelined: one answer for all three
        (_GET_10, "k", b""),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n" + _GET_11, "c", _GET_11),
        (b"GET / HTTP/1.0\r\n\r\n" + _GET_10, "c", _GET_10),
        (_GET_11 + b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", "kc", b""),
    ],
)
def test_the_http_rows_server_answers_each_complete_request(
    monkeypatch: pytest.MonkeyPatch, received: bytes, replies: str, left: bytes
) -> None:
    """``k``: a keep-alive reply, ``c``: the closing one (then the requests
    after it are left unanswered in the buffer)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # peer_common imports bench_spec
    common = runpy.run_path(str(BENCHMARKS / "peer_common.py"))
    buffer = bytearray(received)

    answer, closing = common["http_replies"](buffer)

    reply = {"k": common["HTTP_KEEP_ALIVE"], "c": common["HTTP_CLOSE"]}
    assert answer == b"".join(reply[kind] for kind in replies)
    assert (closing, bytes(buffer)) == (replies.endswith("c"), left)


def test_a_row_of_its_own_layout_comes_before_its_benchmarks() -> None:
    layout, peer, common = SPEC["layout"], SPEC["PEER"], SPEC["COMMON"]

    assert layout("churn") == layout("churn-node") == SPEC["DEFAULT_LAYOUT"]
    assert layout("churn-node-client") == (("server", common), ("client", peer))
    assert layout("churn-node-server") == (("server", peer), ("client", common))
    assert layout("sendfile-write") == SPEC["LAYOUTS"]["sendfile"]
