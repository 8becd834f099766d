"""A server's async connection listeners: the connection's own tasks.

Plain ``'connection'`` listeners are called in order as the connection is
accepted; an async one (or a plain one returning an awaitable) is started
as a task of that connection, like a ``trio.serve_tcp`` handler, in a small
nursery opened for it, alongside the stream's lifecycle. Each has run up to
its first ``await`` (and so registered its listeners) before the stream's
``'connect'`` and first ``'data'``. They end with the server's block.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any

import trio

from ._connection import TASK_NAME

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["serve_with_handlers", "start_handlers"]


@types.coroutine
def _after_first_step(
    coro: Coroutine[Any, Any, Any], first_step_done: Callable[[], object]
) -> Generator[Any, Any, Any]:
    """Run *coro* like ``await coro``, calling *first_step_done* as soon as it
    first suspends (or finishes), from inside the task that runs it."""
    try:
        trap = coro.send(None)
    except StopIteration as stop:
        return stop.value
    finally:
        first_step_done()
    while True:
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                trap = coro.send(value)
            except StopIteration as stop:
                return stop.value


def start_handlers(
    listeners: Iterable[Callable[..., Any]], stream: object
) -> list[Awaitable[object]]:
    """Call the ``'connection'`` listeners in order; return what the async
    ones returned, to run as the connection's tasks (no nursery is made for
    a connection without them)."""
    pending: list[Awaitable[object]] = []
    try:
        for listener in listeners:
            result = listener(stream)
            if result is not None and inspect.isawaitable(result):
                pending.append(result)
    except BaseException:
        for awaitable in pending:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started: no "never awaited" warning
        raise
    return pending


async def serve_with_handlers(
    conn: Connection,
    pending: list[Awaitable[object]],
    nursery: trio.Nursery,
    scopes: set[trio.CancelScope],
    *,
    shutting_down: bool,
    failed: Callable[[BaseException], object],
) -> None:
    """Run *conn* with its async connection listeners (*pending*) as its
    tasks; their nursery's scope is in *scopes* while they run (the server
    cancels them when its block ends), and cancelled at once if the block is
    *shutting_down*. A listener's exception goes to *failed*."""
    handlers_scope: trio.CancelScope | None = None
    try:
        async with trio.open_nursery() as handlers:
            handlers_scope = handlers.cancel_scope
            scopes.add(handlers_scope)
            if shutting_down:
                handlers_scope.cancel()
            started: list[trio.Event] = []
            for awaitable in pending:
                first_step = trio.Event()
                handlers.start_soon(_run_handler, awaitable, first_step, failed)
                started.append(first_step)
            try:
                for first_step in started:
                    # Async listeners have run up to their first await (and
                    # so registered their listeners) before 'connect' and 'data'.
                    await first_step.wait()
            finally:
                # Even when cancelled meanwhile: the lifecycle closes the
                # connection, emits its 'close' and counts it off. It runs
                # beside the listeners, not as their parent task: a
                # listener is never "inside" the stream's own tasks.
                handlers.start_soon(conn.run, nursery, name=TASK_NAME)
    finally:
        if handlers_scope is not None:
            scopes.discard(handlers_scope)


async def _run_handler(
    pending: Awaitable[object], first_step: trio.Event, failed: Callable[[BaseException], object]
) -> None:
    try:
        if inspect.iscoroutine(pending):
            await _after_first_step(pending, first_step.set)
        else:
            first_step.set()
            await pending
    except Exception as exc:
        failed(exc)
    finally:
        first_step.set()
