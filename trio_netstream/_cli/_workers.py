"""``echo --workers N``: N ``echo --reuse-port`` processes sharing one port.

How this works: the parent binds the port with ``SO_REUSEPORT`` (choosing it
when ``--port 0``) without listening on it, starts the child processes on
that port, waits for each one's ``listening on`` line, relays their output
line by line, and stops them at once (SIGINT) when it is cancelled or when
one of them exits. When its *stop* event is set (the command got SIGTERM),
it passes SIGTERM on to every worker instead, and returns 0 once each has
shut down gracefully and exited with code 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

import trio

from ._output import EXIT_NETWORK, EXIT_OK, Failure, host_port, listen_errors, say


class _LineReader:
    """Whole lines from a child's stdout."""

    def __init__(self, source: trio.abc.ReceiveStream) -> None:
        self._source = source
        self._buffer = bytearray()

    async def next_line(self) -> str | None:
        """The next line without its newline, or ``None`` at EOF."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line.decode("utf-8", "replace")
            chunk = await self._source.receive_some()
            if not chunk:
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line.decode("utf-8", "replace")
                return None
            self._buffer += chunk


async def echo_workers(
    *,
    workers: int,
    port: int,
    host: str,
    worker_args: Sequence[str] = (),
    stop: trio.Event | None = None,
    out: Callable[[str], object] = say,
) -> int:
    """Run *workers* ``echo --reuse-port`` processes on one port until
    cancelled, or until *stop* is set: then SIGTERM them (each shuts down
    gracefully) and return 0 once all have exited with code 0.

    The port is bound here first (``SO_REUSEPORT``, not listening: the kernel
    hands connections only to the workers' listening sockets), so ``port=0``
    picks one port for all of them. Every worker gets *worker_args* (TLS,
    PROXY protocol, ``--grace``). Their output is relayed line by line.
    Raises :class:`Failure` (exit code 1) if a worker fails.
    """
    with listen_errors(host_port(host, port)):
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as reserved:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with listen_errors(host_port(host, port)):
            reserved.bind(sockaddr)
        bound_host, bound_port = reserved.getsockname()[:2]
        command = _worker_command(str(bound_host), str(bound_port), worker_args)
        processes: list[trio.Process] = []
        readers: list[_LineReader] = []
        try:
            await _start(command, workers, processes, readers)
            pids = ", ".join(str(process.pid) for process in processes)
            out(
                f"listening on {host_port(str(bound_host), int(bound_port))} "
                f"(pid {os.getpid()}, workers {pids})"
            )
            failure = await _relay(processes, readers, out, stop)
            if failure is not None:
                raise Failure(failure, EXIT_NETWORK)
            return EXIT_OK
        finally:
            with trio.CancelScope(shield=True):
                await _stop(processes, readers, out)


def _worker_command(host: str, port: str, worker_args: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trio_netstream",
        "echo",
        "--host",
        host,
        "--port",
        port,
        "--reuse-port",
        *worker_args,
    ]


async def _start(
    command: list[str], workers: int, processes: list[trio.Process], readers: list[_LineReader]
) -> None:
    """Start the workers (into *processes* and *readers*, so that the caller
    stops the ones started if this fails) and wait until each is listening."""
    for _ in range(workers):
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
        processes.append(process)
        assert process.stdout is not None
        readers.append(_LineReader(process.stdout))
    for process, reader in zip(processes, readers, strict=True):
        line = await reader.next_line()
        if line is None or not line.startswith("listening on "):
            code = await process.wait()
            raise Failure(
                f"echo worker {process.pid} failed to start (exit code {code})",
                code if code > 0 else EXIT_NETWORK,
            )


async def _relay(
    processes: list[trio.Process],
    readers: list[_LineReader],
    out: Callable[[str], object],
    stop: trio.Event | None = None,
) -> str | None:
    """Relay the workers' lines until one of them exits: say which. Once
    *stop* is set, SIGTERM every worker and relay until all have exited:
    ``None`` if each exited with code 0."""
    failed: list[str] = []
    stopping = False
    running = len(processes)
    async with trio.open_nursery() as nursery:

        async def relay(process: trio.Process, reader: _LineReader) -> None:
            nonlocal running
            while (line := await reader.next_line()) is not None:
                out(line)
            code = await process.wait()
            running -= 1
            if not (stopping and code == 0):  # not shut down as asked
                failed.append(f"echo worker {process.pid} exited (exit code {code})")
            if failed or not running:
                nursery.cancel_scope.cancel()

        async def pass_on(stop: trio.Event) -> None:
            nonlocal stopping
            await stop.wait()
            stopping = True
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)

        for process, reader in zip(processes, readers, strict=True):
            nursery.start_soon(relay, process, reader)
        if stop is not None:
            nursery.start_soon(pass_on, stop)
    return failed[0] if failed else None


async def _stop(
    processes: list[trio.Process], readers: list[_LineReader], out: Callable[[str], object]
) -> None:
    """Stop every worker still running at once (SIGINT: SIGTERM would give
    its connections a grace) and relay what they print until they exit;
    SIGKILL the ones still alive after 5 s; reap all."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)

    async def finish(process: trio.Process, reader: _LineReader | None) -> None:
        if reader is not None:
            while (line := await reader.next_line()) is not None:
                out(line)
        await process.wait()

    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            for index, process in enumerate(processes):
                nursery.start_soon(
                    finish, process, readers[index] if index < len(readers) else None
                )
    for process in processes:
        if process.returncode is None:  # pragma: no cover - a stuck worker
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
