"""Short event-loop turns while shedding: gevent's batch and the yield."""

import sys
from collections.abc import Iterator

import gevent
import pytest

from project.core import loop_turns


@pytest.fixture(autouse=True)
def long_turns() -> Iterator[None]:
    """Every test starts and ends with the default turns."""
    loop_turns.shorten(False)
    yield
    loop_turns.shorten(False)


def test_shorten_sets_gevent_s_batch_and_restores_it():
    """Shedding: a 1 ms batch; done: the interpreter's default again."""
    loop_turns.shorten(True)
    assert loop_turns.short()
    assert sys.getswitchinterval() == pytest.approx(loop_turns.SHEDDING_SWITCH_S)
    loop_turns.shorten(False)
    assert not loop_turns.short()
    assert sys.getswitchinterval() == pytest.approx(loop_turns.DEFAULT_SWITCH_S)


def test_yield_to_loop_yields_only_while_turns_are_short():
    """Short turns: the caller steps aside and others run first; otherwise
    it goes on at once (no switch per upstream call when nobody is refused)."""
    ran = []
    gevent.spawn(ran.append, "other")
    loop_turns.yield_to_loop()
    ran.append("caller")
    gevent.sleep(0)
    assert ran == ["caller", "other"]

    ran.clear()
    loop_turns.shorten(True)
    gevent.spawn(ran.append, "other")
    loop_turns.yield_to_loop()
    ran.append("caller")
    assert ran == ["other", "caller"]
