"""Observability: ``/metrics``, request metrics, the event loop's health."""
