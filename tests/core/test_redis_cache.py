"""JsonRedisCache against a real redis-server: JSON in Redis, anything else a miss."""

import logging
import pickle

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from project.core.redis_cache import JsonRedisCache
from tests.metrics_samples import sample


@pytest.fixture
def cache(redis_server) -> JsonRedisCache:
    return JsonRedisCache(redis_server.url, {"OPTIONS": {"socket_timeout": 1.0}})


@pytest.fixture
def raw(redis_server) -> redis.Redis:
    """The same Redis without the cache: what is really stored."""
    return redis.Redis.from_url(redis_server.url)


def test_values_are_stored_as_json(cache, raw):
    value = {"name": "café", "ids": [1, 2], "at": 1.5, "none": None}
    cache.set("k", value, 60)
    assert raw.get(cache.make_and_validate_key("k")) == (
        '{"name":"café","ids":[1,2],"at":1.5,"none":null}'.encode()
    )
    assert cache.get("k") == value
    assert cache.get_many(["k", "absent"]) == {"k": value}


def test_incr_and_decr_work_on_the_stored_digits(cache, raw):
    cache.set("n", 41, 60)
    assert raw.get(cache.make_and_validate_key("n")) == b"41"
    assert cache.incr("n") == 42
    assert cache.decr("n", 2) == 40
    assert cache.get("n") == 40


def test_a_value_that_is_not_json_is_refused_at_the_writer(cache):
    with pytest.raises(TypeError):
        cache.set("k", b"bytes", 60)
    with pytest.raises(ValueError):
        cache.set("k", float("inf"), 60)
    assert cache.get("k") is None


def test_values_that_are_not_json_are_misses_counted_and_logged_once(
    cache, raw, redis_server, caplog
):
    caplog.set_level(logging.WARNING, logger="project.core.cache_codec")
    cache.set("good", [1], 60)
    raw.set(cache.make_and_validate_key("pickled"), pickle.dumps({"a": 1}))
    raw.set(cache.make_and_validate_key("garbage"), b"\xff\x00")
    before = sample("gd_cache_undecodable_total", reader="redis")
    assert cache.get("pickled", "default") == "default"
    assert cache.get_many(["good", "pickled", "garbage"]) == {"good": [1]}
    assert sample("gd_cache_undecodable_total", reader="redis") == before + 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert f"cache redis '127.0.0.1:{redis_server.port}/0': " in lines[0]


def test_the_log_names_where_without_credentials():
    """Making the client connects nowhere: its pools open on first use."""
    cache = JsonRedisCache("redis://user:secret@cache.example:7000/3", {})
    assert cache._cache.location == "cache.example:7000/3"
    assert JsonRedisCache("unix:///run/redis.sock?db=1", {})._cache.location == (
        "/run/redis.sock"
    )


def test_a_serializer_option_is_refused(redis_server):
    with pytest.raises(ImproperlyConfigured, match="serializer"):
        JsonRedisCache(
            redis_server.url,
            {
                "OPTIONS": {
                    "serializer": "django.core.cache.backends.redis.RedisSerializer"
                }
            },
        )
