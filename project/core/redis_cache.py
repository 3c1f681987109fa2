"""Django's Redis cache, storing JSON: a value that is not JSON is a miss.

Django's ``RedisCache`` pickles values (its ``RedisSerializer``); ``JsonRedisCache``
always uses ``cache_codec.JsonSerializer`` and refuses an ``OPTIONS``
``serializer``, which could only bring pickle back. Its client serves a value
that does not decode as absent (``get`` returns the default, ``get_many``
leaves the key out) and counts it, instead of raising into the request.
``incr``/``decr`` work: integers are stored as their digits, as Django does.
"""

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.exceptions import ImproperlyConfigured

from .cache_codec import JsonSerializer, Undecodable, undecodable


class JsonRedisCacheClient(RedisCacheClient):
    """``RedisCacheClient`` whose undecodable values are misses."""

    def __init__(self, servers: list[str], **options: Any) -> None:
        # django-stubs' serializer protocol has an int overload of loads (for
        # Django's raw ints); ours is only called by get and get_many below.
        super().__init__(servers, serializer=JsonSerializer, **options)  # type: ignore[arg-type]
        # Where the log line says the value was found; never the credentials.
        self.location = ",".join(_address(server) for server in servers)

    def get(self, key: Any, default: Any) -> Any:
        """The value of ``key``; ``default`` when absent or not JSON."""
        data = self.get_client(key).get(key)
        if data is None:
            return default
        return self._decode(key, data, default)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of those ``keys`` that exist and decode."""
        keys = list(keys)
        missing = object()
        found = {}
        for key, data in zip(keys, self.get_client(None).mget(keys), strict=True):
            if data is not None:
                value = self._decode(key, data, missing)
                if value is not missing:
                    found[key] = value
        return found

    def _decode(self, key: Any, data: Any, default: Any) -> Any:
        try:
            return JsonSerializer.loads(data)
        except Undecodable as error:
            undecodable("redis", self.location, str(key), str(error))
            return default


class JsonRedisCache(RedisCache):
    """``RedisCache`` over ``JsonRedisCacheClient``."""

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        options = params.get("OPTIONS", {})
        if "serializer" in options:
            raise ImproperlyConfigured(
                "JsonRedisCache stores JSON: remove OPTIONS['serializer']"
            )
        self._class = JsonRedisCacheClient  # what RedisCache builds its client from


def _address(url: str) -> str:
    """``host:port/db`` or the socket path of a Redis URL, without credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path}"
