"""A cache holds data, never code: a crafted pickle in the aggregation cache is a miss.

Whoever can write to a cache (any local user, with a Redis without a password)
must not get the service to run code. Each test writes a pickle that creates a
marker file when unpickled, raw, under the exact key the aggregation reads (the
backend's own key function), then asks the API through Django's test client.
"""

import logging
import os
import pickle
import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.core.cache import caches

from project.aggregation.services import get_aggregator
from project.core import fallback_cache
from project.core.deadline import Deadline
from settings.base import shared_cache
from tests.metrics_samples import sample

from .test_engine import stub_counts

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "cache-values-token-0123456789"
REGISTRY = '''\
[upstreams.stub]
base_url = "${AGG_TEST_STUB}"
timeout_ms = 1000

[aggregations.cached]
sources.s = { upstream = "stub", path = "/delay", cache_ttl_s = 60, query = { ms = "5" } }

# What sources answer, in every form that JSON does not keep as it is.
[queries.shapes]
sql = """SELECT 1.50::numeric AS price, 12345678901234567890::numeric AS big,
  '2024-01-02 03:04:05.123456+00'::timestamptz AS at, '2024-01-02'::date AS day,
  '1 day 02:00:00'::interval AS span, 'NaN'::float8 AS nan, 0.1::float8 AS tenth,
  ARRAY[1, 2] AS ids, '{"a": [1, {"b": null}], "é": "✓"}'::jsonb AS doc,
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id, NULL AS nothing"""

[aggregations.shapes]
sources.sql = { sql = "shapes", cache_ttl_s = 60 }
sources.json = { upstream = "stub", path = "/delay", cache_ttl_s = 60, query = { ms = "1" } }
sources.text = { upstream = "stub", path = "/trickle", cache_ttl_s = 60, query = { chunks = "2" } }
'''  # noqa: E501
CODEC_LOGGER = "project.core.cache_codec"


class Exploit:
    """Unpickling it runs a shell command, as an attacker's value would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def crafted_pickle(marker: Path) -> bytes:
    """The attacker's value; checked to work, so the tests can fail."""
    probe = marker.with_name(marker.name + "-probe")
    pickle.loads(pickle.dumps(Exploit(probe)))
    assert probe.exists(), "the crafted pickle does not run its command"
    return pickle.dumps(Exploit(marker))


@pytest.fixture
def api(client, settings, tmp_path, monkeypatch, own_upstream):
    """The ``cached`` aggregation on a stub of the test's own; returns a GET helper."""
    path = tmp_path / "aggregations.toml"
    path.write_text(REGISTRY)
    monkeypatch.setenv("AGG_TEST_STUB", own_upstream[0])
    settings.AGGREGATIONS_FILE = str(path)
    settings.AGGREGATION_API_TOKENS = [TOKEN]

    def get(name: str = "cached"):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return client.get(f"/api/aggregate/{name}/", headers=headers)

    return get


def source_key() -> str:
    """The key the aggregation reads and writes its one source under."""
    aggregator = get_aggregator()
    aggregation = aggregator.registry.aggregations["cached"]
    source = aggregation.sources[0]
    values = aggregation.parse_params({})
    live = aggregator.sources.live_call(source, values, Deadline.from_ms(1000))
    key = aggregator.cache.key_for(source, live.key)
    assert key is not None
    return key


def codec_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CODEC_LOGGER]


def assert_a_miss_and_no_code(
    api, own_upstream, marker: Path, reader: str, poison, caplog
) -> None:
    """Two poisoned requests: misses, nothing run, both counted, one log line."""
    caplog.set_level(logging.INFO, logger=CODEC_LOGGER)
    before = sample("gd_cache_undecodable_total", reader=reader)
    for calls in (1, 2):
        poison()
        response = api()
        assert response.status_code == 200, response.content
        source = response.json()["sources"]["s"]
        assert source["status"] == "ok" and "cache" not in source  # a miss
        assert stub_counts(own_upstream[0]) == {"/delay": calls}
        assert not marker.exists(), "the cached pickle was executed"
        assert sample("gd_cache_undecodable_total", reader=reader) == before + calls
        assert len(codec_lines(caplog)) == 1, codec_lines(caplog)
    # The miss wrote the value back as JSON: the next request is a hit.
    assert api().json()["sources"]["s"]["cache"] == "hit"


