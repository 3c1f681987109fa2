"""Validation of client-supplied values; every failure is a 400 naming the parameter."""

from collections.abc import Mapping

from .errors import ApiError


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
    not a plain base-10 integer, or out of range.
    """
    raw = values.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(f"{name} is required", param=name)
        return default
    text = raw.strip()
    # int() alone would accept "1_000", " 7 " and non-ASCII digits.
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise ApiError(f"{name} must be an integer", param=name, value=raw[:100])
    value = int(text)
    if not minimum <= value <= maximum:
        raise ApiError(
            f"{name} must be between {minimum} and {maximum}",
            param=name,
            value=value,
        )
    return value
