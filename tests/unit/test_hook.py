"""Unit tests for pocketjobs.tools.hook (PocketBase hook chain semantics)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketjobs.tools.hook import Event, Handler, Hook


@dataclass
class Ev(Event):
    """Test event recording which links ran."""

    log: list[str] = field(default_factory=list)


def rec(name: str, *, call_next: bool = True) -> Callable[[Ev], None]:
    """A link that appends ``name`` to the log and (optionally) continues the chain."""

    def fn(e: Ev) -> None:
        e.log.append(name)
        if call_next:
            e.next()

    return fn


def test_order_by_priority_then_insertion() -> None:
    hook: Hook[Ev] = Hook()
    hook.bind(Handler(rec("a0")))
    hook.bind(Handler(rec("b5"), priority=5))
    hook.bind(Handler(rec("c-999"), priority=-999))
    hook.bind(Handler(rec("d0")))
    hook.bind(Handler(rec("e5"), priority=5))
    hook.bind(Handler(rec("f-1"), priority=-1))
    e = Ev()
    hook.trigger(e)
    assert e.log == ["c-999", "f-1", "a0", "d0", "b5", "e5"]


def test_bind_returns_given_or_generated_unique_ids() -> None:
    hook: Hook[Ev] = Hook()
    h = Handler(rec("x"))
    id1 = hook.bind(h)
    id2 = hook.bind(Handler(rec("y")))
    id3 = hook.bind_func(rec("z"))
    assert h.id == ""  # caller's Handler object is not modified
    assert len({id1, id2, id3}) == 3
    assert all(i.startswith("__pbh_") for i in (id1, id2, id3))
    assert hook.bind(Handler(rec("w"), id="mine")) == "mine"
    assert hook.length() == 4


def test_same_id_replaces_keeping_position_and_new_priority() -> None:
    hook: Hook[Ev] = Hook()
    hook.bind(Handler(rec("a"), id="a"))
    hook.bind(Handler(rec("b"), id="b"))
    hook.bind(Handler(rec("c"), id="c"))
    # Same priority: replacement keeps the old insertion position.
    hook.bind(Handler(rec("a2"), id="a"))
    assert hook.length() == 3
    e = Ev()
    hook.trigger(e)
    assert e.log == ["a2", "b", "c"]
    # New priority is used.
    hook.bind(Handler(rec("a3"), id="a", priority=1))
    hook.bind(Handler(rec("c2"), id="c", priority=-1))
    e = Ev()
    hook.trigger(e)
    assert e.log == ["c2", "b", "a3"]
    assert hook.length() == 3


def test_unbind_unbind_all_and_length() -> None:
    hook: Hook[Ev] = Hook()
    assert hook.length() == 0
    ia = hook.bind_func(rec("a"))
    hook.bind(Handler(rec("b"), id="b"))
    hook.bind(Handler(rec("c"), id="c"))
    assert hook.length() == 3
    hook.unbind(ia, "c", "missing")
    assert hook.length() == 1
    e = Ev()
    hook.trigger(e)
    assert e.log == ["b"]
    hook.unbind()  # no ids: no-op
    assert hook.length() == 1
    hook.unbind_all()
    assert hook.length() == 0
    e = Ev()
    hook.trigger(e, rec("default"))
    assert e.log == ["default"]
    # A removed id can be bound again.
    hook.bind(Handler(rec("c-again"), id="c"))
    assert hook.length() == 1


def test_handler_not_calling_next_stops_chain() -> None:
    hook: Hook[Ev] = Hook()
    hook.bind_func(rec("a"))
    hook.bind_func(rec("stop", call_next=False))
    hook.bind_func(rec("c"))
    e = Ev()
    hook.trigger(e, rec("default"))
    assert e.log == ["a", "stop"]


def test_exception_propagates_and_later_links_do_not_run() -> None:
    class Boom(Exception):
        pass

    def boom(e: Ev) -> None:
        e.log.append("boom")
        raise Boom("x")

    hook: Hook[Ev] = Hook()
    after: list[str] = []

    def outer(e: Ev) -> None:
        e.log.append("outer")
        try:
            e.next()
        finally:
            after.append("outer-finally")

    hook.bind_func(outer)
    hook.bind_func(boom)
    hook.bind_func(rec("later"))
    e = Ev()
    with pytest.raises(Boom, match="x") as info:
        hook.trigger(e, rec("default"))
    assert type(info.value) is Boom
    assert e.log == ["outer", "boom"]
    assert after == ["outer-finally"]
    # The event's chain state is reset after the error.
    e.next()
    assert e.log == ["outer", "boom"]


def test_exception_in_one_off_propagates() -> None:
    hook: Hook[Ev] = Hook()
    hook.bind_func(rec("a"))

    def bad(e: Ev) -> None:
        raise ValueError("default failed")

    e = Ev()
    with pytest.raises(ValueError, match="default failed"):
        hook.trigger(e, bad, rec("never"))
    assert e.log == ["a"]


def test_middleware_before_and_after_order() -> None:
    def mw(name: str) -> Callable[[Ev], None]:
        def fn(e: Ev) -> None:
            e.log.append(f"{name}:before")
            e.next()
            e.log.append(f"{name}:after")

        return fn

    hook: Hook[Ev] = Hook()
    hook.bind(Handler(mw("inner"), priority=1))
    hook.bind(Handler(mw("outer"), priority=-1))
    e = Ev()
    hook.trigger(e, rec("default"))
    assert e.log == [
        "outer:before",
        "inner:before",
        "default",
        "inner:after",
        "outer:after",
    ]


def test_one_off_fns_run_last_in_given_order() -> None:
    hook: Hook[Ev] = Hook()
    hook.bind(Handler(rec("h1"), priority=1000))
    hook.bind(Handler(rec("h0")))
    e = Ev()
    hook.trigger(e, rec("o1"), rec("o2"), rec("o3"))
    assert e.log == ["h0", "h1", "o1", "o2", "o3"]
    # A one-off fn that does not call next stops the remaining one-off fns.
    e = Ev()
    hook.trigger(e, rec("o1", call_next=False), rec("o2"))
    assert e.log == ["h0", "h1", "o1"]


def test_one_off_fns_only_run_when_chain_reaches_them() -> None:
    hook: Hook[Ev] = Hook()
    hook.bind_func(rec("gate", call_next=False))
    e = Ev()
    hook.trigger(e, rec("default"))
    assert e.log == ["gate"]


def test_trigger_without_handlers_runs_one_offs_and_next_past_end_is_noop() -> None:
    hook: Hook[Ev] = Hook()
    e = Ev()

    def last(ev: Ev) -> None:
        ev.log.append("last")
        ev.next()
        ev.next()

    hook.trigger(e, last)
    assert e.log == ["last"]
    hook.trigger(e)  # nothing at all: fine
    assert e.log == ["last"]


def test_next_outside_trigger_is_noop() -> None:
    e = Ev()
    e.next()
    assert e.log == []
    Event().next()


def test_next_called_twice_does_not_rerun_links() -> None:
    hook: Hook[Ev] = Hook()

    def twice(e: Ev) -> None:
        e.next()
        e.next()

    hook.bind_func(twice)
    hook.bind_func(rec("b"))
    e = Ev()
    hook.trigger(e, rec("default"))
    assert e.log == ["b", "default"]


def test_bind_and_unbind_during_trigger_do_not_affect_running_trigger() -> None:
    hook: Hook[Ev] = Hook()

    def binder(e: Ev) -> None:
        e.log.append("binder")
        hook.bind(Handler(rec("new-first"), priority=-100))
        hook.bind(Handler(rec("new-last"), priority=100))
        hook.unbind("victim")
        e.next()

    hook.bind(Handler(binder, id="binder"))
    hook.bind(Handler(rec("victim"), id="victim"))
    e = Ev()
    hook.trigger(e)
    assert e.log == ["binder", "victim"]
    assert hook.length() == 3
    e = Ev()
    hook.unbind("binder")
    hook.trigger(e)
    assert e.log == ["new-first", "new-last"]


def test_concurrent_binds_from_threads_all_land() -> None:
    hook: Hook[Ev] = Hook()
    n_threads, per_thread = 8, 200
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    ids: list[list[str]] = [[] for _ in range(n_threads)]

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                # Handlers stop the chain so concurrent triggers stay shallow.
                fn = rec("x", call_next=False)
                if i % 2:
                    ids[t].append(hook.bind(Handler(fn, id=f"t{t}-{i}", priority=i % 7)))
                else:
                    ids[t].append(hook.bind_func(fn))
                if i % 10 == 0:
                    hook.trigger(Ev())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    all_ids = [i for per in ids for i in per]
    assert len(set(all_ids)) == n_threads * per_thread
    assert hook.length() == n_threads * per_thread
    hook.unbind(*all_ids)
    assert hook.length() == 0


def test_moderately_long_chain() -> None:
    hook: Hook[Ev] = Hook()
    for i in range(150):
        hook.bind(Handler(rec(str(i)), priority=-i))
    e = Ev()
    hook.trigger(e, rec("default"))
    assert e.log == [*(str(i) for i in reversed(range(150))), "default"]


def test_nested_trigger_of_same_event_via_two_hooks() -> None:
    outer: Hook[Ev] = Hook()
    inner: Hook[Ev] = Hook()

    def outer_first(e: Ev) -> None:
        e.log.append("outer1:before")
        inner.trigger(e, rec("inner-default"))
        e.log.append("outer1:after-inner")
        e.next()
        e.log.append("outer1:after")

    inner.bind_func(rec("inner1"))
    inner.bind_func(rec("inner2"))
    outer.bind_func(outer_first)
    outer.bind_func(rec("outer2"))
    e = Ev()
    outer.trigger(e, rec("outer-default"))
    assert e.log == [
        "outer1:before",
        "inner1",
        "inner2",
        "inner-default",
        "outer1:after-inner",
        "outer2",
        "outer-default",
        "outer1:after",
    ]
    # After the outer trigger the event is idle again and can be re-triggered.
    e.next()
    e.log.clear()
    inner.trigger(e)
    assert e.log == ["inner1", "inner2"]


def test_nested_trigger_of_same_event_through_same_hook() -> None:
    hook: Hook[Ev] = Hook()
    depth = [0]

    def recurse(e: Ev) -> None:
        depth[0] += 1
        e.log.append(f"in{depth[0]}")
        if depth[0] < 3:
            hook.trigger(e)
        e.next()

    hook.bind_func(recurse)
    hook.bind_func(rec("tail"))
    e = Ev()
    hook.trigger(e)
    assert e.log == ["in1", "in2", "in3", "tail", "tail", "tail"]


def test_frozen_and_slots_dataclass_events() -> None:
    @dataclass(frozen=True)
    class Frozen(Event):
        name: str

    @dataclass(slots=True)
    class Slotted(Event):
        name: str

    seen: list[str] = []

    def on_frozen(e: Frozen) -> None:
        seen.append(e.name)
        e.next()

    def on_slotted(e: Slotted) -> None:
        seen.append(e.name)
        e.next()

    fh: Hook[Frozen] = Hook()
    fh.bind_func(on_frozen)
    fh.trigger(Frozen("f"), lambda e: seen.append("f-default"))
    sh: Hook[Slotted] = Hook()
    sh.bind_func(on_slotted)
    sh.trigger(Slotted("s"), lambda e: seen.append("s-default"))
    assert seen == ["f", "f-default", "s", "s-default"]
    # The chain slot is not a dataclass field.
    assert Frozen("a") == Frozen("a")
    assert repr(Frozen("a")) == "test_frozen_and_slots_dataclass_events.<locals>.Frozen(name='a')"


def test_handler_decorator_returns_function_unchanged() -> None:
    hook: Hook[Ev] = Hook()

    def original(e: Ev) -> None:
        e.log.append("deco")
        e.next()

    decorated = hook.handler()(original)
    assert decorated is original

    @hook.handler(id="named", priority=-5)
    def named(e: Ev) -> None:
        e.log.append("named")
        e.next()

    assert callable(named)
    assert named.__name__ == "named"
    assert hook.length() == 2
    e = Ev()
    hook.trigger(e)
    assert e.log == ["named", "deco"]
    hook.unbind("named")
    assert hook.length() == 1
    # The function can still be called directly.
    e = Ev()
    named(e)
    assert e.log == ["named"]


def test_bind_rejects_non_callable() -> None:
    hook: Hook[Ev] = Hook()
    with pytest.raises(TypeError, match="callable"):
        hook.bind(Handler(42))  # type: ignore[arg-type]
    assert hook.length() == 0


_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("bind"),
            st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e"])),
            st.integers(min_value=-3, max_value=3),
        ),
        st.tuples(st.just("unbind"), st.sampled_from(["a", "b", "c", "d", "e"]), st.just(0)),
    ),
    max_size=40,
)


@given(_ops)
def test_property_order_is_stable_sort_by_priority(ops: list[tuple[str, str | None, int]]) -> None:
    hook: Hook[Ev] = Hook()
    # Model: dict insertion order == hook insertion order (re-assigning an existing key
    # keeps its position, matching the documented replacement semantics).
    model: dict[str, tuple[int, str]] = {}
    for n, (op, hid, prio) in enumerate(ops):
        if op == "bind":
            label = f"{hid}#{n}"
            got = hook.bind(Handler(rec(label), id=hid or "", priority=prio))
            if hid is not None:
                assert got == hid
            model[got] = (prio, label)
        else:
            assert hid is not None
            hook.unbind(hid)
            model.pop(hid, None)
    assert hook.length() == len(model)
    expected = [label for prio, label in sorted(model.values(), key=lambda pl: pl[0])]
    e = Ev()
    hook.trigger(e, rec("one-off"))
    assert e.log == [*expected, "one-off"]
