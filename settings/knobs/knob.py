"""One knob's declaration: its type, defaults, bounds and meaning."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import environ


class KnobError(ValueError):
    """A setting is wrong or removed; the message names it."""


class _Required:
    """The production default of a key production has no default for."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
_UNSET: Any = object()


class Kind(StrEnum):
    """How a value is read."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    LIST = "comma-separated"


@dataclass(frozen=True)
class Knob:
    """One setting an operator may set.

    ``default`` applies in development and test, ``production`` (when given)
    in production; ``REQUIRED`` there means production refuses to start
    without it. ``default_doc`` says the default in words where it is computed
    (None: computed by the code that reads it). ``check`` raises ValueError on
    a value that parses but is wrong; its message follows the key's name.
    ``template`` is what ``.env.template`` shows (empty: the default applies);
    ``empty``, when given, is what a key set to the empty string means. A
    list without ``empty_items`` refuses an empty item (a stray comma).
    """

    name: str
    kind: Kind
    doc: str
    default: Any = None
    production: Any = _UNSET
    low: float = -math.inf
    high: float = math.inf
    choices: tuple[str, ...] = ()
    check: Callable[[Any], None] | None = None
    default_doc: str = ""
    template: str = ""
    empty_items: bool = True
    empty: Any = _UNSET

    @property
    def has_empty(self) -> bool:
        """Whether a key set but empty means something other than the default."""
        return self.empty is not _UNSET

    @property
    def has_production(self) -> bool:
        """Whether production has a default (or requirement) of its own."""
        return self.production is not _UNSET

    def parse(self, raw: str) -> Any:
        """``raw`` (stripped, not empty) as this knob's value, validated."""
        value = self._cast(raw)
        if self.choices and value not in self.choices:
            raise KnobError(
                f"{self.name} must be {' or '.join(self.choices)}, got {raw!r}"
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not self.low <= value <= self.high:
                raise KnobError(
                    f"{self.name} must be from {_number(self.low)} to "
                    f"{_number(self.high)}, got {raw}"
                )
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as error:
                raise KnobError(f"{self.name}: {error}") from None
        return value

    def _cast(self, raw: str) -> Any:
        try:
            if self.kind is Kind.INTEGER:
                return int(raw)
            if self.kind is Kind.NUMBER:
                return float(raw)
        except ValueError:
            what = "whole number" if self.kind is Kind.INTEGER else "number"
            raise KnobError(f"{self.name} must be a {what}, got {raw!r}") from None
        if self.kind is Kind.BOOLEAN:
            return bool(environ.Env.parse_value(raw, bool))
        if self.kind is Kind.LIST:
            items = [item.strip() for item in raw.split(",")]
            if not self.empty_items and not all(items):
                raise KnobError(f"{self.name} has an empty item (a stray comma?)")
            return [item for item in items if item]
        if self.choices:
            return raw.lower()
        return raw

    def default_text(self) -> str:
        """The default as the docs show it."""
        if self.default_doc:
            return self.default_doc
        return _text(self.default)

    def production_text(self) -> str:
        """Production's default as the docs show it ("" when the same)."""
        if not self.has_production:
            return ""
        if self.production is REQUIRED:
            return "required"
        return _text(self.production)


def _text(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{','.join(value)}`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
