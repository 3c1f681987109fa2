"""The project's JSON helpers."""

import json
import math

from project.http.encoding import FiniteJSONEncoder


def test_non_finite_floats_become_null():
    """NaN and ±Infinity (not JSON) are written as null; the rest is unchanged."""
    value = {"a": [1.5, math.nan, {"b": math.inf}], "c": (-math.inf, "x"), "d": 2}
    text = FiniteJSONEncoder().encode(value)
    assert json.loads(text) == {"a": [1.5, None, {"b": None}], "c": [None, "x"], "d": 2}
    assert "NaN" not in text and "Infinity" not in text


def test_finite_values_are_encoded_as_django_does():
    """Without a non-finite float the encoding is Django's own."""
    value = {"when": "2026-01-01", "n": [1, 2.5]}
    assert json.loads(FiniteJSONEncoder().encode(value)) == value
