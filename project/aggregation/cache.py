"""Source caching: fresh hits (``cache_ttl_s``) and stale-if-error (``stale_ttl_s``).

An entry is ``{"value": <the value in JSON form>, "at": <unix time>}``: the
caches store JSON (``project.core.cache_codec``), so a value is put in the
form an answer writes it before it is stored, and a cache hit answers exactly
what the live call answered. An entry of another shape is a miss, counted and
logged once like a value that is not JSON.
"""

import hashlib
import time
from collections.abc import Hashable
from typing import Any

from django.core.cache import BaseCache

from project.core.cache_codec import undecodable
from project.core.status import Status
from project.http.encoding import json_form

from .declarations import Source
from .policy import FAILED
from .results import SourceResult


class SourceCache:
    """A source's last good value, kept ``cache_ttl_s + stale_ttl_s`` seconds.

    Fresh for ``cache_ttl_s`` (served without a call); after that, served as
    ``stale`` only when the live call fails. Sources without ``cache_ttl_s``
    are never cached.
    """

    def __init__(self, cache: BaseCache) -> None:
        self.cache = cache

    def key_for(self, source: Source, call: Hashable) -> str | None:
        """The cache key of ``call`` (what identifies it), or None: not cached."""
        if not source.cache_ttl_s:
            return None
        return "agg:" + hashlib.sha256(repr(call).encode()).hexdigest()

    def fresh(self, key: str, source: Source) -> SourceResult | None:
        """A hit younger than ``cache_ttl_s``, or None."""
        entry = self._entry(key)
        if entry and time.time() - entry["at"] < source.cache_ttl_s:
            return SourceResult(Status.OK, value=entry["value"], cache_hit=True)
        return None

    def settle(self, key: str, source: Source, result: SourceResult) -> SourceResult:
        """Keep a good ``result``; turn a failed one stale if a value is kept."""
        if result.status == Status.OK:
            self.cache.set(
                key,
                {"value": json_form(result.value), "at": time.time()},
                timeout=source.cache_ttl_s + source.stale_ttl_s,
            )
        elif result.status in FAILED:
            entry = self._entry(key)
            if entry:
                result.status, result.value = Status.STALE, entry["value"]
                result.age_s = time.time() - entry["at"]
        return result

    def _entry(self, key: str) -> dict[str, Any] | None:
        """The entry under ``key``; None when absent or not an entry."""
        entry = self.cache.get(key)
        if entry is None or _is_entry(entry):
            return entry
        undecodable("aggregation", "source cache", key, "not a {value, at} entry")
        return None


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.keys() == {"value", "at"}
        and type(entry["at"]) in (int, float)
    )
