"""The idle timer: ``'timeout'`` after a period without reading or writing.

The timer is a task of the connection, started the first time
``set_timeout`` gives a period (a connection without one costs nothing).
It sleeps until the idle deadline in a cancel scope whose deadline moves:
``set_timeout`` cancels the wait to re-plan, and every read or write moves
``Flow.last_activity`` (read when the deadline comes). At most one
``'timeout'`` per idle period. The figures (period, last activity) are the
flow's; this module is only the waiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Timer", "replan", "start_timer"]


class Timer:
    """A connection's timer task: where it parks or sleeps."""

    __slots__ = ("lot", "wait")

    def __init__(self) -> None:
        self.lot = trio.lowlevel.ParkingLot()  # parked while the period is 0
        self.wait: trio.CancelScope | None = None  # the sleep until the deadline


def start_timer(conn: Connection) -> None:
    if conn.timer is None and conn.start_task(_timer_loop):
        conn.timer = Timer()


def replan(conn: Connection) -> None:
    """``set_timeout()`` during a connection: a new idle period starts now."""
    conn.flow.last_activity = trio.current_time()
    if conn.flow.idle_period:
        start_timer(conn)
    timer = conn.timer
    if timer is not None:
        timer.lot.unpark_all()
        if timer.wait is not None:
            timer.wait.cancel()  # a shorter period applies now


async def _timer_loop(conn: Connection) -> None:
    timer = conn.timer
    assert timer is not None
    flow = conn.flow
    fired_for: float | None = None
    while not conn.stopped:
        period = flow.idle_period
        if not period:
            await timer.lot.park()
            continue
        last = flow.last_activity
        deadline = last + period
        if trio.current_time() >= deadline:
            if last != fired_for:
                fired_for = last
                await conn.emit("timeout")
            # One 'timeout' per idle period: look again one period later.
            deadline = trio.current_time() + period
        with trio.move_on_at(deadline) as wait:
            timer.wait = wait
            await trio.sleep_forever()
        timer.wait = None
