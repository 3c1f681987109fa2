"""``python -m loadtests.pool_cost``: both pools measured, side by side, on a
real PostgreSQL (the rival in its own venv)."""

import re

import pytest

from loadtests import pool_cost
from loadtests.harness import pg3pool_venv
from tests.loadtests.test_pg3pool import _pypi_reachable


@pytest.fixture
def rival_venv():
    try:
        pg3pool_venv.ensure_venv()
    except pg3pool_venv.VenvError:
        if not _pypi_reachable():
            pytest.skip("PyPI is unreachable: the pg3pool venv cannot be built")
        raise


def test_prints_each_operation_for_both_pools(
    rival_venv, test_database_url, monkeypatch, capsys
):
    """One short round: a row per operation, both sides' CPU and their ratio."""
    monkeypatch.setenv("DATABASE_URL", test_database_url)
    assert pool_cost.main(["--rounds", "1", "--ops", "640"]) == 0
    rows = re.findall(
        r"^\| (.+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|$",
        capsys.readouterr().out,
        re.MULTILINE,
    )
    assert [row[0] for row in rows] == list(pool_cost.OPERATIONS)
    for _, ours, theirs, ratio in rows:
        assert float(ours) > 0 and float(theirs) > 0
        assert float(ratio) == pytest.approx(float(ours) / float(theirs), rel=0.05)
