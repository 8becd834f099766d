"""EventEmitter: Node's registration API with ordered, awaited async listeners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_netstream._emitter import EventEmitter


def recorder(log: list[Any], name: str) -> Callable[..., None]:
    def listener(*args: Any) -> None:
        log.append((name, *args))

    return listener


# --- registration ---------------------------------------------------------------


def test_on_calls_listeners_in_registration_order_with_args() -> None:
    em, log = EventEmitter(), []
    em.on("x", recorder(log, "a"))
    em.on("x", recorder(log, "b"))
    em.on("y", recorder(log, "y"))
    em.on("x", recorder(log, "c"))
    assert em.emit("x", 1, "two") is None
    assert log == [("a", 1, "two"), ("b", 1, "two"), ("c", 1, "two")]
    assert em.emit("x") is None
    assert log[3:] == [("a",), ("b",), ("c",)]


def test_emit_without_listeners_returns_none() -> None:
    em = EventEmitter()
    assert em.emit("nothing", 1) is None


def test_on_is_called_every_time() -> None:
    em, log = EventEmitter(), []
    em.on("x", recorder(log, "a"))
    for i in range(3):
        em.emit("x", i)
    assert log == [("a", 0), ("a", 1), ("a", 2)]
    assert em.listener_count("x") == 1


def test_same_listener_registered_twice_is_called_twice() -> None:
    em, log = EventEmitter(), []
    f = recorder(log, "f")
    em.on("x", f).on("x", f)
    em.emit("x")
    assert log == [("f",), ("f",)]
    assert em.listeners("x") == [f, f]


def test_registration_methods_chain() -> None:
    em, log = EventEmitter(), []
    f, g = recorder(log, "f"), recorder(log, "g")
    assert em.on("x", f) is em
    assert em.once("x", g) is em
    assert em.off("x", f) is em
    assert em.remove_all_listeners("x") is em
    assert em.remove_all_listeners() is em
    assert em.on("a", f).on("b", g).once("c", f) is em
    assert (em.listeners("a"), em.listeners("b"), em.listeners("c")) == ([f], [g], [f])


def test_on_as_decorator_returns_function_unchanged() -> None:
    em, log = EventEmitter(), []

    def received(chunk: bytes) -> None:
        log.append(chunk)

    decorated = em.on("data")(received)
    assert decorated is received

    @em.on("data")
    def second(chunk: bytes) -> None:
        log.append(("second", chunk))

    assert callable(second)
    assert second.__name__ == "second"
    assert em.listeners("data") == [received, second]
    em.emit("data", b"hi")
    assert log == [b"hi", ("second", b"hi")]


def test_once_as_decorator() -> None:
    em, log = EventEmitter(), []

    @em.once("x")
    def handler(value: int) -> None:
        log.append(value)

    assert handler.__name__ == "handler"
    em.emit("x", 1)
    em.emit("x", 2)
    assert log == [1]
    assert em.listener_count("x") == 0


def test_once_is_called_once() -> None:
    em, log = EventEmitter(), []
    em.once("x", recorder(log, "once"))
    em.on("x", recorder(log, "on"))
    em.emit("x", 1)
    em.emit("x", 2)
    assert log == [("once", 1), ("on", 1), ("on", 2)]
    assert em.listener_count("x") == 1


def test_once_is_removed_before_it_is_called() -> None:
    em, seen = EventEmitter(), []

    def handler() -> None:
        seen.append((em.listener_count("x"), em.listeners("x")))
        # Re-emitting from inside must not call it again.
        em.emit("x")

    em.once("x", handler)
    em.emit("x")
    assert seen == [(0, [])]


def test_listeners_and_listener_count() -> None:
    em = EventEmitter()
    f, g = (lambda: None), (lambda: None)
    assert em.listeners("x") == []
    assert em.listener_count("x") == 0
    em.on("x", f).once("x", g).on("y", g)
    assert em.listeners("x") == [f, g]
    assert em.listener_count("x") == 2
    assert em.listener_count("y") == 1
    assert em.listener_count("z") == 0


def test_listeners_returns_a_copy() -> None:
    em, log = EventEmitter(), []
    f = recorder(log, "f")
    em.on("x", f)
    copy = em.listeners("x")
    copy.append(recorder(log, "intruder"))
    copy.remove(f)
    em.emit("x")
    assert log == [("f",)]
    assert em.listeners("x") == [f]


def test_off_removes_the_most_recent_registration() -> None:
    em, log = EventEmitter(), []
    f, g = recorder(log, "f"), recorder(log, "g")
    em.on("x", f).on("x", g).on("x", f)
    em.off("x", f)
    assert em.listeners("x") == [f, g]
    em.emit("x")
    assert log == [("f",), ("g",)]
    em.off("x", f)
    assert em.listeners("x") == [g]
    em.off("x", g)
    assert em.listeners("x") == []
    assert em.listener_count("x") == 0


def test_off_removes_a_once_registration() -> None:
    em, log = EventEmitter(), []
    f = recorder(log, "f")
    em.once("x", f)
    em.off("x", f)
    em.emit("x")
    assert log == []
    assert em.listener_count("x") == 0


def test_off_of_unregistered_listener_does_nothing() -> None:
    em, log = EventEmitter(), []
    f, g = recorder(log, "f"), recorder(log, "g")
    em.on("x", f)
    em.off("x", g)
    em.off("other", f)
    assert em.listeners("x") == [f]
    em.emit("x")
    assert log == [("f",)]


def test_remove_all_listeners_of_one_event_and_of_all() -> None:
    em, log = EventEmitter(), []
    em.on("x", recorder(log, "x1")).on("x", recorder(log, "x2")).once("y", recorder(log, "y"))
    em.on("z", recorder(log, "z"))
    em.remove_all_listeners("x")
    assert em.listener_count("x") == 0
    assert em.listener_count("y") == 1
    em.emit("x")
    em.remove_all_listeners("never-registered")
    em.remove_all_listeners()
    assert (em.listener_count("y"), em.listener_count("z")) == (0, 0)
    em.emit("y")
    em.emit("z")
    assert log == []


def test_removing_during_emission_does_not_affect_the_current_emission() -> None:
    em, log = EventEmitter(), []
    b = recorder(log, "b")

    def a() -> None:
        log.append(("a",))
        em.off("x", b)

    em.on("x", a).on("x", b)
    em.emit("x")
    assert log == [("a",), ("b",)]
    em.emit("x")
    assert log == [("a",), ("b",), ("a",)]


def test_remove_all_during_emission_does_not_affect_the_current_emission() -> None:
    em, log = EventEmitter(), []

    def a() -> None:
        log.append("a")
        em.remove_all_listeners()

    em.on("x", a).on("x", lambda: log.append("b"))
    em.emit("x")
    em.emit("x")
    assert log == ["a", "b"]


def test_adding_during_emission_takes_effect_next_time() -> None:
    em, log = EventEmitter(), []

    def a() -> None:
        log.append("a")
        em.on("x", lambda: log.append("late"))

    em.once("x", a)
    em.on("x", lambda: log.append("b"))
    em.emit("x")
    assert log == ["a", "b"]
    em.emit("x")
    assert log == ["a", "b", "b", "late"]


def test_plain_listener_return_value_is_ignored() -> None:
    em, log = EventEmitter(), []
    em.on("x", lambda: 42)
    em.on("x", lambda: "text")
    em.on("x", lambda: log.append("ran"))
    assert em.emit("x") is None
    assert log == ["ran"]


# --- errors -----------------------------------------------------------------------


def test_sync_listener_exception_propagates_and_stops_the_emission() -> None:
    em, log = EventEmitter(), []

    def boom(value: int) -> None:
        log.append("boom")
        raise ValueError(value)

    em.on("x", recorder(log, "before")).on("x", boom).on("x", recorder(log, "after"))
    with pytest.raises(ValueError) as info:
        em.emit("x", 7)
    assert info.value.args == (7,)
    assert log == [("before", 7), "boom"]


def test_once_listener_that_raises_is_still_removed() -> None:
    em = EventEmitter()

    def boom() -> None:
        raise KeyError("k")

    em.once("x", boom)
    with pytest.raises(KeyError):
        em.emit("x")
    assert em.listener_count("x") == 0
    assert em.emit("x") is None


@pytest.mark.parametrize("event", [1, None, b"data", ("data",)])
def test_non_str_event_is_a_type_error(event: Any) -> None:
    em = EventEmitter()
    f = lambda: None  # noqa: E731
    with pytest.raises(TypeError):
        em.on(event, f)
    with pytest.raises(TypeError):
        em.once(event, f)
    with pytest.raises(TypeError):
        em.off(event, f)
    with pytest.raises(TypeError):
        em.on(event)
    with pytest.raises(TypeError):
        em.once(event)
    assert em.listener_count("data") == 0


@pytest.mark.parametrize("event", [1, b"data"])
def test_remove_all_listeners_non_str_event_is_a_type_error(event: Any) -> None:
    em = EventEmitter()
    em.on("data", lambda: None)
    with pytest.raises(TypeError):
        em.remove_all_listeners(event)
    assert em.listener_count("data") == 1


@pytest.mark.parametrize("listener", [5, "f", b"f", [print], object()])
def test_non_callable_listener_is_a_type_error(listener: Any) -> None:
    em = EventEmitter()
    with pytest.raises(TypeError):
        em.on("x", listener)
    with pytest.raises(TypeError):
        em.once("x", listener)
    with pytest.raises(TypeError):
        em.off("x", listener)
    assert em.listener_count("x") == 0


def test_decorator_with_non_callable_is_a_type_error() -> None:
    em = EventEmitter()
    with pytest.raises(TypeError):
        em.on("x")(5)
    assert em.listener_count("x") == 0


# --- async listeners ------------------------------------------------------------------


async def test_emit_returns_awaitable_and_runs_remaining_listeners_in_order() -> None:
    em, log = EventEmitter(), []

    async def slow(name: str) -> None:
        log.append(f"{name}-start")
        await trio.lowlevel.checkpoint()
        log.append(f"{name}-end")

    em.on("x", lambda v: log.append(f"s1:{v}"))
    em.on("x", lambda v: slow(f"a2:{v}"))  # plain listener returning a coroutine
    em.on("x", lambda v: log.append(f"s3:{v}"))

    async def a4(v: int) -> None:
        await slow(f"a4:{v}")

    em.on("x", a4)
    em.on("x", lambda v: log.append(f"s5:{v}"))

    pending = em.emit("x", 1)
    assert pending is not None
    # Only the listeners before the first awaitable have run so far.
    assert log == ["s1:1"]
    await pending
    assert log == [
        "s1:1",
        "a2:1-start",
        "a2:1-end",
        "s3:1",
        "a4:1-start",
        "a4:1-end",
        "s5:1",
    ]


async def test_async_listener_first() -> None:
    em, log = EventEmitter(), []

    async def first() -> None:
        await trio.lowlevel.checkpoint()
        log.append("first")

    em.on("x", first).on("x", lambda: log.append("second"))
    pending = em.emit("x")
    assert log == []
    assert pending is not None
    await pending
    assert log == ["first", "second"]


async def test_async_listener_applies_backpressure() -> None:
    em, log = EventEmitter(), []
    gate = trio.Event()

    async def waiter() -> None:
        log.append("waiting")
        await gate.wait()
        log.append("released")

    em.on("x", waiter).on("x", lambda: log.append("after"))

    async def run() -> None:
        pending = em.emit("x")
        assert pending is not None
        await pending
        log.append("emit done")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["waiting"]
        gate.set()
    assert log == ["waiting", "released", "after", "emit done"]


async def test_plain_listener_returning_coroutine_is_awaited() -> None:
    em, log = EventEmitter(), []

    async def work(v: int) -> None:
        await trio.lowlevel.checkpoint()
        log.append(("work", v))

    em.on("x", lambda v: work(v))
    pending = em.emit("x", 3)
    assert pending is not None
    await pending
    assert log == [("work", 3)]


async def test_async_once_listener_removed_before_it_runs() -> None:
    em, seen = EventEmitter(), []

    async def handler() -> None:
        seen.append(em.listener_count("x"))
        await trio.lowlevel.checkpoint()

    em.once("x", handler)
    pending = em.emit("x")
    assert em.listener_count("x") == 0
    assert pending is not None
    await pending
    assert seen == [0]
    assert em.emit("x") is None


async def test_async_listener_exception_propagates_from_await() -> None:
    em, log = EventEmitter(), []

    async def boom() -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("listener failed")

    em.on("x", lambda: log.append("before")).on("x", boom).on("x", lambda: log.append("after"))
    pending = em.emit("x")
    assert pending is not None
    with pytest.raises(RuntimeError, match="listener failed"):
        await pending
    assert log == ["before"]


async def test_sync_listener_after_async_one_raises_from_await() -> None:
    em = EventEmitter()

    async def fine() -> None:
        await trio.lowlevel.checkpoint()

    def boom() -> None:
        raise ValueError("late")

    em.on("x", fine).on("x", boom)
    pending = em.emit("x")
    assert pending is not None
    with pytest.raises(ValueError, match="late"):
        await pending


async def test_removal_during_async_emission_does_not_affect_it() -> None:
    em, log = EventEmitter(), []
    c = recorder(log, "c")

    async def b() -> None:
        await trio.lowlevel.checkpoint()
        em.off("x", c)
        log.append(("b",))

    em.on("x", recorder(log, "a")).on("x", b).on("x", c)
    pending = em.emit("x")
    assert pending is not None
    await pending
    assert log == [("a",), ("b",), ("c",)]
    pending = em.emit("x")
    assert pending is not None
    await pending
    assert log == [("a",), ("b",), ("c",), ("a",), ("b",)]


async def test_many_async_listeners_in_order() -> None:
    em, log = EventEmitter(), []

    def make(i: int) -> Callable[[], Awaitable[None]]:
        async def listener() -> None:
            await trio.lowlevel.checkpoint()
            log.append(i)

        return listener

    for i in range(50):
        em.on("x", make(i))
    pending = em.emit("x")
    assert pending is not None
    await pending
    assert log == list(range(50))


# --- _take_listeners() ---------------------------------------------------------------


def test_take_listeners_returns_listeners_in_order_and_drops_once() -> None:
    em = EventEmitter()
    f, g, h = (lambda: None), (lambda: None), (lambda: None)
    em.on("x", f).once("x", g).on("x", h).on("y", f)
    assert em._take_listeners("x") == [f, g, h]
    assert em.listeners("x") == [f, h]
    assert em._take_listeners("x") == [f, h]
    assert em.listeners("x") == [f, h]
    assert em.listeners("y") == [f]
    assert em._take_listeners("none") == []


def test_take_listeners_does_not_call_anything() -> None:
    em, log = EventEmitter(), []
    em.once("x", recorder(log, "a")).once("x", recorder(log, "b"))
    taken = em._take_listeners("x")
    assert log == []
    assert em.listener_count("x") == 0
    for listener in taken:
        listener(1)
    assert log == [("a", 1), ("b", 1)]
