"""Pipes: Node's ``readable.pipe(destination)``, built on the public event API.

How this works
--------------

A :class:`Pipe` joins one source to one destination with listeners, as
Node's ``Readable.prototype.pipe`` does (``lib/internal/streams/readable.js``):

* a ``'data'`` listener on the source writes each chunk to the destination
  (a ``str`` chunk with the source's encoding, so the bytes go through
  unchanged); when ``write()`` returns ``False`` the pipe *holds* the
  source: it marks itself as waiting and calls ``source.pause()`` --
  unless nothing is left queued (``write_queue_size`` is 0: the try-write
  gave every byte to the kernel), where there is nothing to wait for;
* while it holds the source, a ``'drain'`` listener on the destination
  clears that mark, removes itself, and once no pipe of the source waits
  any more (Node's ``awaitDrainWriters``) calls ``source.resume()``. The
  listener is there only while the pipe holds (Node adds it at the first
  hold), so a write that went out at once owes the pipe no ``'drain'``, and
  a proxy pays no pause, wake-up and resume per chunk (docs/behaviour.md,
  "pipe");
* the source's ``'end'`` ends the destination (unless ``end=False``) and
  removes the pipe; the destination's ``'close'`` removes it (Node's
  ``onclose``), as does the source's ``'close'`` (a pipe belongs to one
  connection of the source: the destination is not ended then).

:class:`Pipes` is what a source keeps (``StreamIO._pipes``): its pipes in
the order they were made, and Node's ``unpipe()`` rules: removing the last
destination pauses the source (Node's ``this.pause()``), and removing a pipe
that held the source lets it go (Node's ``cleanup()`` calling ``ondrain``).

The pipe adds no ``'error'`` listener to either stream, so an error stays
that stream's own (raised from its block if nobody listens); the
``'close'`` that follows every ``'error'`` is what removes the pipe. The
listeners only call ``write()``, ``end()``, ``pause()`` and ``resume()``,
which never emit, so a pipe emits nothing itself: no ``'pipe'`` or
``'unpipe'`` event (docs/behaviour.md, "pipe"). This module imports no Trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._errors import StreamStateError

if TYPE_CHECKING:
    from ._stream import Stream

__all__ = ["Pipe", "Pipes"]


@attrs.define(eq=False)
class Pipe:
    """One source-to-destination pipe and its listeners."""

    pipes: Pipes
    destination: Stream
    end: bool
    waiting: bool = False  # holds the source until the destination's 'drain'
    attached: bool = False

    def attach(self) -> None:
        """Add the listeners (the source's ``'data'`` first: the call that
        may refuse, while nothing else has changed)."""
        source, destination = self.pipes.source, self.destination
        source.on("data", self.on_data)
        source.on("end", self.on_end)
        source.on("close", self.on_source_close)
        destination.on("close", self.on_destination_close)
        self.attached = True

    def detach(self) -> None:
        """Remove the listeners; the pipe does nothing more."""
        source, destination = self.pipes.source, self.destination
        self.attached = False
        if self.waiting:
            destination.off("drain", self.on_drain)
        source.off("data", self.on_data)
        source.off("end", self.on_end)
        source.off("close", self.on_source_close)
        destination.off("close", self.on_destination_close)

    def hold(self) -> None:
        """Pause the source until the destination's ``'drain'``."""
        if not self.waiting:
            self.waiting = True
            self.destination.on("drain", self.on_drain)
        self.pipes.source.pause()

    # -- listeners -----------------------------------------------------------

    def on_data(self, chunk: bytes | str) -> None:
        if not self.attached:
            return  # removed earlier in this same emission
        source, destination = self.pipes.source, self.destination
        try:
            if isinstance(chunk, str):
                accepted = destination.write(chunk, source.encoding or "utf8")
            else:
                accepted = destination.write(chunk)
        except StreamStateError:
            # The destination's writable side is over (end(), destroy(), a
            # failure): Node unpipes at its 'finish' or 'close'.
            self.pipes.remove(self, pause=True)
            return
        if not accepted and destination.write_queue_size:
            self.hold()

    def on_drain(self) -> None:
        if self.attached and self.waiting:
            self.waiting = False
            self.destination.off("drain", self.on_drain)
            self.pipes.release()

    def on_end(self) -> None:
        if not self.attached:
            return
        if self.end:
            self.destination.end()  # does nothing on a stream already ended or closed
        self.pipes.remove(self, pause=False)

    def on_source_close(self, had_error: bool) -> None:
        if self.attached:
            self.pipes.remove(self, pause=False)

    def on_destination_close(self, had_error: bool) -> None:
        if self.attached:
            self.pipes.remove(self, pause=True)


@attrs.define(eq=False)
class Pipes:
    """The pipes of one source, in the order they were made."""

    source: Stream
    pipes: list[Pipe] = attrs.field(factory=list[Pipe])

    def add(self, destination: Stream, end: bool, *, input_over: bool) -> None:
        """``source.pipe(destination, end=end)``, arguments checked.

        *input_over*: the source's ``'end'`` has come (or is being emitted):
        as Node, the destination is ended at once (unless not *end*) and no
        pipe is made. Otherwise the source is resumed, as Node's ``pipe()``
        starts the flow, unless the destination's queue is already at its
        high-water mark: then the source waits for its ``'drain'``.

        Raises:
            StreamStateError: the source's ``on("data")`` refused (a pull
                read is waiting); nothing changed.
        """
        if input_over:
            if end:
                destination.end()
            return
        pipe = Pipe(self, destination, end)
        pipe.attach()
        self.pipes.append(pipe)
        if destination.write_queue_size >= destination.high_water_mark:
            pipe.hold()
        else:
            self.source.resume()

    def unpipe(self, destination: Stream | None) -> None:
        """``source.unpipe(destination)``: the first pipe to *destination*,
        or every pipe (``None``); nothing if there is none."""
        if destination is None:
            pipes, self.pipes = self.pipes, []
            if pipes:
                self.source.pause()
            for pipe in pipes:
                self._cleanup(pipe)
            return
        for pipe in self.pipes:
            if pipe.destination is destination:
                self.remove(pipe, pause=True)
                return

    def remove(self, pipe: Pipe, *, pause: bool) -> None:
        """Remove *pipe*; with *pause*, pause the source if no pipe is left
        (Node's ``unpipe()``; not at the source's own ``'end'`` or
        ``'close'``, where a pause would only carry over to its next
        connection)."""
        if pipe not in self.pipes:
            return
        self.pipes.remove(pipe)
        if pause and not self.pipes:
            self.source.pause()
        self._cleanup(pipe)

    def _cleanup(self, pipe: Pipe) -> None:
        waited = pipe.waiting
        pipe.detach()
        if waited:  # it held the source: let it go (Node's cleanup())
            pipe.waiting = False
            self.release()

    def release(self) -> None:
        """Resume the source once no pipe waits for a ``'drain'`` and
        someone still takes its ``'data'`` (Node's ``pipeOnDrain``)."""
        if any(pipe.waiting for pipe in self.pipes):
            return
        if self.source.listener_count("data"):
            self.source.resume()
