"""What the project's caches store: JSON, never pickles.

Django's cache backends pickle values, and unpickling runs whatever the bytes
say: anyone who can write to a cache (a local user of a Redis without a
password, say) got code run by the service that read it. Our backends store
JSON instead (``JsonSerializer``): data that a reader checks, never code it
runs.

``dumps`` writes strict JSON (UTF-8; no NaN or Infinity) and raises
``TypeError`` or ``ValueError`` for anything else, at the writer, where the
mistake is: callers turn their values into JSON types first (a tuple comes
back a list, a Decimal is not JSON). An ``int`` is written as its digits, the
form Redis's ``INCR`` works on, so ``incr``/``decr`` keep working in Redis.

``loads`` raises ``Undecodable`` for bytes that are not JSON; the backends
serve such a value as a miss and call ``undecodable``: the value is counted in
``gd_cache_undecodable_total`` and logged once per process and cache.
"""

import json
import logging
from typing import Any

from .metrics import CACHE_UNDECODABLE, enabled
from .per_process import PerProcess

logger = logging.getLogger(__name__)

# (reader, location) already logged in this process.
_logged: PerProcess[set[tuple[str, str]]] = PerProcess(set)


class Undecodable(ValueError):
    """Cached bytes that are not JSON (a pickle, garbage)."""


class JsonSerializer:
    """``dumps``/``loads`` for cache values; also a ``RedisCache`` serializer."""

    @staticmethod
    def dumps(value: Any) -> bytes:
        """``value`` as compact JSON bytes; TypeError/ValueError if it is not JSON."""
        return json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()

    @staticmethod
    def loads(data: bytes | str) -> Any:
        """The value ``data`` holds, or ``Undecodable``."""
        try:
            return json.loads(data, parse_constant=_not_json)
        # RecursionError: nesting deeper than the interpreter's stack.
        except (ValueError, RecursionError) as error:
            raise Undecodable(f"{type(error).__name__}: {error}"[:200]) from None


def _not_json(constant: str) -> Any:
    """Refuse NaN and Infinity, which Python reads but ``dumps`` never writes."""
    raise ValueError(f"{constant} is not JSON")


def undecodable(reader: str, location: str, key: str, reason: str) -> None:
    """Count a cached value that was served as a miss because it did not decode.

    ``reader`` labels the counter (a fixed name per backend, ``redis`` or
    ``memory``, or the app that checks the shape); the first one per
    ``reader`` and ``location`` in this process is logged, the rest only
    counted: a poisoned or old-format cache must not flood the log.
    """
    if enabled():
        CACHE_UNDECODABLE.labels(reader).inc()
    logged = _logged.get()
    if (reader, location) in logged:
        return
    logged.add((reader, location))
    logger.warning(
        "cache %s %r: the value of key %s is not what this service writes (%s); "
        "served as a miss. Values written by another program or an older release "
        "are not read; further ones are counted in gd_cache_undecodable_total, "
        "not logged (once per process)",
        reader,
        location,
        key[:100],
        reason,
    )
