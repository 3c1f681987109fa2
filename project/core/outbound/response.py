"""An upstream's answer as ``http_get`` returns it, and strict JSON for its body."""

import json
from typing import Any

from geventhttpclient.header import Headers


class UpstreamInvalidJSON(ValueError):
    """The body is not strict JSON (or nests deeper than allowed)."""


# Deeper than any sane payload, far below the interpreter's recursion limit
# (which our own response rendering must stay under).
MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise UpstreamInvalidJSON(f"invalid JSON: {name} is not JSON")


def parse_json(content: bytes) -> Any:
    """Strict JSON: no ``NaN``/``Infinity``, at most ``MAX_JSON_DEPTH`` levels."""
    try:
        value = json.loads(content, parse_constant=_reject_constant)
    except UpstreamInvalidJSON:
        raise
    except RecursionError as exc:
        raise UpstreamInvalidJSON("invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise UpstreamInvalidJSON(f"invalid JSON: {exc}") from exc
    # Fewer brackets than the limit cannot nest deeper: skip the walk.
    if content.count(b"[") + content.count(b"{") > MAX_JSON_DEPTH:
        _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise UpstreamInvalidJSON(
                f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
            )
        children = item.values() if isinstance(item, dict) else item
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, dict | list)
        )


class Response:
    """An upstream's answer, read in full; the attribute names follow ``requests``."""

    __slots__ = ("status_code", "content", "_header_items", "_headers")

    def __init__(
        self, status_code: int, header_items: list[tuple[str, str]], content: bytes
    ) -> None:
        self.status_code = status_code
        self.content = content
        self._header_items = header_items
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """Case-insensitive response headers (built on first use)."""
        if self._headers is None:
            self._headers = Headers(self._header_items)
        return self._headers

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as strict JSON (``UpstreamInvalidJSON`` when it is not)."""
        return parse_json(self.content)
