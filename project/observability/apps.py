"""The observability app."""

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """``/metrics`` and request metrics; the loop monitor starts from gunicorn."""

    name = "project.observability"
    label = "observability"
