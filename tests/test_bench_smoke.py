"""The benchmark harness (trio_netstream._bench) in smoke mode, so it cannot rot.

It asserts that a ``--quick`` run produced a figure for every benchmark and
every implementation available here, and wrote its report. It never asserts
anything about the figures' size: timings are not tested.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from trio_netstream import _bench

NODE_PEER = Path(_bench.__file__).resolve().parents[1] / "benchmarks" / "node_peer.js"


def _available_peers() -> list[str]:
    peers = ["trio_netstream", "trio", "asyncio-protocol", "asyncio-streams"]
    if shutil.which("node") is not None and NODE_PEER.is_file():
        peers.append("node")
    return peers


def _expected_rows() -> list[str]:
    rows = ["bulk", "pingpong-cross", "pingpong-same", "churn", "idle", "tls"]
    if len(os.sched_getaffinity(0)) < 2:
        rows.remove("pingpong-cross")
    return rows


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "docs"
    results = tmp_path / "results.json"
    status = _bench.main(["--quick", "--output-dir", str(out), "--json", str(results), *args])
    report = (out / "performance.md").read_text(encoding="utf-8")
    return status, json.loads(results.read_text(encoding="utf-8")), report


def test_quick_run_measures_every_benchmark_for_every_available_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, data, report = _run(tmp_path)

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
        "idle": "kib_per_conn",
        "tls": "mbps",
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
    for target in _bench.TARGETS:
        assert f"| {target.text} |" in report
    baseline = "| raw trio | " + " | ".join(["1.00\u00d7"] * len(rows)) + " |"
    assert baseline in report.splitlines()  # the summary: every ratio is to raw trio
    tables = report.split("## Summary", 1)[1].splitlines()
    for peer in peers:
        name = _bench.PEERS[peer]
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
    captured = capsys.readouterr()
    assert f"[bulk 1/{len(peers)}] trio_netstream run 1: " in captured.err
    assert captured.out.strip() == report.strip()


def test_selected_benchmarks_and_peers_always_include_raw_trio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, data, report = _run(tmp_path, "--only", "churn", "--peers", "trio_netstream")

    assert (status, data["failures"]) == (0, {})
    assert data["rows"] == ["churn"]
    assert data["peers"] == ["trio_netstream", "trio"]
    assert sorted(data["results"]["churn"]) == ["trio", "trio_netstream"]
    assert data["notes"][0] == "raw trio was added to --peers: every ratio is to it."
    assert "### Connection churn" in report
    assert "### Bulk transfer" not in report
    capsys.readouterr()


@pytest.mark.parametrize(
    "args", [["--only", "bulk,nonsense"], ["--peers", "java"], ["--runs", "0"]]
)
def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path, args: list[str]) -> None:
    with pytest.raises(SystemExit):
        _bench.main(["--quick", "--output-dir", str(tmp_path / "docs"), *args])
    assert not (tmp_path / "docs").exists()
