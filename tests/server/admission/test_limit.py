"""The adaptive limit's arithmetic."""

import pytest

from project.server.admission.limit import AdaptiveLimit, LimitConfig


def test_starts_at_the_maximum():
    """A fresh worker admits up to its maximum until congestion shows."""
    assert AdaptiveLimit(LimitConfig(minimum=4, maximum=1000)).value == 1000


def test_congestion_cuts_below_the_busiest_in_flight_count():
    """Congested: the limit drops to backoff x the peak in flight, not x itself."""
    limit = AdaptiveLimit(LimitConfig(minimum=4, maximum=1000, backoff=0.9))
    assert limit.update(congested=True, binding=True, peak_in_flight=50) == 45
    assert limit.update(congested=True, binding=True, peak_in_flight=45) == 40
    # A peak above the limit (it was just lowered) cuts from the limit.
    assert limit.update(congested=True, binding=True, peak_in_flight=300) == 36


def test_congestion_never_goes_below_the_minimum():
    """Repeated congestion settles at the minimum."""
    limit = AdaptiveLimit(LimitConfig(minimum=4, maximum=100))
    for _ in range(100):
        limit.update(congested=True, binding=True, peak_in_flight=0)
    assert limit.value == 4


def test_binding_without_congestion_grows_by_a_fraction_up_to_the_maximum():
    """Binding and not congested: +10 % (at least 1) per interval, capped."""
    limit = AdaptiveLimit(LimitConfig(minimum=4, maximum=30, growth=0.1))
    limit.update(congested=True, binding=True, peak_in_flight=10)  # -> 9
    assert limit.update(congested=False, binding=True, peak_in_flight=9) == 10
    assert limit.update(congested=False, binding=True, peak_in_flight=10) == 11
    for _ in range(50):
        limit.update(congested=False, binding=True, peak_in_flight=30)
    assert limit.value == 30


def test_neither_congested_nor_binding_leaves_it_alone():
    """No evidence either way: the limit stays where it is."""
    limit = AdaptiveLimit(LimitConfig(minimum=4, maximum=100))
    limit.update(congested=True, binding=True, peak_in_flight=20)
    assert limit.update(congested=False, binding=False, peak_in_flight=3) == 18


def test_recovers_from_the_minimum_to_the_maximum_within_seconds():
    """Growth is multiplicative: minimum to 1,000 in under 8 s of 100 ms intervals
    (one step at a time would take 100 s)."""
    limit = AdaptiveLimit(LimitConfig(minimum=4, maximum=1000))
    for _ in range(100):
        limit.update(congested=True, binding=True, peak_in_flight=0)
    intervals = 0
    while limit.value < 1000:
        limit.update(congested=False, binding=True, peak_in_flight=limit.value)
        intervals += 1
    assert intervals <= 80


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minimum": 0}, "minimum"),
        ({"minimum": 10, "maximum": 5}, "minimum"),
        ({"backoff": 1.0}, "backoff"),
        ({"growth": 0.0}, "growth"),
    ],
)
def test_bad_bounds_are_refused(kwargs, message):
    """Impossible bounds raise ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        LimitConfig(**kwargs)


@pytest.mark.parametrize(("piling_up", "expected"), [(False, 97), (True, 52)])
def test_half_of_it_in_flight_grows_it_unless_work_piles_up(piling_up, expected):
    """Not binding, 48 in flight under 52: in use, it grows until the peak is
    under half of it (Netflix's AIMDLimit rule); while work piles up it stays,
    left to the caps."""
    limit = AdaptiveLimit(LimitConfig(minimum=4, maximum=1000, growth=0.1))
    limit.update(congested=False, binding=False, peak_in_flight=0, cap=52)
    for _ in range(20):
        limit.update(
            congested=False, binding=False, peak_in_flight=48, piling_up=piling_up
        )
    assert limit.value == expected
