"""A cache shared through a primary (Redis) that falls back to this worker's memory.

``FallbackCache`` sends every call to the primary. When the primary raises a
connection or timeout error, that call is served from a per-worker
local-memory cache instead, a warning is logged (once per episode, then at
most every ``WARN_EVERY_S``) and ``gd_cache_fallback_total`` counts it. The
primary is then skipped for ``COOL_OFF_S`` (the breaker of
``resilience.breaker`` opened by one failure), so a dead Redis costs one
timeout per cool-off, not one per request; after it a single probe call tries
the primary again, and its success sends everything back there ("back" is
logged once).

Writes also go to memory while the primary is up (write-through): when Redis
dies, this worker still holds what it wrote, so stale-if-error keeps working
during the outage. Reads never mix the two: the primary while it answers,
memory while it does not. ``incr``/``decr`` are not mirrored (a local copy of
a shared counter would be wrong anyway).

State (the primary's connection pool, the breaker, the warning clock) is one
per ``LOCATION`` per process: Django's cache handler makes a cache object per
greenlet, and each must not open its own pool or cool off on its own.

Configuration (``CACHES`` entry)::

    "shared": {
        "BACKEND": "project.core.fallback_cache.FallbackCache",
        "LOCATION": "shared",  # names the state and the metric's ``cache`` label
        "OPTIONS": {
            "PRIMARY": {"BACKEND": "...RedisCache", "LOCATION": "redis://...",
                        "OPTIONS": {"socket_timeout": 0.1, ...}},
            "FALLBACK": {"BACKEND": "...ByteBoundedLocMemCache", "LOCATION": "..."},
            "COOL_OFF_S": 2.0,
        },
    }
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.utils.module_loading import import_string

from .metrics import CACHE_FALLBACK, enabled
from .per_process import PerProcess
from .resilience.breaker import BreakerConfig, CircuitBreaker

logger = logging.getLogger(__name__)

WARN_EVERY_S = 10.0
DEFAULT_COOL_OFF_S = 2.0


def _fallback_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the primary cannot serve", not "the call is wrong".

    For Redis that is every ``RedisError``: besides unreachable and slow, a
    server out of memory (``noeviction``), read-only or refusing writes
    (``MISCONF``) answers with an error, and a cache is an optimisation that
    must not fail the request over it.
    """
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, OSError]
    try:  # redis-py wraps socket errors in its own classes (not OSError's)
        from redis.exceptions import RedisError
    except ImportError:  # the toolkit works over any primary backend
        pass
    else:
        errors.append(RedisError)
    return tuple(errors)


FALLBACK_ERRORS = _fallback_errors()


def build_cache(config: dict[str, Any]) -> BaseCache:
    """A cache backend from a ``CACHES``-style dict (BACKEND, LOCATION, OPTIONS...)."""
    params = dict(config)
    backend = import_string(params.pop("BACKEND"))
    return backend(params.pop("LOCATION", ""), params)


@dataclass
class _Shared:
    """One LOCATION's state in this process, shared by its cache objects."""

    primary: BaseCache
    local: BaseCache
    breaker: CircuitBreaker
    label: str  # the primary's backend, for the log lines
    down_since: float | None = None  # monotonic; None while the primary answers
    next_warning: float = 0.0
    served_locally: int = 0  # calls served from memory since the last warning
    counters: dict[str, Any] = field(default_factory=dict)


# LOCATION → state; made again in a forked worker (a Redis pool must not be
# shared across processes, nor a breaker's verdict).
_states: PerProcess[dict[str, _Shared]] = PerProcess(dict)


