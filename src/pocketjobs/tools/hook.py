"""PocketBase-style hook chains.

A :class:`Hook` holds an ordered list of handlers. :meth:`Hook.trigger` runs them as a
chain: each handler receives the event and decides whether (and when) the rest of the
chain runs by calling :meth:`Event.next`. Code placed after ``e.next()`` runs once the
rest of the chain has finished, so handlers can act as middleware.

Handlers run in ascending ``priority`` order (``-999`` before ``0``); handlers with equal
priority run in the order they were bound. Functions passed to ``trigger`` itself
("one-off" functions, typically the default action) are the last links of the chain and
only run if every handler before them called ``next()``.

Example::

    from dataclasses import dataclass

    from pocketjobs.tools.hook import Event, Hook

    @dataclass
    class SaveEvent(Event):
        name: str

    on_save: Hook[SaveEvent] = Hook()

    @on_save.handler(priority=-10)
    def log(e: SaveEvent) -> None:
        print("before", e.name)
        e.next()  # run the rest of the chain (including the default action)
        print("after", e.name)

    def save(e: SaveEvent) -> None:
        print("saving", e.name)
        e.next()

    on_save.trigger(SaveEvent("a"), save)
    # before a / saving a / after a
"""

from __future__ import annotations

import bisect
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Event", "Handler", "Hook"]


class Event:
    """Base class for everything that can be passed to :meth:`Hook.trigger`.

    Subclasses are ordinary classes or dataclasses (including frozen and ``slots=True``
    dataclasses) carrying the event data; they do not need to call
    ``super().__init__()``. The chain continuation is stored in a private attribute that
    has a class-level default and is only assigned on the instance by
    :meth:`Hook.trigger` (via ``object.__setattr__``, so frozen dataclasses work too).
    It is not a dataclass field, so it does not take part in ``__eq__``/``__repr__``.

    An event object may be triggered any number of times, sequentially or nested (a
    handler may trigger the same event through another hook), but it must not be
    triggered concurrently from several threads.
    """

    _pbh_next: Callable[[], None] | None = None

    def next(self) -> None:
        """Continue the chain this event is currently being triggered through.

        Runs the next handler (or, past the last handler, the next one-off function given
        to :meth:`Hook.trigger`) and returns once that link -- and everything it chose to
        run after it -- has returned. Exceptions raised by later links propagate out of
        this call unchanged.

        It is a no-op when the chain is exhausted or when the event is not currently
        being triggered. Each link is run at most once per trigger: calling ``next()``
        again after the rest of the chain has run does nothing.
        """
        fn = self._pbh_next
        if fn is not None:
            fn()


T = TypeVar("T", bound=Event)


@dataclass
class Handler(Generic[T]):
    """A hook handler description passed to :meth:`Hook.bind`.

    Attributes:
        fn: Called with the event. It must call ``event.next()`` to let the rest of
            the chain run; not calling it stops the chain.
        id: Unique handler id within a hook. Empty means "generate one on bind".
            Binding a handler whose id already exists replaces the old handler.
        priority: Lower values run first (``-999`` runs before ``0``). Handlers with
            equal priority run in insertion order.

    :meth:`Hook.bind` copies the values at bind time; mutating a ``Handler`` afterwards
    does not affect a hook it was already bound to.
    """

    fn: Callable[[T], None]
    id: str = ""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    """Internal, immutable snapshot of a bound handler."""

    priority: int
    seq: int
    id: str
    fn: Callable[[T], None]


def _sort_key(entry: _Entry[T]) -> tuple[int, int]:
    return (entry.priority, entry.seq)


def _set_next(event: Event, fn: Callable[[], None] | None) -> None:
    # object.__setattr__ so that frozen dataclass events can be triggered as well.
    object.__setattr__(event, "_pbh_next", fn)


