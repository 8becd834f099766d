"""``--alpn`` on the command line, run as a user runs it (TLS in production).

``connect --alpn h2,http/1.1`` (with ``--tls`` or ``--starttls``) offers
those protocols and prints the one agreed on stderr after the handshake
(``trio-netstream: ALPN: h2``, or ``ALPN: none``); ``echo --tls-cert ...
--alpn h2,http/1.1`` accepts them in its order of preference and its
``secure`` line names the result (``secure (ALPN h2)``). Peers: the CLI
itself, ``openssl s_server -alpn`` (skipped without the ``openssl`` binary)
and the STARTTLS example server. Every command is a child process, every
test runs under ``trio.fail_after``; certificates come from ``trustme``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

import pytest
import trio
import trustme
from test_cli_commands import (
    EXAMPLES,
    Child,
    connections,
    echo_server,
    echoed,
    run_connect,
    without_data,
)

from trio_netstream._cli import main

LIMIT = 30  # seconds; a hang fails the test instead of blocking the run
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """trustme files: a CA, and a server certificate (chain) and key for
    localhost and 127.0.0.1."""
    directory = tmp_path_factory.mktemp("alpn_pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    return {name: str(path) for name, path in files.items()}


def smtp_example() -> ModuleType:
    """docs/examples/starttls_smtp.py, imported from its file."""
    spec = importlib.util.spec_from_file_location("starttls_smtp", EXAMPLES / "starttls_smtp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tls_args(pki: dict[str, str], *more: str) -> list[str]:
    return ["--tls-cert", pki["cert"], "--tls-key", pki["key"], *more]


def stderr_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


async def served(child: Child) -> list[str]:
    """The echo server's events for its one connection, once it closed."""
    while not (await child.line()).endswith(("close(False)", "close(True)")):
        pass
    (events,) = connections(child.lines).values()
    return events


# -- our connect against our echo -----------------------------------------------------


