"""Helpers of the live tests: read a server's /metrics, drive known traffic."""

import requests
from prometheus_client.parser import text_string_to_metric_families


def samples(base_url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``base_url``/metrics: (name, labels) → value."""
    response = requests.get(base_url + "/metrics", timeout=10)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(found: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sample_labels), value in found.items()
        if sample == name and wanted <= sample_labels
    )
