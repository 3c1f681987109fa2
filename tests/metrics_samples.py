"""Reading the in-process Prometheus registry in tests (no multiprocess directory)."""

from prometheus_client import REGISTRY

from project.core.upstream_metrics import flush_pending


def sample(name: str, **labels: str) -> float:
    """The current value of one sample; 0 when it has not been written yet."""
    flush_pending()  # upstream attempts are written once a second otherwise
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
