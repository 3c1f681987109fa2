"""Fixtures the aggregation tests share."""

import subprocess
import sys
from collections.abc import Iterator

import pytest

from devtools.ports import free_port, wait_for_http
from devtools.processes import stop as stop_process
from tests.helpers import BASE_DIR


@pytest.fixture
def own_upstream() -> Iterator[tuple[str, subprocess.Popen]]:
    """A stub upstream of this test's own, on a known port, that the test can stop."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.upstream", "--port", str(port)],
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/stats", process=process)
    yield url, process
    stop_process(process)
