"""Outbound HTTP: the pooled client, its wire limits, and the guarded GET.

``call_upstream`` is what a view calls (bulkhead, breakers, retries, the
deadline); ``http_get`` is the bare pooled GET under it.
"""

from .client import LocalSocketsExhausted, http_get
from .response import Response, UpstreamInvalidJSON
from .upstream import UpstreamResult, call_upstream

__all__ = [
    "LocalSocketsExhausted",
    "Response",
    "UpstreamInvalidJSON",
    "UpstreamResult",
    "call_upstream",
    "http_get",
]
