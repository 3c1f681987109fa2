"""Reading metrics in tests: the in-process registry, or a multiprocess directory."""

from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from project.core.metrics import flush_batched


def sample(name: str, **labels: str) -> float:
    """The current value of one sample; 0 when it has not been written yet."""
    flush_batched()  # requests and upstream attempts are written once a second
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def merged(directory: Path) -> dict[tuple[str, frozenset], float]:
    """Every sample in ``directory``, merged across workers: (name, labels) → value."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels``."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= sample_labels
    )
