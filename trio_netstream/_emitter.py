"""A small event emitter: Node's on/once/off with awaited async listeners.

How this works: listeners of one event are kept in a tuple that is replaced,
never mutated, when a listener is added or removed, so an emission iterates
over the listeners registered when it started (as Node does) without copying
anything. :meth:`EventEmitter.emit` calls the listeners in registration order;
as long as they are plain functions it finishes synchronously and returns
``None``. The first listener that returns an awaitable (an ``async def``
listener, or a plain one returning a coroutine) turns the rest of the
emission into a coroutine, which ``emit`` returns: the caller awaits it, and
the remaining listeners run after the awaitable, still in order. The stream's
tasks therefore pay nothing for async support while every listener is sync.

An exception raised by a listener propagates out of ``emit`` (or out of the
returned coroutine) untouched; the stream decides what that means.

This module imports no Trio.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["EventEmitter"]

Listener = Callable[..., Any]
F = TypeVar("F", bound=Listener)
_Entry = tuple[Listener, bool]  # (listener, once)


def _check(event: object, listener: object) -> None:
    if not isinstance(event, str):
        raise TypeError(f"event name must be a str, not {type(event).__name__}")
    if not callable(listener):
        raise TypeError(f"listener must be callable, not {type(listener).__name__}")


class EventEmitter:
    """Node's ``EventEmitter`` registration API, with ordered async delivery."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: dict[str, tuple[_Entry, ...]] = {}

    # -- registration -----------------------------------------------------

    def _add(self, event: str, listener: Listener, once: bool) -> None:
        _check(event, listener)
        self._events[event] = (*self._events.get(event, ()), (listener, once))

    @overload
    def on(self, event: str) -> Callable[[F], F]: ...
    @overload
    def on(self, event: str, listener: Listener) -> Any: ...
    def on(self, event: str, listener: Listener | None = None) -> Any:
        """Call *listener* every time *event* is emitted.

        Returns the emitter (so calls chain, as in Node). Without *listener*
        it returns a decorator that registers the decorated function and
        returns it unchanged::

            @stream.on("data")
            def received(chunk): ...
        """
        if listener is None:
            if not isinstance(event, str):
                raise TypeError(f"event name must be a str, not {type(event).__name__}")

            def register(fn: F) -> F:
                self._add(event, fn, False)
                return fn

            return register
        self._add(event, listener, False)
        return self

    @overload
    def once(self, event: str) -> Callable[[F], F]: ...
    @overload
    def once(self, event: str, listener: Listener) -> Any: ...
    def once(self, event: str, listener: Listener | None = None) -> Any:
        """Like :meth:`on`, but the listener is removed before its first call."""
        if listener is None:
            if not isinstance(event, str):
                raise TypeError(f"event name must be a str, not {type(event).__name__}")

            def register(fn: F) -> F:
                self._add(event, fn, True)
                return fn

            return register
        self._add(event, listener, True)
        return self

    def off(self, event: str, listener: Listener) -> Any:
        """Remove the most recently added registration of *listener* for *event*.

        Removing a listener that is not registered does nothing (as in Node).
        """
        _check(event, listener)
        entries = self._events.get(event, ())
        for index in range(len(entries) - 1, -1, -1):
            if entries[index][0] == listener:
                self._set(event, entries[:index] + entries[index + 1 :])
                break
        return self

    def remove_all_listeners(self, event: str | None = None) -> Any:
        """Remove every listener of *event*, or of every event."""
        if event is None:
            self._events.clear()
        elif not isinstance(event, str):
            raise TypeError(f"event name must be a str, not {type(event).__name__}")
        else:
            self._events.pop(event, None)
        return self

    def listeners(self, event: str) -> list[Listener]:
        """A copy of the listeners of *event*, in call order."""
        return [listener for listener, _ in self._events.get(event, ())]

    def listener_count(self, event: str) -> int:
        """How many listeners *event* has."""
        return len(self._events.get(event, ()))

    def _set(self, event: str, entries: tuple[_Entry, ...]) -> None:
        if entries:
            self._events[event] = entries
        else:
            del self._events[event]

    def _discard(self, event: str, entry: _Entry) -> None:
        entries = self._events.get(event, ())
        for index, candidate in enumerate(entries):
            if candidate is entry:
                self._set(event, entries[:index] + entries[index + 1 :])
                return

    # -- emission ---------------------------------------------------------

    def _take_listeners(self, event: str) -> list[Listener]:
        """The listeners an emission of *event* would call now, in order;
        ``once`` listeners are removed (for callers that dispatch themselves)."""
        entries = self._events.get(event, ())
        for entry in entries:
            if entry[1]:
                self._discard(event, entry)
        return [listener for listener, _ in entries]

    def emit(self, event: str, *args: object) -> Awaitable[None] | None:
        """Call the listeners of *event* in order.

        Returns ``None`` when every listener ran synchronously, or a coroutine
        that must be awaited to run the first async listener and the rest.
        """
        entries = self._events.get(event)
        if not entries:
            return None
        return self._run(event, entries, 0, args)

    def _run(
        self, event: str, entries: tuple[_Entry, ...], start: int, args: tuple[object, ...]
    ) -> Awaitable[None] | None:
        for index in range(start, len(entries)):
            entry = entries[index]
            if entry[1]:
                self._discard(event, entry)
            result = entry[0](*args)
            if result is not None and inspect.isawaitable(result):
                return self._finish(result, event, entries, index + 1, args)
        return None

    async def _finish(
        self,
        pending: Awaitable[object],
        event: str,
        entries: tuple[_Entry, ...],
        start: int,
        args: tuple[object, ...],
    ) -> None:
        await pending
        rest = self._run(event, entries, start, args)
        if rest is not None:  # the next async listener, and everything after it
            await rest
