"""The command line: ``python -m trio_netstream demo`` as a new user runs it."""

from __future__ import annotations

import subprocess
import sys

import trio

from trio_netstream._cli import demo, main


def _side(lines: list[str], side: str) -> list[str]:
    """The event lines of one side (not the closing counters line)."""
    return [
        line.split(None, 1)[1]
        for line in lines
        if line.startswith(side + " ") and "bytes_read=" not in line
    ]


async def test_demo_transcript_in_process() -> None:
    lines: list[str] = []
    with trio.fail_after(10):
        await demo(out=lines.append)
    server = _side(lines, "server")
    conn = _side(lines, "conn")
    client = _side(lines, "client")
    # The server: listening, its connection, then closes last.
    assert server[0].startswith("listening(('127.0.0.1', ")
    assert server[1].startswith("connection('127.0.0.1:")
    assert server[2:] == ["close()"]
    # The connection it accepted: the echo conversation.
    assert conn[0] == "connect()"
    assert conn[-2:] == ["end()", "close(False)"]
    assert "".join(eval(line[5:-1]) for line in conn if line.startswith("data(")) == (
        "ping\r\npong\r\n"
    )
    # The client: connect first, its data is the echo with hello/goodbye around it.
    assert client[0] == "connect()"
    assert client[-2:] == ["end()", "close(False)"]
    received = "".join(eval(line[5:-1]) for line in client if line.startswith("data("))
    assert received == "hello\r\nping\r\npong\r\ngoodbye\r\n"
    assert lines[-2] == "client bytes_read=28 bytes_written=12"
    assert lines[-1] == "server close()"


def test_demo_command_runs_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_netstream", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("server listening(")
    assert "client data('goodbye\\r\\n')" in out
    assert out[-1] == "server close()"


def test_bad_arguments_exit_with_usage_error(capsys: object) -> None:
    try:
        main(["no-such-command"])
    except SystemExit as exit:
        assert exit.code == 2
    else:  # pragma: no cover - argparse always exits here
        raise AssertionError("argparse accepted an unknown command")


def test_demo_on_a_taken_port_reports_the_error(capsys: object) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err == f"trio-netstream: address already in use: 127.0.0.1:{port} (EADDRINUSE)\n"
