import pytest

from project.http.errors import ApiError
from project.http.params import int_param


@pytest.mark.parametrize(
    "raw, expected", [("0", 0), ("42", 42), ("-5", -5), ("+7", 7), (" 9 ", 9)]
)
def test_accepts_plain_integers(raw, expected):
    """Returns the integer for plain base-10 input inside the range."""
    assert int_param({"n": raw}, "n", minimum=-10, maximum=100) == expected


@pytest.mark.parametrize(
    "raw", ["abc", "1.5", "1e3", "1_000", "", "٣", "0x10", "--1", "9" * 30]
)
def test_rejects_non_integers(raw):
    """Raises a 400 naming the parameter for anything but a plain integer."""
    values = {"n": raw}
    with pytest.raises(ApiError) as caught:
        int_param(values, "n", minimum=-10, maximum=10**40)
    assert caught.value.status == 400
    assert caught.value.extra["param"] == "n"


@pytest.mark.parametrize("raw", ["-11", "101"])
def test_rejects_out_of_range(raw):
    """Raises a 400 that states the allowed range."""
    with pytest.raises(ApiError, match="between -10 and 100") as caught:
        int_param({"n": raw}, "n", minimum=-10, maximum=100)
    assert caught.value.extra == {"param": "n", "value": int(raw)}


def test_missing_uses_default_or_fails():
    """Uses the default when missing; without one, says the parameter is required."""
    assert int_param({}, "n", minimum=0, maximum=5, default=3) == 3
    with pytest.raises(ApiError, match="n is required"):
        int_param({}, "n", minimum=0, maximum=5)
