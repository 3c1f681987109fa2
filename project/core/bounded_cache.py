"""Django's local-memory cache, storing JSON, bounded in bytes as well as in entries.

``LocMemCache`` pickles its values, and unpickling runs code: this backend
stores JSON bytes instead (``cache_codec``); a value that is not JSON is a
miss, counted and logged once. ``LocMemCache`` also limits the number of
entries only: 60 cached 8 MB answers grew a worker from 54 MB to 471 MB. This
backend keeps the size of every entry's JSON, refuses (and logs) a value
larger than ``MAX_ENTRY_BYTES``, and evicts least recently used entries to stay
under ``MAX_BYTES`` per process.
"""

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache

from .cache_codec import JsonSerializer, Undecodable, undecodable

logger = logging.getLogger(__name__)

_sizes: dict[str, list[int]] = {}  # per cache name, like LocMemCache's own stores
_WARN_EVERY_S = 60.0
# Largest value cached unless OPTIONS say otherwise: a larger one is logged and
# not cached, so one huge answer cannot evict everything else.
MAX_ENTRY_BYTES = 1024 * 1024


class ByteBoundedLocMemCache(LocMemCache):
    """``LocMemCache`` with ``OPTIONS`` ``MAX_BYTES`` and ``MAX_ENTRY_BYTES``."""

    # LocMemCache's own state (Django 5.2), which its type stubs leave out.
    _cache: OrderedDict[str, bytes]  # most recently used first
    _expire_info: dict[str, float | None]
    _lock: threading.Lock

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__(name, params)
        self.location = name
        options = params.get("OPTIONS", {})
        self.max_bytes = int(options.get("MAX_BYTES", 64 * 1024 * 1024))
        self.max_entry_bytes = int(options.get("MAX_ENTRY_BYTES", MAX_ENTRY_BYTES))
        self._bytes = _sizes.setdefault(name, [0])
        self._next_warning = 0.0

    @property
    def size_bytes(self) -> int:
        """JSON bytes held now."""
        return self._bytes[0]

    # LocMemCache's add, get and set with JSON in place of pickle; its other
    # methods never look inside a value.

    def add(
        self,
        key: Any,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        """Store ``value`` unless ``key`` holds one; True if stored."""
        key = self.make_and_validate_key(key, version=version)
        data = JsonSerializer.dumps(value)
        with self._lock:
            if self._has_expired(key):  # type: ignore[attr-defined]
                self._set(key, data, timeout)
                return True
            return False

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """The value of ``key``; ``default`` when absent, expired or not JSON."""
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            if self._has_expired(key):  # type: ignore[attr-defined]
                self._delete(key)
                return default
            data = self._cache[key]
            self._cache.move_to_end(key, last=False)
        try:
            return JsonSerializer.loads(data)
        except Undecodable as error:
            undecodable("memory", self.location, key, str(error))
            return default

    def set(
        self,
        key: Any,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> None:
        """Store ``value`` as JSON (TypeError/ValueError if it is not JSON)."""
        key = self.make_and_validate_key(key, version=version)
        data = JsonSerializer.dumps(value)
        with self._lock:
            self._set(key, data, timeout)

    def _set(self, key: str, value: bytes, timeout: Any = None) -> None:
        size = len(value)
        self._delete(key)  # a replaced value's bytes are given back first
        if size > self.max_entry_bytes:
            self._warn_too_large(key, size)
            return
        # The least recently used entries sit at the end (LocMemCache moves
        # each one it touches to the front).
        while self._cache and self._bytes[0] + size > self.max_bytes:
            old_key, old = self._cache.popitem()
            del self._expire_info[old_key]
            self._bytes[0] -= len(old)
        # django-stubs leave out LocMemCache's private _set and _delete, which
        # Django 5.2 defines and this class extends.
        super()._set(key, value, timeout)  # type: ignore[misc]
        self._bytes[0] += size

    def _cull(self) -> None:
        if self._cull_frequency == 0:
            self._cache.clear()
            self._expire_info.clear()
            self._bytes[0] = 0
            return
        for _ in range(len(self._cache) // self._cull_frequency):
            old_key, old = self._cache.popitem()
            del self._expire_info[old_key]
            self._bytes[0] -= len(old)

    def _delete(self, key: str) -> bool:
        old = self._cache.get(key)
        # Absent from the cache, it is absent from its expiry times too.
        if old is None or not super()._delete(key):  # type: ignore[misc]
            return False
        self._bytes[0] -= len(old)
        return True

    def clear(self) -> None:
        """Empty the cache."""
        with self._lock:
            self._cache.clear()
            self._expire_info.clear()
            self._bytes[0] = 0

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> Any:
        """Not offered: a changed value would change its size unseen."""
        raise NotImplementedError("incr is not supported by ByteBoundedLocMemCache")

    def _warn_too_large(self, key: str, size: int) -> None:
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY_S
            logger.warning(
                "not cached: a value of %d bytes is over MAX_ENTRY_BYTES (%d); "
                "key %s (logged at most once a minute)",
                size,
                self.max_entry_bytes,
                key[:100],
            )
