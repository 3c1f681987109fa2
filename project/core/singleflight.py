"""Single-flight: identical calls in flight at once share one execution."""

from collections.abc import Callable, Hashable
from typing import Any

from gevent.event import AsyncResult


class SharedCallAbandoned(Exception):
    """The call being shared was stopped (its caller was killed) before it finished."""


class SingleFlight:
    """The first caller of a key runs the call; later callers of that key wait for it.

    Only calls in flight are shared; nothing is remembered afterwards (that is
    the cache's job). A waiting caller waits at most its own ``timeout``.
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, AsyncResult] = {}

    def in_flight(self) -> int:
        """Number of distinct calls running now."""
        return len(self._calls)

    def do(
        self, key: Hashable, call: Callable[[], Any], *, timeout: float
    ) -> tuple[Any, bool]:
        """Return ``(result, shared)``: ``call()``'s result, and whether it was shared.

        A waiter that runs out of ``timeout`` gets ``TimeoutError``; if the
        leader fails, every waiter gets the leader's exception.
        """
        pending = self._calls.get(key)
        if pending is not None:
            pending.wait(timeout)
            if not pending.ready():
                raise TimeoutError("shared call not finished in time")
            return pending.get(block=False), True
        result = AsyncResult()
        self._calls[key] = result
        try:
            value = call()
        except BaseException as exc:
            # A killed leader (GreenletExit) must not leave its waiters hanging.
            if isinstance(exc, Exception):
                result.set_exception(exc)
            else:
                result.set_exception(SharedCallAbandoned("shared call was stopped"))
            raise
        else:
            result.set(value)
            return value, False
        finally:
            del self._calls[key]
