"""JSON encoding of our answers."""

import json
import math
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder


class FiniteJSONEncoder(DjangoJSONEncoder):
    """Django's encoder that never writes ``NaN``/``Infinity`` (they are not JSON).

    Such floats (a PostgreSQL ``'NaN'::float`` in a row, say) become ``null``.
    The first attempt refuses them, so answers without one cost nothing extra.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_nan"] = False
        super().__init__(*args, **kwargs)

    def encode(self, o: Any) -> str:
        """JSON text of ``o``, non-finite floats as ``null``."""
        try:
            return super().encode(o)
        except ValueError:
            return super().encode(_finite(o))


def json_form(value: Any) -> Any:
    """``value`` as our answers write it, read back: plain JSON types only.

    A Decimal or a datetime becomes the string an answer shows, a tuple a
    list, a non-finite float ``None``; a value stored in this form is served
    from a cache exactly as it was served live.
    """
    return json.loads(FiniteJSONEncoder().encode(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
