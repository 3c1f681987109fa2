"""The per-worker cache bounded in bytes."""

import logging
import uuid

import pytest

from project.core.bounded_cache import ByteBoundedLocMemCache


def make(**options) -> ByteBoundedLocMemCache:
    return ByteBoundedLocMemCache(f"test-{uuid.uuid4()}", {"OPTIONS": options})


def test_total_bytes_stay_under_max_bytes():
    """60 values of 100 KB in a 1 MB cache: under 1 MB, the newest ones kept."""
    cache = make(MAX_BYTES=1_000_000, MAX_ENTRY_BYTES=200_000)
    for i in range(60):
        cache.set(f"k{i}", b"x" * 100_000)
    assert cache.size_bytes <= 1_000_000
    assert cache.get("k59") is not None and cache.get("k0") is None


def test_recently_read_entries_survive_eviction():
    """Eviction takes the least recently used, not the oldest written."""
    cache = make(MAX_BYTES=350_000, MAX_ENTRY_BYTES=200_000)
    cache.set("a", b"x" * 100_000)
    cache.set("b", b"x" * 100_000)
    cache.set("c", b"x" * 100_000)
    assert cache.get("a") is not None  # now the most recently used
    cache.set("d", b"x" * 100_000)
    assert cache.get("a") is not None and cache.get("b") is None


def test_a_value_over_the_entry_limit_is_logged_and_not_cached(caplog):
    """Too large to cache: not stored, a replaced smaller value is dropped too."""
    cache = make(MAX_BYTES=10_000_000, MAX_ENTRY_BYTES=1000)
    cache.set("k", b"small")
    with caplog.at_level(logging.WARNING, logger="project.core.bounded_cache"):
        cache.set("k", b"x" * 5000)
    assert cache.get("k") is None
    assert cache.size_bytes == 0
    assert "over CACHE_MAX_ENTRY_BYTES (1000)" in caplog.text


def test_bytes_are_given_back_on_delete_replace_and_clear():
    """The count follows deletes, replacements and clear."""
    cache = make(MAX_BYTES=1_000_000, MAX_ENTRY_BYTES=1_000_000)
    cache.set("k", b"x" * 1000)
    first = cache.size_bytes
    cache.set("k", b"x" * 2000)
    assert cache.size_bytes > first
    cache.delete("k")
    assert cache.size_bytes == 0
    cache.set("a", b"x")
    cache.clear()
    assert cache.size_bytes == 0
    with pytest.raises(NotImplementedError):
        cache.incr("a")
