import time

import gevent
import pytest

from project.core import fanout
from project.core.caller import caller_scope
from project.core.deadline import Deadline
from project.core.fair_share import ClassSlots
from project.core.fanout import Leg, fan_out


def sleeper(seconds: float, value: object = "done"):
    def call(timeout: float) -> object:
        time.sleep(seconds)
        return value

    return call


def test_legs_run_concurrently_and_keep_order():
    """Ten 0.5 s legs finish in well under the 5 s they would take in series."""
    legs = [Leg(f"leg{i}", sleeper(0.5, i)) for i in range(10)]
    started = time.monotonic()
    results = fan_out(legs, deadline=Deadline(5), max_concurrency=100)
    assert time.monotonic() - started < 2.0
    assert [r.value for r in results] == list(range(10))
    assert {r.status for r in results} == {"ok"}
    assert all(450 <= r.elapsed_ms < 2000 for r in results)


def test_concurrency_is_bounded():
    """With max_concurrency=2, four 0.2 s legs take two rounds."""
    in_flight, peak = [0], [0]

    def call(timeout: float) -> None:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.2)
        in_flight[0] -= 1

    started = time.monotonic()
    fan_out([Leg("x", call) for _ in range(4)], deadline=Deadline(5), max_concurrency=2)
    assert peak[0] == 2
    assert time.monotonic() - started >= 0.38


def test_deadline_kills_slow_legs_and_returns_on_time():
    """Legs past the deadline are marked timeout and really stopped, not abandoned."""
    events: list[str] = []

    def slow(timeout: float) -> None:
        try:
            time.sleep(5)
            events.append("finished")
        finally:
            events.append("unwound")

    started = time.monotonic()
    results = fan_out(
        [Leg("fast", sleeper(0.05)), Leg("slow", slow)],
        deadline=Deadline(0.3),
        max_concurrency=10,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 0.8
    assert [r.status for r in results] == ["ok", "timeout"]
    assert events == ["unwound"]
    gevent.sleep(0.1)
    assert "finished" not in events


def test_leg_cap_below_deadline_times_out_that_leg_only():
    """A leg's own timeout cuts it even when the request deadline is far away."""
    results = fan_out(
        [Leg("capped", sleeper(1), timeout=0.1), Leg("free", sleeper(0.2))],
        deadline=Deadline(5),
        max_concurrency=10,
    )
    assert [r.status for r in results] == ["timeout", "ok"]
    assert results[0].elapsed_ms < 500


def test_errors_are_reported_per_leg():
    """An exception in one leg is that leg's error; the others still succeed."""

    def boom(timeout: float) -> None:
        raise ValueError("upstream said no")

    def own_timeout(timeout: float) -> None:
        raise TimeoutError("statement cancelled")

    results = fan_out(
        [Leg("ok", sleeper(0)), Leg("bad", boom), Leg("slow", own_timeout)],
        deadline=Deadline(1),
        max_concurrency=10,
    )
    assert [r.status for r in results] == ["ok", "error", "timeout"]
    assert results[1].error == "ValueError: upstream said no"
    assert results[2].as_dict()["error"] == "statement cancelled"


@pytest.mark.parametrize("budget", [0.0])
def test_expired_deadline_runs_nothing(budget):
    """With no time left, every leg is a timeout and none is called."""
    called = []
    results = fan_out([Leg("x", lambda t: called.append(t))], deadline=Deadline(budget))
    assert [r.status for r in results] == ["timeout"]
    assert called == []


def test_cancel_kills_the_legs_at_once():
    """Setting cancel stops every running leg before the deadline."""
    from gevent.event import Event

    cancel = Event()
    gevent.spawn_later(0.1, cancel.set)
    started = time.monotonic()
    results = fan_out(
        [Leg("slow", sleeper(5)), Leg("fast", sleeper(0))],
        deadline=Deadline(5),
        cancel=cancel,
    )
    assert time.monotonic() - started < 1.0
    assert [(r.status, r.error) for r in results] == [
        ("timeout", "cancelled"),
        ("ok", None),
    ]


def fan_out_as(client: str, traffic_class: str, legs: list[Leg], seconds: float):
    """``fan_out`` in a greenlet of its own, for ``client`` in ``traffic_class``."""

    def run():
        with caller_scope(client=client, traffic_class=traffic_class):
            return fan_out(legs, deadline=Deadline(seconds))

    return gevent.spawn(run)


def test_past_the_leg_slots_fan_outs_wait_without_spawning_their_legs(monkeypatch):
    """One client's sheddable fan-outs run at most three quarters of the
    worker's leg slots; the rest wait unspawned, and another client's critical
    fan-out finds a slot at once."""
    slots = ClassSlots(8)
    monkeypatch.setattr(fanout, "_leg_slots", slots, raising=False)
    peak = [0]

    def hog_leg(timeout: float) -> None:
        peak[0] = max(peak[0], fanout.legs_in_flight())
        time.sleep(0.2)

    hogs = [
        fan_out_as("hog", "sheddable", [Leg("h", hog_leg) for _ in range(10)], 2.0)
        for _ in range(4)
    ]
    gevent.sleep(0.05)
    started = time.monotonic()
    victim = fan_out_as("victim", "critical", [Leg("v", sleeper(0.05))], 2.0).get()
    assert time.monotonic() - started < 0.15
    assert [r.status for r in victim] == ["ok"]
    gevent.joinall(hogs)
    assert peak[0] <= 6
    assert all(r.status == "ok" for hog in hogs for r in hog.value)
    assert slots.in_use == 0


def test_legs_that_never_got_a_slot_say_so_and_leak_none(monkeypatch):
    """Legs still waiting for a slot at the deadline are reported unstarted;
    every slot is back afterwards, a killed leg's included."""
    slots = ClassSlots(1)
    monkeypatch.setattr(fanout, "_leg_slots", slots, raising=False)
    results = fan_out_as(
        "hog", "normal", [Leg(f"l{i}", sleeper(1.0)) for i in range(3)], 0.2
    ).get()
    assert [(r.status, r.error) for r in results] == [
        ("timeout", "killed at the request deadline"),
        ("timeout", "no free slot before the deadline"),
        ("timeout", "no free slot before the deadline"),
    ]
    assert slots.in_use == 0


def test_what_a_leg_sets_in_its_context_stays_its_own():
    """A leg narrowing its deadline changes neither its siblings' nor the
    request's; the request's own context variables (asgiref's storage) are not
    the legs'."""
    from asgiref.local import Local

    from project.core.deadline import activate, current_deadline, deadline_scope

    request_local = Local()
    request_local.value = "request's"
    request_deadline = Deadline(5)
    narrowed = Deadline(1)

    def narrowing(timeout: float) -> bool:
        activate(narrowed)
        gevent.sleep(0.01)
        return current_deadline() is narrowed

    def watching(timeout: float) -> tuple[bool, str | None]:
        gevent.sleep(0.02)
        return (
            current_deadline() is request_deadline,
            getattr(request_local, "value", None),
        )

    with deadline_scope(request_deadline):
        results = fan_out(
            [Leg("narrowing", narrowing), Leg("watching", watching)],
            deadline=request_deadline,
        )
        assert current_deadline() is request_deadline
    assert [r.value for r in results] == [True, (True, None)]
