"""The current caller: scopes, fan-out legs, token-derived keys."""

import pytest

from project.core.caller import (
    ANONYMOUS,
    Caller,
    caller_or_anonymous,
    caller_scope,
    current_caller,
    token_client,
)
from project.core.deadline import Deadline
from project.core.fanout import Leg, fan_out


def test_scope_sets_and_restores_the_caller():
    """Nested scopes: the inner caller inside, the outer one back after it."""
    assert current_caller() is None
    assert caller_or_anonymous() == ANONYMOUS
    with caller_scope(client="10.0.0.1", traffic_class="critical") as outer:
        assert current_caller() == outer == Caller("10.0.0.1", "critical")
        with caller_scope(client="10.0.0.2", traffic_class="sheddable"):
            assert current_caller() == Caller("10.0.0.2", "sheddable")
        assert current_caller() == outer
    assert current_caller() is None


def test_an_unknown_traffic_class_is_refused():
    with pytest.raises(ValueError, match="traffic class"):
        with caller_scope(client="x", traffic_class="urgent"):  # type: ignore[arg-type]
            pass


def test_fan_out_legs_work_for_the_request_s_caller():
    """Each leg (a greenlet of its own, with an empty context) sees the caller."""
    with caller_scope(client="10.0.0.7", traffic_class="sheddable"):
        results = fan_out(
            [Leg(f"leg{i}", lambda _t: current_caller()) for i in range(3)],
            deadline=Deadline(2),
        )
    assert {result.value for result in results} == {Caller("10.0.0.7", "sheddable")}


def test_a_token_s_key_is_short_stable_and_not_the_token():
    token = "live-token-0123456789"
    key = token_client(token)
    assert key == token_client(token) != token_client(token + "x")
    assert key.startswith("token:") and len(key) == len("token:") + 12
    assert token not in key