class FallbackCache(BaseCache):
    """Django cache over a primary, served from local memory while it fails."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.name = location or "fallback"
        options = params.get("OPTIONS", {})
        self._primary_config: dict[str, Any] = options["PRIMARY"]
        self._local_config: dict[str, Any] = options.get(
            "FALLBACK",
            {"BACKEND": "project.core.bounded_cache.ByteBoundedLocMemCache"},
        )
        self.cool_off_s = float(options.get("COOL_OFF_S", DEFAULT_COOL_OFF_S))
        self._metrics = enabled()

    @property
    def _state(self) -> _Shared:
        states = _states.get()
        state = states.get(self.name)
        if state is None:
            local_config = {"LOCATION": f"fallback-{self.name}", **self._local_config}
            primary = build_cache(self._primary_config)
            state = states[self.name] = _Shared(
                primary=primary,
                local=build_cache(local_config),
                # One failure opens it (window 1); slowness alone never does:
                # the primary's own socket timeouts turn a hang into an error.
                breaker=CircuitBreaker(
                    BreakerConfig(
                        failure_rate=1.0,
                        slow_call_rate=1.0,
                        slow_call_ms=2**31,
                        window=1,
                        min_calls=1,
                        open_ms=int(self.cool_off_s * 1000),
                    )
                ),
                label=type(primary).__name__,
            )
        return state

    @property
    def primary(self) -> BaseCache:
        """The shared cache (Redis)."""
        return self._state.primary

    @property
    def local(self) -> BaseCache:
        """This worker's memory, used while the primary fails."""
        return self._state.local

    def primary_is_up(self) -> bool:
        """False while calls are being served from memory (after a failure)."""
        return self._state.down_since is None

    def _call(self, operation: str, *args: Any, mirror: bool = False) -> Any:
        """Run ``operation`` on the primary, or on memory if it fails or cools off.

        ``mirror``: a write that also goes to memory when the primary took it.
        """
        state = self._state
        ticket = state.breaker.allow()
        if ticket is not None:
            started = time.monotonic()
            try:
                result = getattr(state.primary, operation)(*args)
            except FALLBACK_ERRORS as error:
                state.breaker.record(
                    ticket, ok=False, seconds=time.monotonic() - started
                )
                self._served_locally(state, operation)
                self._failed(state, operation, error)
                return getattr(state.local, operation)(*args)
            except BaseException:
                # A gevent.Timeout from the caller's deadline, or a bad call:
                # no verdict on the primary.
                state.breaker.abandon(ticket)
                raise
            else:
                state.breaker.record(ticket, ok=True, seconds=0.0)
                if state.down_since is not None:
                    self._back(state)
                if mirror:
                    getattr(state.local, operation)(*args)
                return result
        self._served_locally(state, operation)
        return getattr(state.local, operation)(*args)

    def _failed(self, state: _Shared, operation: str, error: BaseException) -> None:
        """Log the failure (rate-limited) and remember when the episode began."""
        now = time.monotonic()
        if state.down_since is None:
            state.down_since = now
            state.next_warning = 0.0  # each outage is reported at least once
        if now >= state.next_warning:
            state.next_warning = now + WARN_EVERY_S
            logger.warning(
                "cache %s: %s failed on %s (%s: %s); serving this worker's memory, "
                "primary skipped for %.1f s at a time (%d calls served from "
                "memory since the last warning)",
                self.name,
                state.label,
                operation,
                type(error).__name__,
                error,
                self.cool_off_s,
                state.served_locally,
            )
            state.served_locally = 0

    def _back(self, state: _Shared) -> None:
        down_for = time.monotonic() - (state.down_since or 0.0)
        state.down_since = None
        logger.warning(
            "cache %s: %s back after %.1f s; calls go to it again",
            self.name,
            state.label,
            down_for,
        )

    def _served_locally(self, state: _Shared, operation: str) -> None:
        state.served_locally += 1
        if self._metrics:
            counter = state.counters.get(operation)
            if counter is None:
                counter = state.counters[operation] = CACHE_FALLBACK.labels(
                    self.name, operation
                )
            counter.inc()

    # Django's cache API: keys, versions and timeouts pass through untouched,
    # each backend applies its own KEY_PREFIX and default timeout.

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._call("get", key, default, version)

    def set(
        self,
        key: Any,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> None:
        """Store ``value`` (also in this worker's memory, for outages)."""
        self._call("set", key, value, timeout, version, mirror=True)

    def add(
        self,
        key: Any,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        """Store ``value`` unless ``key`` exists; True if stored."""
        added = bool(self._call("add", key, value, timeout, version))
        if added and self.primary_is_up():
            self.local.set(key, value, timeout, version)
        return added

    def touch(
        self,
        key: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        """Give ``key`` a new timeout; True if it exists."""
        return bool(self._call("touch", key, timeout, version, mirror=True))

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key`` (from memory too, so an outage cannot bring it back)."""
        return bool(self._call("delete", key, version, mirror=True))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Whether ``key`` exists."""
        return bool(self._call("has_key", key, version))

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        """The values of those ``keys`` that exist."""
        return self._call("get_many", keys, version)

    def set_many(
        self,
        data: dict[Any, Any],
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        """Store every item of ``data``; the keys that failed."""
        return self._call("set_many", data, timeout, version, mirror=True)

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        """Remove ``keys``."""
        self._call("delete_many", keys, version, mirror=True)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Add ``delta`` to a stored number (not mirrored: see the module doc)."""
        return self._call("incr", key, delta, version)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Subtract ``delta`` from a stored number."""
        return self._call("decr", key, delta, version)

    def clear(self) -> None:
        """Empty the primary (or memory, while it fails) and this worker's memory."""
        self._call("clear", mirror=True)

    def close(self, **kwargs: Any) -> None:
        """Nothing: the primary's pool outlives requests (it is per process)."""
