"""The settings an operator may set, declared once per topic, read in one loop.

Each topic module lists its knobs (``Knob``); :func:`read` validates every one
against the environment (``.env`` loaded into it, the OS environment winning)
and returns the values; a wrong value stops the service with a
:class:`KnobError` naming the key and the problem. ``settings/base.py``,
``settings/production.py`` and ``gunicorn.conf.py`` read their values here, and
``python -m settings.docs`` writes ``.env.template`` and README's table from
the same declarations.

Stdlib and django-environ only: gunicorn's master imports it without Django.
"""

from collections.abc import Mapping
from typing import Any

from . import (
    admission,
    aggregation,
    cache,
    database,
    demo,
    observability,
    outbound,
    security,
    server,
)
from .knob import REQUIRED, Kind, Knob, KnobError
from .removed import REMOVED

# In the order .env.template and README list them.
GROUPS = (
    security,
    server,
    database,
    outbound,
    admission,
    cache,
    aggregation,
    observability,
    demo,
)
KNOBS: tuple[Knob, ...] = tuple(knob for group in GROUPS for knob in group.KNOBS)

__all__ = ["GROUPS", "KNOBS", "REMOVED", "REQUIRED", "Kind", "Knob", "KnobError"]


def refuse_removed(env: Mapping[str, str]) -> None:
    """Stop on any removed name in ``env``, saying what replaced it."""
    present = [name for name in REMOVED if name in env]
    if present:
        raise KnobError(
            "; ".join(
                f"{name} is no longer a setting: {REMOVED[name]}" for name in present
            )
        )


def read(env: Mapping[str, str], *, production: bool = False) -> dict[str, Any]:
    """Every knob's value from ``env``; an empty value means the default.

    ``production`` applies production's defaults and its required keys.
    Raises :class:`KnobError` on a removed name or a value that is wrong.
    """
    refuse_removed(env)
    values: dict[str, Any] = {}
    for knob in KNOBS:
        raw = env.get(knob.name, "").strip()
        default = (
            knob.production if production and knob.has_production else knob.default
        )
        if not raw and knob.name in env and knob.has_empty:
            values[knob.name] = knob.empty
        elif not raw:
            if default is REQUIRED:
                raise KnobError(
                    f"Set the {knob.name} environment variable "
                    "(production has no default)"
                )
            values[knob.name] = default
        else:
            values[knob.name] = knob.parse(raw)
    return values
