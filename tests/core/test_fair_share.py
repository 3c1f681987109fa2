"""Slots shared out by client (the bulkhead's) and by class and client (the
outbound pools')."""

import gevent
import pytest

from project.core.caller import Caller
from project.core.fair_share import ClassSlots, ClientShares
from project.core.resilience import Bulkhead, BulkheadConfig


def take(shares: ClientShares, client: str, n: int) -> int:
    """Try ``n`` slots for ``client``; how many it got."""
    return sum(shares.try_take(client) for _ in range(n))


def test_a_client_alone_gets_three_quarters():
    """A demanding client alone gets most of the slots, not all."""
    shares = ClientShares(100)
    assert take(shares, "heavy", 200) == 75


def test_a_newcomer_finds_a_slot_while_one_client_holds_its_most():
    """The reserve is there for a client below its share."""
    shares = ClientShares(100)
    take(shares, "heavy", 200)
    assert take(shares, "light", 5) == 5
    assert shares.in_use == 80


def test_a_heavy_client_drains_to_its_share_while_others_hold_slots():
    """Once another client holds slots, the heavy one takes again only while
    more than the reserve is free; the other fills up to its share."""
    shares = ClientShares(100)
    take(shares, "heavy", 200)
    take(shares, "other", 1)
    for _ in range(40):  # the heavy client's calls end one by one...
        shares.give_back("heavy")
        take(shares, "heavy", 1)  # ...and it asks again at once
        take(shares, "other", 1)  # so does the other
    assert shares.held["other"] >= shares.fair_share("other") == 37
    assert shares.held["heavy"] <= 75 - 37 + 1
    # Somebody new still gets in.
    assert take(shares, "third", 1) == 1


def test_a_client_s_last_slot_forgets_it():
    shares = ClientShares(4)
    take(shares, "a", 2)
    shares.give_back("a")
    shares.give_back("a")
    assert shares.held == {} and shares.in_use == 0


def test_the_bulkhead_sheds_by_client():
    """One client cannot fill the bulkhead: another one's call gets a slot."""
    bulkhead = Bulkhead(BulkheadConfig(limit=8))
    assert [bulkhead.try_acquire("heavy") for _ in range(8)].count(True) == 6
    assert bulkhead.shed == 2
    assert bulkhead.try_acquire("light")
    assert bulkhead.in_use == 7


CRITICAL = Caller("a", "critical")
SHEDDABLE = Caller("b", "sheddable")


def holder(slots: ClassSlots, caller: Caller, order: list[str], label: str):
    """A greenlet that takes a slot, notes ``label``, and keeps the slot."""

    def run() -> None:
        slots.acquire(caller)
        order.append(label)

    return gevent.spawn(run)


def test_sheddable_callers_leave_a_quarter_of_the_connections():
    """Eight slots: sheddable callers hold six at most; critical ones take the
    rest at once."""
    slots = ClassSlots(8)
    order: list[str] = []
    flood = [holder(slots, SHEDDABLE, order, "s") for _ in range(20)]
    gevent.sleep(0)
    assert slots.held["sheddable"] == 6 and slots.waiting() == 14
    critical = [holder(slots, CRITICAL, order, "c") for _ in range(2)]
    gevent.sleep(0)
    assert order.count("c") == 2 and all(g.dead for g in critical)
    gevent.killall(flood)


def test_a_freed_slot_goes_to_the_best_class_first():
    """Every slot taken; a critical caller queued after 10 sheddable ones gets
    the first slot freed."""
    slots = ClassSlots(4)
    order: list[str] = []
    for _ in range(4):
        slots.acquire(Caller("n", "normal"))
    waiting = [holder(slots, SHEDDABLE, order, "s") for _ in range(10)]
    gevent.sleep(0)
    waiting.append(holder(slots, CRITICAL, order, "c"))
    gevent.sleep(0)
    slots.release(Caller("n", "normal"))
    gevent.sleep(0)
    assert order == ["c"]
    gevent.killall(waiting)


def test_waiting_clients_of_a_class_take_turns():
    """One slot; client a queued 5 calls before b queued 1: b's is served second."""
    slots = ClassSlots(1)
    order: list[str] = []
    slots.acquire(Caller("x", "normal"))
    greenlets = [holder(slots, Caller("a", "normal"), order, "a") for _ in range(5)]
    gevent.sleep(0)
    greenlets.append(holder(slots, Caller("b", "normal"), order, "b"))
    gevent.sleep(0)
    slots.release(Caller("x", "normal"))
    for _ in range(3):
        gevent.sleep(0)
        slots.release(Caller("a" if order[-1] == "a" else "b", "normal"))
    gevent.sleep(0)
    assert order[:3] == ["a", "b", "a"]
    gevent.killall(greenlets)


def test_a_waiter_cut_by_its_timeout_leaves_and_passes_on_a_granted_slot():
    """A waiter timing out leaves the line; one granted a slot as it was
    interrupted hands the slot to the next."""
    slots = ClassSlots(1)
    owner = Caller("x", "normal")
    slots.acquire(owner)
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.01):
        slots.acquire(Caller("a", "normal"))
    assert slots.waiting() == 0

    order: list[str] = []
    first = holder(slots, Caller("a", "normal"), order, "a")
    second = holder(slots, Caller("b", "normal"), order, "b")
    gevent.sleep(0)
    first.kill(block=False)  # lands after the grant below, before a runs
    slots.release(owner)
    gevent.sleep(0.01)
    assert order == ["b"] and slots.in_use == 1
    gevent.killall([first, second])
