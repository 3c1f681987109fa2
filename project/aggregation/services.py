"""This worker's aggregator, built from the registry file on first use."""

import os

from django.conf import settings
from django.core.cache import caches

from project.core.aggregate import Aggregator
from project.core.registry import load_registry

_current: dict[str, tuple] = {}


def get_aggregator() -> Aggregator:
    """Return this process's ``Aggregator`` for ``AGGREGATIONS_FILE``.

    One per worker process (breakers, bulkheads and budgets are per worker);
    rebuilt after a fork or when the setting names another file.
    """
    key = (os.getpid(), str(settings.AGGREGATIONS_FILE))
    cached = _current.get("aggregator")
    if cached is None or cached[0] != key:
        aggregator = Aggregator(
            load_registry(settings.AGGREGATIONS_FILE),
            cache=caches[settings.AGGREGATION_CACHE],
            margin_s=settings.AGGREGATION_DEADLINE_MARGIN_MS / 1000.0,
        )
        cached = _current["aggregator"] = (key, aggregator)
    return cached[1]
