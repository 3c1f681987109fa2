"""The per-worker cache: JSON, bounded in bytes."""

import logging
import pickle
import uuid
from decimal import Decimal

import pytest

from project.core.bounded_cache import ByteBoundedLocMemCache
from tests.metrics_samples import sample


def make(**options) -> ByteBoundedLocMemCache:
    return ByteBoundedLocMemCache(f"test-{uuid.uuid4()}", {"OPTIONS": options})


def test_total_bytes_stay_under_max_bytes():
    """60 values of 100 KB in a 1 MB cache: under 1 MB, the newest ones kept."""
    cache = make(MAX_BYTES=1_000_000, MAX_ENTRY_BYTES=200_000)
    for i in range(60):
        cache.set(f"k{i}", "x" * 100_000)
    assert cache.size_bytes <= 1_000_000
    assert cache.get("k59") is not None and cache.get("k0") is None


def test_recently_read_entries_survive_eviction():
    """Eviction takes the least recently used, not the oldest written."""
    cache = make(MAX_BYTES=350_000, MAX_ENTRY_BYTES=200_000)
    cache.set("a", "x" * 100_000)
    cache.set("b", "x" * 100_000)
    cache.set("c", "x" * 100_000)
    assert cache.get("a") is not None  # now the most recently used
    cache.set("d", "x" * 100_000)
    assert cache.get("a") is not None and cache.get("b") is None


def test_a_value_over_the_entry_limit_is_logged_and_not_cached(caplog):
    """Too large to cache: not stored, a replaced smaller value is dropped too."""
    cache = make(MAX_BYTES=10_000_000, MAX_ENTRY_BYTES=1000)
    cache.set("k", "small")
    with caplog.at_level(logging.WARNING, logger="project.core.bounded_cache"):
        cache.set("k", "x" * 5000)
    assert cache.get("k") is None
    assert cache.size_bytes == 0
    assert "over MAX_ENTRY_BYTES (1000)" in caplog.text


def test_bytes_are_given_back_on_delete_replace_and_clear():
    """The count follows deletes, replacements and clear."""
    cache = make(MAX_BYTES=1_000_000, MAX_ENTRY_BYTES=1_000_000)
    cache.set("k", "x" * 1000)
    first = cache.size_bytes
    cache.set("k", "x" * 2000)
    assert cache.size_bytes > first
    cache.delete("k")
    assert cache.size_bytes == 0
    cache.set("a", "x")
    cache.clear()
    assert cache.size_bytes == 0
    with pytest.raises(NotImplementedError):
        cache.incr("a")


def test_values_are_stored_and_sized_as_json():
    """What is held is the value's JSON, and its bytes are what is counted."""
    cache = make()
    value = {"name": "café", "ids": [1, 2], "price": 1.5, "none": None, "ok": True}
    cache.set("k", value)
    stored = cache._cache[cache.make_and_validate_key("k")]
    assert (
        stored
        == '{"name":"café","ids":[1,2],"price":1.5,"none":null,"ok":true}'.encode()
    )
    assert cache.size_bytes == len(stored)
    assert cache.get("k") == value
    assert cache.add("k", "other") is False and cache.add("new", [1]) is True
    assert cache.get_many(["k", "new", "absent"]) == {"k": value, "new": [1]}


@pytest.mark.parametrize("value", [b"bytes", Decimal("1.5"), {1, 2}, float("nan")])
def test_a_value_that_is_not_json_is_refused_at_the_writer(value):
    """Not JSON: the caller's mistake, raised where it is made; nothing stored."""
    cache = make()
    with pytest.raises((TypeError, ValueError)):
        cache.set("k", value)
    assert cache.get("k") is None and cache.size_bytes == 0


@pytest.mark.parametrize(
    "raw",
    [
        pickle.dumps({"a": 1}),
        pickle.dumps({"a": 1}, protocol=0),  # ASCII
        b"not json",
        b"NaN",
        b"[" * 100_000,  # deeper than the interpreter's stack
    ],
    ids=["pickle", "pickle-ascii", "garbage", "nan", "deep"],
)
def test_a_stored_value_that_is_not_json_is_a_miss_and_counted(raw, caplog):
    cache = make()
    key = cache.make_and_validate_key("k")
    with cache._lock:
        cache._set(key, raw, 60)
    before = sample("gd_cache_undecodable_total", reader="memory")
    with caplog.at_level(logging.WARNING, logger="project.core.cache_codec"):
        assert cache.get("k", "default") == "default"
        assert cache.get_many(["k"]) == {}
    assert sample("gd_cache_undecodable_total", reader="memory") == before + 2
    # A fresh cache name: its first one is logged, the second only counted.
    lines = [r for r in caplog.records if r.name == "project.core.cache_codec"]
    assert len(lines) == 1
    assert "not what this service writes" in lines[0].getMessage()
