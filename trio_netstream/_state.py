"""The ready-state machine of a stream, as one table (h11 style).

Node's ``readyState`` has five public values. Internally a few more states
are needed to know what is still pending, and each maps onto one public
value:

============== ============= ==============================================
state          ready_state   meaning
============== ============= ==============================================
CLOSED         ``closed``    no connection; ``connect()`` is legal
OPENING        ``opening``   connecting; writes are queued
OPENING_ENDED  ``opening``   connecting, and ``end()`` was already called
OPEN           ``open``      both directions open
READ_ONLY      ``readOnly``  this side called ``end()``; still reading
WRITE_ONLY     ``writeOnly`` the peer ended; still writable
ENDED          ``closed``    both sides ended; flushing, then ``'close'``
DESTROYED      ``closed``    destroyed or failed; ``'close'`` is pending
============== ============= ==============================================

Every legal move is in :data:`TRANSITIONS`; everything else asks this module.
This module imports no Trio.
"""

from __future__ import annotations

import enum

from ._errors import StreamStateError

__all__ = [
    "CLOSING",
    "CONNECTING",
    "LIVE",
    "READING_OVER",
    "SENDING_EOF",
    "TRANSITIONS",
    "UPGRADABLE",
    "WRITABLE",
    "WRITE_ENDED",
    "Input",
    "State",
    "StateMachine",
]


class State(enum.Enum):
    CLOSED = "closed"
    OPENING = "opening"
    OPENING_ENDED = "opening"
    OPEN = "open"
    READ_ONLY = "readOnly"
    WRITE_ONLY = "writeOnly"
    ENDED = "closed"
    DESTROYED = "closed"

    # Several states share a public value; keep them distinct members.
    def __new__(cls, public: str) -> State:
        member = object.__new__(cls)
        member._value_ = len(cls.__members__)
        member.public = public  # type: ignore[attr-defined]  # set once, read via ready_state
        return member

    @property
    def ready_state(self) -> str:
        """The Node ``readyState`` string for this state."""
        return self.public  # type: ignore[attr-defined, no-any-return]  # set in __new__


class Input(enum.Enum):
    CONNECT = "connect()"  # the user starts a connection
    CONNECTED = "connected"  # the transport is up
    ADOPT = "adopt"  # an already connected transport (wrap(), a server's accept)
    END = "end()"  # this side ends its writable half
    PEER_END = "peer end"  # the peer's FIN (or close_notify) arrived
    DESTROY = "destroy()"  # destroy(), or a failure
    CLOSED = "closed"  # teardown finished; 'close' is about to be emitted


#: (state, input) -> next state. A pair that is not here is illegal.
TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.CLOSED, Input.CONNECT): State.OPENING,
    (State.CLOSED, Input.ADOPT): State.OPEN,
    (State.OPENING, Input.CONNECTED): State.OPEN,
    (State.OPENING, Input.END): State.OPENING_ENDED,
    (State.OPENING, Input.DESTROY): State.DESTROYED,
    (State.OPENING_ENDED, Input.CONNECTED): State.READ_ONLY,
    (State.OPENING_ENDED, Input.DESTROY): State.DESTROYED,
    (State.OPEN, Input.END): State.READ_ONLY,
    (State.OPEN, Input.PEER_END): State.WRITE_ONLY,
    (State.OPEN, Input.DESTROY): State.DESTROYED,
    (State.READ_ONLY, Input.PEER_END): State.ENDED,
    (State.READ_ONLY, Input.DESTROY): State.DESTROYED,
    (State.WRITE_ONLY, Input.END): State.ENDED,
    (State.WRITE_ONLY, Input.DESTROY): State.DESTROYED,
    (State.ENDED, Input.DESTROY): State.DESTROYED,
    (State.ENDED, Input.CLOSED): State.CLOSED,
    (State.DESTROYED, Input.CLOSED): State.CLOSED,
}

#: States in which write() queues bytes.
WRITABLE = frozenset({State.OPENING, State.OPEN, State.WRITE_ONLY})
#: States in which this side has ended (or lost) its writable half.
WRITE_ENDED = frozenset({State.OPENING_ENDED, State.READ_ONLY, State.ENDED, State.DESTROYED})
#: States in which the connection is not up yet.
CONNECTING = frozenset({State.OPENING, State.OPENING_ENDED})
#: States in which nothing more will be read.
READING_OVER = frozenset({State.CLOSED, State.WRITE_ONLY, State.ENDED, State.DESTROYED})
#: States in which the connection is up and this side's FIN is due.
SENDING_EOF = frozenset({State.READ_ONLY, State.ENDED})
#: States in which the connection is up and not yet closing.
LIVE = frozenset({State.OPEN, State.READ_ONLY, State.WRITE_ONLY, State.ENDED})
#: States in which the connection is closing ('close' is pending).
CLOSING = frozenset({State.ENDED, State.DESTROYED})
#: States in which set_secure() may start TLS.
UPGRADABLE = frozenset({State.OPENING, State.OPEN})


class StateMachine:
    """Holds one stream's state and applies inputs through :data:`TRANSITIONS`."""

    __slots__ = ("state",)

    def __init__(self, state: State = State.CLOSED) -> None:
        self.state = state

    @property
    def ready_state(self) -> str:
        return self.state.ready_state

    @property
    def connecting(self) -> bool:
        return self.state in CONNECTING

    @property
    def write_ended(self) -> bool:
        return self.state in WRITE_ENDED

    @property
    def reading_over(self) -> bool:
        return self.state in READING_OVER

    @property
    def sending_eof(self) -> bool:
        return self.state in SENDING_EOF

    @property
    def upgradable(self) -> bool:
        return self.state in UPGRADABLE

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def closing(self) -> bool:
        return self.state in CLOSING

    @property
    def destroyed(self) -> bool:
        return self.state is State.DESTROYED

    @property
    def half_open(self) -> bool:
        """The peer ended and this side may still write."""
        return self.state is State.WRITE_ONLY

    def can(self, event: Input) -> bool:
        return (self.state, event) in TRANSITIONS

    def apply(self, event: Input, call: str | None = None) -> State:
        """Move on *event*; raise :class:`StreamStateError` naming *call* if illegal."""
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            what = call or event.value
            raise StreamStateError(
                f"{what} is not allowed: the stream is {self.describe()}"
            ) from None
        return self.state

    def describe(self) -> str:
        """The state for messages: ``'readOnly'``, or ``'closed' (closing)``."""
        text = repr(self.state.ready_state)
        if self.state in CLOSING:
            text += " (closing)"
        return text