def memory_cache(settings) -> None:
    """The aggregation cache in worker memory, under a name of the test's own."""
    location = f"values-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": location},
    }
    settings.AGGREGATION_CACHE = "default"


def redis_cache(settings, url: str, name: str) -> None:
    """The aggregation cache in Redis at ``url``, as ``REDIS_URL`` makes it."""
    settings.CACHES = {**settings.CACHES, "shared": shared_cache(url, name=name)}
    settings.AGGREGATION_CACHE = "shared"


def test_a_pickle_in_worker_memory_is_a_miss_not_code(
    api, settings, own_upstream, tmp_path, caplog
):
    memory_cache(settings)
    marker = tmp_path / "pwned"
    payload = crafted_pickle(marker)
    cache = caches["default"]
    key = cache.make_and_validate_key(source_key())

    def poison() -> None:
        with cache._lock:
            cache._set(key, payload, 60)

    assert_a_miss_and_no_code(api, own_upstream, marker, "memory", poison, caplog)


@pytest.fixture
def shared_name() -> Iterator[str]:
    """A fresh shared-cache name (its per-process state is per name), then forgotten."""
    name = f"values-{uuid.uuid4().hex[:8]}"
    yield name
    fallback_cache._states.get().pop(name, None)


def test_a_pickle_in_redis_is_a_miss_not_code(
    api, settings, own_upstream, redis_server, shared_name, tmp_path, caplog
):
    redis_cache(settings, redis_server.url, shared_name)
    marker = tmp_path / "pwned"
    payload = crafted_pickle(marker)
    key = caches["shared"].primary.make_and_validate_key(source_key())
    raw = redis.Redis.from_url(redis_server.url)

    def poison() -> None:
        raw.set(key, payload, ex=60)

    assert_a_miss_and_no_code(api, own_upstream, marker, "redis", poison, caplog)


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_hit_answers_exactly_what_the_live_call_answered(
    api, settings, where, redis_server, shared_name
):
    """Numbers, times, NaN, arrays, JSON documents, UUIDs and text come back alike."""
    if where == "memory":
        memory_cache(settings)
    else:
        redis_cache(settings, redis_server.url, shared_name)
    live, hit = api("shapes").json(), api("shapes").json()
    assert {s["status"] for s in live["sources"].values()} == {"ok"}
    assert {s.get("cache") for s in live["sources"].values()} == {None}
    assert {s.get("cache") for s in hit["sources"].values()} == {"hit"}
    assert hit["data"] == live["data"]
    assert live["data"]["sql"] == [
        {
            "price": "1.50",
            "big": "12345678901234567890",
            "at": "2024-01-02T03:04:05.123Z",
            "day": "2024-01-02",
            "span": "P1DT02H00M00S",
            "nan": None,
            "tenth": 0.1,
            "ids": [1, 2],
            "doc": '{"a": [1, {"b": null}], "é": "✓"}',  # Django reads jsonb as text
            "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "nothing": None,
        }
    ]
    assert live["data"]["json"]["slept_ms"] == 1
    assert live["data"]["text"] == "x" * 20


def test_json_that_is_not_an_entry_is_a_miss_and_counted(api, settings, own_upstream):
    memory_cache(settings)
    caches["default"].set(source_key(), {"value": "no time"}, 60)
    before = sample("gd_cache_undecodable_total", reader="aggregation")
    source = api().json()["sources"]["s"]
    assert source["status"] == "ok" and "cache" not in source
    assert stub_counts(own_upstream[0]) == {"/delay": 1}
    assert sample("gd_cache_undecodable_total", reader="aggregation") == before + 1
