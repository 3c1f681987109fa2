"""Fixtures of the toolkit's tests."""

import pytest

from project.core.outbound import pool as http_pool
from project.core.per_process import PerProcess


@pytest.fixture
def fresh_pools(monkeypatch) -> None:
    """Each test starts with no pooled upstream connections and leaves none behind."""
    monkeypatch.setattr(http_pool, "_pools", PerProcess(dict))
