"""Start-up validation of the aggregation registry."""

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class AggregationConfig(AppConfig):
    """Loads the registry when Django starts: a bad file stops the service."""

    name = "project.aggregation"

    def ready(self) -> None:
        """Load and validate ``AGGREGATIONS_FILE``; raise naming the line and key."""
        from .registry import RegistryError
        from .services import get_aggregator

        try:
            get_aggregator()
        except RegistryError as exc:
            raise ImproperlyConfigured(f"aggregation registry: {exc}") from None
