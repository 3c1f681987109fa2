"""Strict parsing of client-supplied integers; every failure names the parameter.

The one integer parser of the service: query parameters, the deadline header
and the aggregation registry's own integers all go through it.
"""

from collections.abc import Mapping

from .errors import ApiError

# Longer than any int64: refused before int() (which is quadratic in the digit
# count and refuses more than 4,300 digits with a ValueError of its own).
MAX_INT_DIGITS = 19
NOT_AN_INTEGER = "must be an integer"


def strict_int(raw: str) -> int | None:
    """``raw`` as a plain base-10 integer (optional sign, ASCII digits, at most
    19 of them, surrounding spaces allowed), or None."""
    text = raw.strip()
    # int() alone would accept "1_000", " 7 " and non-ASCII digits.
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_INT_DIGITS:
        return None
    return int(text)


def out_of_range(value: float, minimum: float, maximum: float) -> str | None:
    """What is wrong with ``value`` outside ``[minimum, maximum]``; None if inside."""
    if minimum <= value <= maximum:
        return None
    return f"must be between {minimum} and {maximum}"


def checked_int(raw: str, name: str, *, minimum: int, maximum: int) -> int:
    """``raw`` as an int in ``[minimum, maximum]``, or a 400 naming ``name``."""
    value = strict_int(raw)
    if value is None:
        raise ApiError(f"{name} {NOT_AN_INTEGER}", param=name, value=raw[:100])
    problem = out_of_range(value, minimum, maximum)
    if problem:
        raise ApiError(f"{name} {problem}", param=name, value=value)
    return value


def single_value(values: Mapping[str, str], name: str) -> str | None:
    """The one value of ``name`` (a QueryDict's last one is not "the" value):
    a 400 when the parameter is repeated."""
    getlist = getattr(values, "getlist", None)
    if getlist is not None and len(getlist(name)) > 1:
        raise ApiError(f"{name} must be given once", param=name)
    return values.get(name)


def int_param(
    values: Mapping[str, str],
    name: str,
    *,
    minimum: int,
    maximum: int,
    default: int | None = None,
) -> int:
    """Return ``values[name]`` as an int in ``[minimum, maximum]``.

    Raises ApiError (400, ``param=name``) when it is missing without a default,
    repeated, not a plain base-10 integer, or out of range.
    """
    raw = single_value(values, name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(f"{name} is required", param=name)
        return default
    return checked_int(raw, name, minimum=minimum, maximum=maximum)
