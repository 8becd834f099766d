"""The stream's events, typed per event for type checkers.

:class:`TypedEvents` is the :class:`~trio_netstream.EventEmitter` of a
stream with ``on()`` and ``once()`` overloaded per event name, so that a
type checker matches each listener against its event's arguments. At run
time it is the emitter itself: the overloads exist only for type checkers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._emitter import EventEmitter

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["TypedEvents"]

_F = TypeVar("_F", bound=Callable[..., Any])
DataListener = Callable[[bytes], object] | Callable[[str], object]
NoArgListener = Callable[[], object]
ErrorListener = Callable[[BaseException], object]
CloseListener = Callable[[bool], object]
LookupListener = Callable[[BaseException | None, str | None, int | None, str], object]
AttemptListener = Callable[[str, int, int], object]
AttemptFailedListener = Callable[[str, int, int, BaseException], object]


class TypedEvents(EventEmitter):
    """A stream's emitter, with its listeners typed per event."""

    __slots__ = ()

    if TYPE_CHECKING:

        @overload  # type: ignore[override]  # narrower, typed per event
        def on(self, event: Literal["data"], listener: DataListener) -> Self: ...
        @overload
        def on(
            self,
            event: Literal["connect", "end", "drain", "timeout", "secure"],
            listener: NoArgListener,
        ) -> Self: ...
        @overload
        def on(self, event: Literal["error"], listener: ErrorListener) -> Self: ...
        @overload
        def on(self, event: Literal["close"], listener: CloseListener) -> Self: ...
        @overload
        def on(self, event: Literal["lookup"], listener: LookupListener) -> Self: ...
        @overload
        def on(
            self,
            event: Literal["connectionAttempt", "connectionAttemptTimeout"],
            listener: AttemptListener,
        ) -> Self: ...
        @overload
        def on(
            self, event: Literal["connectionAttemptFailed"], listener: AttemptFailedListener
        ) -> Self: ...
        @overload
        def on(self, event: str) -> Callable[[_F], _F]: ...
        def on(self, event: str, listener: Any = None) -> Any: ...  # pyright: ignore[reportIncompatibleMethodOverride]  # narrower, typed per event

        @overload  # type: ignore[override]  # narrower, typed per event
        def once(self, event: Literal["data"], listener: DataListener) -> Self: ...
        @overload
        def once(
            self,
            event: Literal["connect", "end", "drain", "timeout", "secure"],
            listener: NoArgListener,
        ) -> Self: ...
        @overload
        def once(self, event: Literal["error"], listener: ErrorListener) -> Self: ...
        @overload
        def once(self, event: Literal["close"], listener: CloseListener) -> Self: ...
        @overload
        def once(self, event: Literal["lookup"], listener: LookupListener) -> Self: ...
        @overload
        def once(
            self,
            event: Literal["connectionAttempt", "connectionAttemptTimeout"],
            listener: AttemptListener,
        ) -> Self: ...
        @overload
        def once(
            self, event: Literal["connectionAttemptFailed"], listener: AttemptFailedListener
        ) -> Self: ...
        @overload
        def once(self, event: str) -> Callable[[_F], _F]: ...
        def once(self, event: str, listener: Any = None) -> Any: ...  # pyright: ignore[reportIncompatibleMethodOverride]  # narrower, typed per event
