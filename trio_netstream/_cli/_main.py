"""``main()``: parse the command line, run one command, map failures to exit codes.

``echo``, ``proxy`` and ``connect`` run their body next to a signal receiver
(:func:`until_signal`); SIGINT or SIGTERM cancels the body, which destroys
its streams and server on the way out. ``echo`` and ``proxy`` stop
gracefully on SIGTERM instead: the first one sets their stop event (the
server shuts down within ``--grace`` ms, and with ``echo --workers`` the
parent passes the SIGTERM on to every worker); a second SIGTERM, or SIGINT,
cancels it at once (a worker leaves that to its parent, which sends it
SIGINT).
"""

from __future__ import annotations

import argparse
import functools
import signal
import ssl
from collections.abc import Awaitable, Callable, Sequence

import trio

from ._certs import client_context, server_context
from ._connect import connect_client
from ._demo import demo
from ._echo import echo_server
from ._output import EXIT_NETWORK, EXIT_OK, EXIT_SIGINT, EXIT_TLS, Failure, warn
from ._parser import parse_arguments
from ._relay import proxy_server
from ._starttls import DEFAULT_TIMEOUT
from ._workers import echo_workers


async def until_signal(
    body: Callable[[], Awaitable[int]],
    graceful: trio.Event | None = None,
    *,
    sigterm_again: bool = True,
) -> int:
    """Run *body* until it returns its exit code, or until SIGINT (130) or
    SIGTERM (0) cancels it. An exception from *body* is re-raised unwrapped.

    With *graceful*, the first SIGTERM only sets that event (*body* then
    winds down and returns its code); a second SIGTERM (unless not
    *sigterm_again*: it is ignored), or SIGINT, cancels *body* as without
    it."""
    codes: list[int] = []
    failures: list[Exception] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                try:
                    codes.append(await body())
                except Exception as exc:
                    failures.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            async for signum in signals:
                if signum == signal.SIGTERM and graceful is not None:
                    if not graceful.is_set():
                        graceful.set()
                        continue
                    if not sigterm_again:
                        continue
                codes.append(EXIT_SIGINT if signum == signal.SIGINT else EXIT_OK)
                nursery.cancel_scope.cancel()
                break
    if failures:
        raise failures[0]
    return codes[0]


def _run_echo(args: argparse.Namespace) -> int:
    stop = trio.Event()
    if args.workers > 1:
        worker_args = _worker_args(args)
        return trio.run(
            until_signal,
            lambda: echo_workers(
                workers=args.workers,
                port=args.port,
                host=args.host,
                worker_args=worker_args,
                stop=stop,
            ),
            stop,
        )
    context = None if args.tls_cert is None else server_context(args.tls_cert, args.tls_key)
    body = functools.partial(
        echo_server,
        port=args.port,
        host=args.host,
        path=args.unix,
        context=context,
        reuse_port=args.reuse_port,
        alpn=args.alpn,
        proxy_protocol=args.proxy_protocol,
        proxy_trusted=args.proxy_trusted,
        stop=stop,
        grace=args.grace,
    )
    # A worker's parent decides: it ends a worker at once with SIGINT. A
    # SIGTERM sent to the whole process group (systemd, kill -TERM -PGID)
    # reaches a worker twice, from the sender and from its parent.
    run = functools.partial(until_signal, body, stop, sigterm_again=not args.worker)
    return trio.run(run)


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The options every ``echo --workers N`` worker gets (checked here once,
    not in every worker)."""
    worker_args = ["--worker", "--grace", f"{args.grace:g}"]
    if args.tls_cert is not None:
        server_context(args.tls_cert, args.tls_key)  # fail here, not in every worker
        worker_args += ["--tls-cert", args.tls_cert]
        if args.tls_key is not None:
            worker_args += ["--tls-key", args.tls_key]
        if args.alpn is not None:
            worker_args.append("--alpn=" + ",".join(args.alpn))
    if args.proxy_protocol:
        worker_args.append("--proxy-protocol")
    if args.proxy_trusted is not None:
        worker_args += ["--proxy-trusted", *args.proxy_trusted]
    return worker_args


def _run_proxy(args: argparse.Namespace) -> int:
    stop = trio.Event()
    body = functools.partial(
        proxy_server,
        port=args.listen_port,
        host=args.host,
        target_host=args.target_host,
        target_port=args.target_port,
        stop=stop,
        grace=args.grace,
    )
    return trio.run(until_signal, body, stop)


def _run_connect(args: argparse.Namespace) -> int:
    context = None
    if args.tls or args.starttls:
        context = client_context(args.ca_file, args.insecure)
    return trio.run(
        until_signal,
        lambda: connect_client(
            host=args.host,
            port=args.port,
            path=args.unix,
            tls=args.tls,
            starttls=args.starttls,
            starttls_timeout=args.starttls_timeout or DEFAULT_TIMEOUT,
            encoding=args.encoding,
            context=context,
            verbose=args.verbose,
            family=args.family,
            local_address=args.local_address,
            local_port=args.local_port,
            connect_timeout=args.connect_timeout,
            alpn=args.alpn,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the package docstring)."""
    args = parse_arguments(argv)
    try:
        if args.command == "demo":
            trio.run(functools.partial(demo, args.port, args.host, tls=args.tls))
            return EXIT_OK
        if args.command == "echo":
            return _run_echo(args)
        if args.command == "proxy":
            return _run_proxy(args)
        return _run_connect(args)
    except Failure as failure:
        warn(failure.message)
        return failure.exit_code
    except ssl.SSLError as exc:
        warn(str(exc))
        return EXIT_TLS
    except OSError as exc:
        warn(str(exc))
        return EXIT_NETWORK
    except KeyboardInterrupt:
        return EXIT_SIGINT