class Hook(Generic[T]):
    """An ordered, thread-safe collection of handlers for events of type ``T``.

    All methods may be called from any thread and from inside running handlers
    (re-entrancy): the hook's lock is never held while user code runs. A running
    :meth:`trigger` works on a snapshot of the handlers taken when it started, so binding
    or unbinding during a trigger only affects later triggers.

    The handler list is kept sorted on :meth:`bind` (cost O(n) per bind) so that
    :meth:`trigger` does no sorting or copying beyond appending one-off functions.
    """

    def __init__(self) -> None:
        """Create an empty hook."""
        self._lock = threading.Lock()
        self._entries: list[_Entry[T]] = []  # sorted by (priority, seq)
        self._by_id: dict[str, _Entry[T]] = {}
        self._fns: tuple[Callable[[T], None], ...] = ()  # immutable trigger snapshot
        self._seq = 0

    def bind(self, handler: Handler[T]) -> str:
        """Add ``handler`` to the hook and return its id.

        If ``handler.id`` is empty, a unique id of the form ``"__pbh_<32 hex chars>"`` is
        generated (the passed ``Handler`` object is not modified). If a handler with the
        same id is already bound, it is replaced: the new handler's ``fn`` and
        ``priority`` are used, but it keeps the old handler's *insertion position*, i.e.
        among handlers of equal priority it runs where the replaced handler was
        originally inserted (like re-assigning an existing key of a ``dict``).

        Raises:
            TypeError: if ``handler.fn`` is not callable.
        """
        fn = handler.fn
        if not callable(fn):
            raise TypeError(f"handler fn must be callable, got {type(fn).__name__}")
        with self._lock:
            hid = handler.id
            if not hid:
                hid = "__pbh_" + uuid.uuid4().hex
                while hid in self._by_id:  # pragma: no cover - astronomically unlikely
                    hid = "__pbh_" + uuid.uuid4().hex
            old = self._by_id.get(hid)
            if old is not None:
                seq = old.seq
                self._remove_locked(old)
            else:
                seq = self._seq
                self._seq += 1
            entry = _Entry(priority=handler.priority, seq=seq, id=hid, fn=fn)
            bisect.insort(self._entries, entry, key=_sort_key)
            self._by_id[hid] = entry
            self._fns = tuple(e.fn for e in self._entries)
        return hid

    def bind_func(self, fn: Callable[[T], None]) -> str:
        """Bind ``fn`` with a generated id and priority ``0``; return the id.

        This is a plain call, not a decorator (it returns the id, not ``fn``). To bind
        with a decorator use :meth:`handler`. Equivalent to ``bind(Handler(fn))``.
        """
        return self.bind(Handler(fn))

    def handler(
        self, id: str = "", priority: int = 0
    ) -> Callable[[Callable[[T], None]], Callable[[T], None]]:
        """Return a decorator that binds the decorated function and returns it unchanged.

        Usage: ``@hook.handler()`` or ``@hook.handler(id="audit", priority=-10)``. The
        decorated name stays bound to the function itself, so it can still be called
        directly. ``id``/``priority`` have the same meaning as in :class:`Handler`; pass
        an explicit ``id`` if the handler must later be removed with :meth:`unbind`.
        """

        def decorator(fn: Callable[[T], None]) -> Callable[[T], None]:
            self.bind(Handler(fn, id=id, priority=priority))
            return fn

        return decorator

    def unbind(self, *ids: str) -> None:
        """Remove the handlers with the given ids. Unknown ids are ignored."""
        with self._lock:
            changed = False
            for hid in ids:
                entry = self._by_id.get(hid)
                if entry is not None:
                    self._remove_locked(entry)
                    changed = True
            if changed:
                self._fns = tuple(e.fn for e in self._entries)

    def unbind_all(self) -> None:
        """Remove all handlers."""
        with self._lock:
            self._entries = []
            self._by_id = {}
            self._fns = ()

    def length(self) -> int:
        """Return the number of bound handlers."""
        return len(self._fns)  # the snapshot bind/unbind replace whole: no lock to read it

    def trigger(self, event: T, *one_off_fns: Callable[[T], None]) -> None:
        """Run the handler chain for ``event``, followed by ``one_off_fns``.

        The chain is: bound handlers in ascending priority (ties in insertion order),
        then ``one_off_fns`` in the order given. The first link is called with
        ``event``; every link continues the chain by calling ``event.next()``; a link
        that does not call it stops the chain and later links do not run. After the last
        link, ``event.next()`` is a no-op.

        Any exception raised by a link propagates out of ``trigger`` unchanged (links
        that have not run yet do not run). The handler list is snapshotted at the start,
        so concurrent or nested ``bind``/``unbind`` calls do not affect this run.

        The event's previous chain continuation is saved and restored afterwards (also
        on error), so a handler may trigger the same event object through another hook
        (or the same one) and then continue its own chain with ``event.next()``.

        Each link adds a few stack frames, so chains are limited to a few hundred links
        by Python's recursion limit.
        """
        fns = self._fns  # an immutable snapshot, replaced whole under the lock
        if one_off_fns:
            fns = fns + one_off_fns
        n = len(fns)
        pos = 0

        def next_fn() -> None:
            nonlocal pos
            if pos < n:
                fn = fns[pos]
                pos += 1
                fn(event)

        prev = event._pbh_next
        _set_next(event, next_fn)
        try:
            next_fn()
        finally:
            _set_next(event, prev)

    def _remove_locked(self, entry: _Entry[T]) -> None:
        """Remove ``entry`` from the sorted list and the id index (lock must be held)."""
        i = bisect.bisect_left(self._entries, _sort_key(entry), key=_sort_key)
        del self._entries[i]
        del self._by_id[entry.id]
