"""Reading the in-process Prometheus registry in tests (no multiprocess directory)."""

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The current value of one sample; 0 when it has not been written yet."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
