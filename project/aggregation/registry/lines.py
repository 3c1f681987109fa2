"""Where a dotted key is written in TOML text, for error messages (best effort)."""

import re
from collections.abc import Sequence

# A dotted key, as in error messages: ("aggregations", "product", "deadline_ms").
KeyPath = tuple[str, ...]

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def line_of(lines: Sequence[str], path: KeyPath) -> int | None:
    """The line of ``path``: its ``key =`` line, else the closest one, else None.

    Ranks: the key itself; its table's header; the (inline or dotted) key
    holding it, nearer first; any key of the same name.
    """
    table: KeyPath = ()
    best: tuple[int, int] | None = None

    def consider(rank: int, number: int) -> None:
        nonlocal best
        if best is None or rank < best[0]:
            best = (rank, number)

    for number, line in enumerate(lines, 1):
        header = _HEADER.match(line)
        if header:
            table = _key_parts(header.group(1))
            if table == path:
                consider(1, number)
            continue
        key = _KEY_LINE.match(line)
        if not key:
            continue
        full = table + _key_parts(key.group(1))
        if full == path:
            consider(0, number)
        elif path[: len(full)] == full:
            consider(2 + len(path) - len(full), number)
        elif full[-1:] == path[-1:]:
            consider(100, number)
    return best[1] if best else None


def _key_parts(dotted: str) -> KeyPath:
    return tuple(part.strip().strip("\"'") for part in dotted.split("."))
