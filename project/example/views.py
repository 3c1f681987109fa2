"""GET /example/product/?sku=N[&ms=D]: parse, call the service, answer JSON."""

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from project.core.deadline import active_deadline
from project.http.decorators import json_get
from project.http.params import int_param

from . import services


@json_get
def product(request: HttpRequest) -> JsonResponse:
    """The price and stock of one product, fetched concurrently."""
    sku = int_param(request.GET, "sku", minimum=1, maximum=10**9)
    ms = int_param(
        request.GET, "ms", minimum=0, maximum=settings.DEMO_MAX_MS, default=50
    )
    deadline = active_deadline()
    legs = services.product(sku=sku, ms=ms, deadline=deadline)
    return JsonResponse({"sku": sku, "legs": [leg.as_dict() for leg in legs]})
