"""Reading the parsed TOML against the schema; every error names file, line and key."""

import re
from collections.abc import Mapping
from typing import Any

from project.http.params import NOT_AN_INTEGER, out_of_range

from ..schema import Section
from .lines import KeyPath, line_of

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_ENV_REF = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")


class RegistryError(ValueError):
    """The registry file is invalid; the message names the line and key."""


class Reader:
    """One registry file being read: its text (for line numbers) and environment."""

    def __init__(self, text: str, origin: str, environ: Mapping[str, str]) -> None:
        self.lines = text.splitlines()
        self.origin = origin
        self.environ = environ

    def fail(self, path: KeyPath, problem: str) -> RegistryError:
        """The error to raise: ``file:line: dotted.key: problem``."""
        line = line_of(self.lines, path)
        where = f"{self.origin}:{line}" if line else self.origin
        return RegistryError(f"{where}: {'.'.join(path)}: {problem}")

    def open(self, data: Any, path: KeyPath, section: Section) -> "Table":
        """``data`` as a table of ``section``: it must be one, with known keys only."""
        table = self.table(data, path)
        allowed = section.names()
        for key in table:
            if key not in allowed:
                raise self.fail(
                    (*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        return Table(self, table, path, section)

    def table(self, data: Any, path: KeyPath) -> dict[str, Any]:
        """``data`` if it is a table."""
        if not isinstance(data, dict):
            raise self.fail(path, "must be a table")
        return data

    def name(self, path: KeyPath) -> str:
        """The last part of ``path``, if it is a valid name for what it declares."""
        if not _NAME.match(path[-1]):
            raise self.fail(path, "names are lowercase letters, digits, _ or -")
        return path[-1]

    def is_name(self, text: str) -> bool:
        """Whether ``text`` is a valid name (of a declaration or a parameter)."""
        return bool(_NAME.match(text))

    def expand_env(self, value: str, path: KeyPath) -> str:
        """``value`` with ``${VAR}`` and ``${VAR:-default}`` filled in."""

        def replace(match: re.Match[str]) -> str:
            found = self.environ.get(match.group(1), "")
            if found:
                return found
            if match.group(2) is not None:
                return match.group(2)
            raise self.fail(path, f"environment variable {match.group(1)} is not set")

        return _ENV_REF.sub(replace, value)


class Table:
    """One table of the file; typed getters take defaults and ranges from the schema."""

    def __init__(
        self, reader: Reader, data: dict[str, Any], path: KeyPath, section: Section
    ) -> None:
        self.reader = reader
        self.data = data
        self.path = path
        self.section = section

    def fail(self, key: str, problem: str) -> RegistryError:
        """The error for ``key`` of this table."""
        return self.reader.fail((*self.path, key), problem)

    def integer(
        self,
        name: str,
        *,
        default: int | None = None,
        low: int | None = None,
        high: int | None = None,
    ) -> int:
        """An integer key; ``default``, ``low``, ``high`` replace the schema's."""
        key = self.section[name]
        value = self.data.get(name, key.default if default is None else default)
        if value is None:
            raise self.fail(name, "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, NOT_AN_INTEGER)
        self._check_range(name, value, low, high)
        return value

    def number(self, name: str) -> float:
        """A number key (an integer or a float)."""
        value = self.data.get(name, self.section[name].default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, "must be a number")
        self._check_range(name, value, None, None)
        return float(value)

    def string(self, name: str) -> str:
        """A non-empty string key."""
        value = self.data.get(name, self.section[name].default)
        if value is None:
            raise self.fail(name, "is required")
        if not isinstance(value, str) or not value:
            raise self.fail(name, "must be a non-empty string")
        return value

    def boolean(self, name: str) -> bool:
        """A boolean key."""
        value = self.data.get(name, self.section[name].default)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def choice(self, name: str) -> str:
        """A key whose value must be one of the schema's choices."""
        key = self.section[name]
        value = self.data.get(name, key.default)
        if value not in key.choices:
            raise self.fail(name, "must be " + " or ".join(map(repr, key.choices)))
        return str(value)

    def table(self, name: str) -> dict[str, Any]:
        """A sub-table; absent, an empty one unless the schema requires it."""
        value = self.data.get(name, None if self.section[name].required else {})
        return self.reader.table(value, (*self.path, name))

    def _check_range(
        self, name: str, value: float, low: float | None, high: float | None
    ) -> None:
        key = self.section[name]
        problem = out_of_range(
            value,
            key.low if low is None else low,
            key.high if high is None else high,
        )
        if problem:
            raise self.fail(name, problem)
