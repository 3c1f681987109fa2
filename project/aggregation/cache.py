"""Source caching: fresh hits (``cache_ttl_s``) and stale-if-error (``stale_ttl_s``)."""

import hashlib
import time
from collections.abc import Hashable

from django.core.cache import BaseCache

from project.core.status import Status

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
        entry = self.cache.get(key)
        if entry and time.time() - entry["at"] < source.cache_ttl_s:
            return SourceResult(Status.OK, value=entry["value"], cache_hit=True)
        return None

    def settle(self, key: str, source: Source, result: SourceResult) -> SourceResult:
        """Keep a good ``result``; turn a failed one stale if a value is kept."""
        if result.status == Status.OK:
            self.cache.set(
                key,
                {"value": result.value, "at": time.time()},
                timeout=source.cache_ttl_s + source.stale_ttl_s,
            )
        elif result.status in FAILED:
            entry = self.cache.get(key)
            if entry:
                result.status, result.value = Status.STALE, entry["value"]
                result.age_s = time.time() - entry["at"]
        return result