async def test_the_servers_order_wins_and_both_sides_say_which(pki: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        async with echo_server(*tls_args(pki, "--alpn", "h2,http/1.1")) as (child, host, port):
            result = await run_connect(
                host,
                str(port),
                "--tls",
                "--ca-file",
                pki["ca"],
                "--alpn",
                "http/1.1,h2",
                stdin=b"ping\r\n",
            )
            events = await served(child)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\r\nping\r\ngoodbye\r\n"
    # Printed without -v: it was asked for.
    assert stderr_lines(result) == ["trio-netstream: ALPN: h2"]
    assert without_data(events[1:]) == ["connect", "secure (ALPN h2)", "end", "close(False)"]
    assert echoed(events) == b"ping\r\n"


async def test_verbose_prints_alpn_after_the_secure_line(pki: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        async with echo_server(*tls_args(pki, "--alpn", "http/1.1")) as (_, host, port):
            result = await run_connect(
                host,
                str(port),
                "--tls",
                "--ca-file",
                pki["ca"],
                "--alpn",
                "h2, http/1.1",  # spaces around the names are ignored
                "-v",
                stdin=b"x",
            )
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"trio-netstream: connected to 127.0.0.1:{port}",
        "trio-netstream: secure: peer verified",
        "trio-netstream: ALPN: http/1.1",
        "trio-netstream: end",
        "trio-netstream: closed (had_error=False)",
    ]


@pytest.mark.parametrize(
    ("server_alpn", "client_alpn", "client_says", "server_says"),
    [
        # No overlap: the handshake goes on without a protocol (as Node's server).
        (
            ["--alpn", "h2"],
            ["--alpn", "spdy/3"],
            ["trio-netstream: ALPN: none"],
            "secure (ALPN none)",
        ),
        # A server without ALPN: none agreed; its line stays as before.
        ([], ["--alpn", "h2"], ["trio-netstream: ALPN: none"], "secure"),
        # A client that offers nothing: nothing printed on its side.
        (["--alpn", "h2"], [], [], "secure (ALPN none)"),
    ],
)
async def test_no_protocol_agreed_is_not_a_failure(
    pki: dict[str, str],
    server_alpn: list[str],
    client_alpn: list[str],
    client_says: list[str],
    server_says: str,
) -> None:
    with trio.fail_after(LIMIT):
        async with echo_server(*tls_args(pki, *server_alpn)) as (child, host, port):
            result = await run_connect(
                host, str(port), "--tls", "--ca-file", pki["ca"], *client_alpn, stdin=b"ping\n"
            )
            events = await served(child)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\r\nping\ngoodbye\r\n"
    assert stderr_lines(result) == client_says
    assert without_data(events[1:]) == ["connect", server_says, "end", "close(False)"]


async def test_echo_workers_get_the_alpn_list(pki: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        async with echo_server(*tls_args(pki, "--workers", "2", "--alpn", "h2,http/1.1")) as (
            child,
            host,
            port,
        ):
            result = await run_connect(
                host, str(port), "--tls", "--ca-file", pki["ca"], "--alpn", "http/1.1,h2"
            )
            while not (line := await child.line()).endswith("close(False)"):
                pass
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == ["trio-netstream: ALPN: h2"]
    (events,) = connections(child.lines).values()
    assert "secure (ALPN h2)" in events, line


# -- against openssl s_server ---------------------------------------------------------


@asynccontextmanager
async def s_server(pki: dict[str, str], *more: str) -> AsyncIterator[tuple[trio.Process, int]]:
    """``openssl s_server -naccept 1 *more``, once it listens: the process and
    its port (``-accept 127.0.0.1:0``: the kernel picks one, no race). It
    is killed and reaped on the way out."""
    assert OPENSSL is not None
    process = await trio.lowlevel.open_process(
        [
            OPENSSL,
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-cert",
            pki["cert"],
            "-key",
            pki["key"],
            "-naccept",
            "1",
            "-rev",  # answers each line reversed; ends when the client does
            *more,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        out = b""
        while (found := re.search(rb"ACCEPT 127\.0\.0\.1:(\d+)\r?\n", out)) is None:
            chunk = await process.stdout.receive_some()
            assert chunk, f"openssl s_server printed no ACCEPT line: {out!r}"
            out += chunk
        yield process, int(found[1])
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


@needs_openssl
async def test_connect_gets_h2_from_openssl_s_server(pki: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        async with s_server(pki, "-alpn", "h2") as (_, port):
            result = await run_connect(
                "127.0.0.1",
                str(port),
                "--tls",
                "--ca-file",
                pki["ca"],
                "--alpn",
                "http/1.1,h2",
                stdin=b"stressed\n",
            )
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == ["trio-netstream: ALPN: h2"]
    assert result.stdout == b"desserts\n"


@needs_openssl
async def test_an_openssl_server_that_refuses_the_protocols_offered_exits_3(
    pki: dict[str, str],
) -> None:
    """OpenSSL's s_server ends the handshake with a no_application_protocol
    alert when it takes none of the protocols offered (our server and Node's
    go on without one): a TLS failure, and the line says why."""
    with trio.fail_after(LIMIT):
        async with s_server(pki, "-alpn", "h2") as (_, port):
            result = await run_connect(
                "127.0.0.1",
                str(port),
                "--tls",
                "--ca-file",
                pki["ca"],
                "--alpn",
                "http/1.1,spdy/3",
                stdin=b"secret\n",
            )
    assert result.returncode == 3
    assert result.stdout == b""
    assert stderr_lines(result) == [
        f"trio-netstream: TLS handshake failed: 127.0.0.1:{port}: the server accepts none "
        "of the ALPN protocols offered (http/1.1,spdy/3): no_application_protocol alert"
    ]


# -- STARTTLS -------------------------------------------------------------------------


async def test_starttls_offers_the_alpn_list(pki: dict[str, str]) -> None:
    smtp = smtp_example()
    context: ssl.SSLContext = smtp.server_context(pki["cert"], pki["key"])
    context.set_alpn_protocols(["smtp", "h2"])  # the server's own list, on its context
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(smtp.serve, context)
            _, port = server.address()
            result = await run_connect(
                "127.0.0.1",
                str(port),
                "--starttls",
                "--ca-file",
                pki["ca"],
                "--alpn",
                "h2,smtp",
                stdin=b"QUIT\r\n",
            )
            server.close()
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == ["trio-netstream: ALPN: smtp"]
    assert result.stdout.endswith(b"220 Ready to start TLS\r\n221 Bye\r\n")


# -- usage errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["connect", "127.0.0.1", "443", "--alpn", "h2"], "--alpn needs --tls or --starttls"),
        (["connect", "--unix", "/tmp/x", "--alpn", "h2"], "--alpn needs --tls or --starttls"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn", ""], "a comma-separated list"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn", "h2,"], "a comma-separated list"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn", ",h2"], "a comma-separated list"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn", "h2,,x"], "a comma-separated list"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn", " "], "a comma-separated list"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn", "h\u00e9"], "1 to 255 ASCII"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn", "x" * 256], "1 to 255 ASCII"),
        (["connect", "127.0.0.1", "443", "--tls", "--alpn"], "expected one argument"),
        (["echo", "--alpn", "h2"], "--alpn needs --tls-cert"),
        (["echo", "--tls-cert", "cert.pem", "--alpn", ""], "a comma-separated list"),
    ],
)
def test_bad_alpn_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"trio-netstream {argv[0]}: error: " in err
    assert message in err


@pytest.mark.parametrize("command", ["echo", "connect"])
def test_help_explains_alpn(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--alpn P1,P2" in out
    result_line = "secure (ALPN none)" if command == "echo" else '"ALPN: none"'
    assert result_line in out
