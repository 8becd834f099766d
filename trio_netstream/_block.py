"""The nursery behind a stream's or a server's ``async with`` block.

How this works: ``__aenter__`` opens a nursery by hand and keeps it for the
object's tasks. The tasks never let an exception escape (network failures
become events, see ``_connection``); a listener's exception, or a client's
unhandled ``'error'``, is recorded with :meth:`Block.fail`, which cancels the
block (body included), as a failing child task would. :meth:`Block.exit`
closes the nursery and raises the recorded exception *unwrapped*: users never
see an ``ExceptionGroup`` made by our internal nursery. An exception that
left the body is re-raised as it was.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

import trio

from ._errors import StreamStateError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Block"]

logger = logging.getLogger("trio_netstream")


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        # isinstance() leaves the group's type argument unknown to pyright
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return all(_only_cancelled(inner) for inner in group.exceptions)
    return False


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        # isinstance() leaves the group's type argument unknown to pyright
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [exc]


def _lone_exception(exc: BaseException) -> BaseException | None:
    """The one exception that is not a cancellation inside (nested) groups."""
    real = [leaf for leaf in _leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1 and real[0] is not exc:
        return real[0]
    return None


class Block:
    """One ``async with`` run: a nursery, and the first failure to re-raise."""

    __slots__ = ("_manager", "fatal", "nursery", "shutting_down")

    def __init__(self) -> None:
        self._manager: Any = None
        self.nursery: trio.Nursery | None = None
        self.fatal: BaseException | None = None
        self.shutting_down = False

    @property
    def running(self) -> bool:
        return self._manager is not None

    async def enter(self, what: str) -> trio.Nursery:
        if self._manager is not None:
            raise StreamStateError(f"this {what}'s async with block is already running")
        manager = trio.open_nursery()
        self.nursery = await manager.__aenter__()
        self._manager = manager
        self.fatal = None
        return self.nursery

    def fail(self, exc: BaseException) -> None:
        """Record *exc* (the first one wins) and cancel the whole block."""
        if self.fatal is None:
            self.fatal = exc
        elif exc is not self.fatal:
            logger.error("a further failure after %r", self.fatal, exc_info=exc)
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def exit(
        self,
        exc: BaseException | None,
        wait_done: Callable[[], Awaitable[None]],
        shut_down: Callable[[], object],
    ) -> bool:
        """Finish the block: wait normally, or *shut_down* on an exception.

        Returns ``False`` (re-raise the body's exception as it was) or raises
        the recorded failure, or a cancellation that arrived while waiting.
        """
        original = exc
        if exc is None:
            try:
                await wait_done()
            except BaseException as waited:  # cancellation while waiting
                exc = waited
        if exc is not None or self.fatal is not None:
            self.shutting_down = True  # no new connection may start now
            shut_down()
        manager, self._manager = self._manager, None
        try:
            await manager.__aexit__(None, None, None)
        except BaseException as children:
            # Our tasks raise nothing but cancellation and BaseExceptions such
            # as KeyboardInterrupt; those come out unwrapped, as they were.
            lone = _lone_exception(children)
            if lone is not None:
                raise lone from None
            if exc is None or not _only_cancelled(children):
                raise
        finally:
            self.nursery = None
            self.shutting_down = False
        fatal, self.fatal = self.fatal, None
        if (
            fatal is not None
            and original is not None
            and fatal is not original
            and not _only_cancelled(original)  # our own cancellation of the body
        ):
            # The body's own exception wins; the listener's is not lost.
            logger.error("a listener failed while the block was exiting", exc_info=fatal)
            return False
        if fatal is not None and fatal is not original:
            raise fatal
        if exc is not None and exc is not original:
            raise exc
        return False
