"""This worker's aggregator, built from the registry file on first use."""

from django.conf import settings
from django.core.cache import caches

from project.core.per_process import PerProcess

from .engine import Aggregator
from .registry import load_registry

# Sources stop this long before the request's deadline, leaving time for stale
# fallbacks and the response.
DEADLINE_MARGIN_MS = 10
# Breakers, bulkheads and budgets are per worker: a forked child builds its own.
_current: PerProcess[dict[str, tuple]] = PerProcess(dict)


def get_aggregator() -> Aggregator:
    """Return this process's ``Aggregator`` for ``AGGREGATIONS_FILE``.

    One per worker process (breakers, bulkheads and budgets are per worker);
    rebuilt after a fork or when the setting names another file.
    """
    key = str(settings.AGGREGATIONS_FILE)
    current = _current.get()
    cached = current.get("aggregator")
    if cached is None or cached[0] != key:
        aggregator = Aggregator(
            load_registry(settings.AGGREGATIONS_FILE),
            cache=caches[settings.AGGREGATION_CACHE],
            margin_s=DEADLINE_MARGIN_MS / 1000.0,
        )
        cached = current["aggregator"] = (key, aggregator)
    return cached[1]
