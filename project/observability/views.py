"""``GET /metrics``: every worker's samples in Prometheus text format."""

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from project.core import metrics
from project.http.decorators import json_get

from .guard import check_scraper


@json_get
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The merged samples, for scrapers that pass the guard (``guard.py``)."""
    check_scraper(request)
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
