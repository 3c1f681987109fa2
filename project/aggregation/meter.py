"""The aggregation families (``gd_aggregation_*``), filled by ``Aggregator``.

Labels are the registry's aggregation and source names and a ``Status``:
all from configuration, so each child is made once (``.labels`` is a locked
lookup) and then held here.
"""

from collections.abc import Mapping

from prometheus_client import Counter

from project.core.metrics import (
    AGGREGATION_CACHE,
    AGGREGATION_PARTIAL,
    AGGREGATION_SINGLEFLIGHT_JOINS,
    AGGREGATION_SOURCES,
)

from .results import SourceResult


class _Children:
    """One family's labelled children, by label values, made on first use."""

    def __init__(self, family: Counter) -> None:
        self._family = family
        self._children: dict[tuple[str, ...], Counter] = {}

    def inc(self, *labels: str) -> None:
        """Add one to the child of ``labels``."""
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._family.labels(*labels)
        child.inc()


class AggregationMeter:
    """Counts source results, partial answers, cache lookups and joined calls."""

    def __init__(self) -> None:
        self._sources = _Children(AGGREGATION_SOURCES)
        self._partial = _Children(AGGREGATION_PARTIAL)
        self._cache = _Children(AGGREGATION_CACHE)
        self._joins = _Children(AGGREGATION_SINGLEFLIGHT_JOINS)

    def answered(
        self, aggregation: str, results: Mapping[str, SourceResult], partial: bool
    ) -> None:
        """Count one answer: each source's status, and whether it was partial."""
        for source, result in results.items():
            self._sources.inc(aggregation, source, result.status.value)
        if partial:
            self._partial.inc(aggregation)

    def cache(self, aggregation: str, source: str, result: str) -> None:
        """Count a cache lookup: ``hit``, ``miss`` or ``stale_served``."""
        self._cache.inc(aggregation, source, result)

    def joined(self, aggregation: str, source: str) -> None:
        """Count a fetch that joined an identical one in flight."""
        self._joins.inc(aggregation, source)
