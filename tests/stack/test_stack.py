"""The stack as deployed: nginx in front of two gunicorns, PgBouncer, PostgreSQL.

Run in file order against one stack (``make stack-test``): traffic flow, slow
and idle clients, a rolling restart and a killed instance under load, and last
that stopping the stack stops every process it started.
"""

import csv
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gevent
import psycopg2
import pytest
import redis
import requests

from tests.helpers import BASE_DIR
from tests.stack.helpers import (
    RunningStack,
    SteadyLoad,
    alive,
    eventually,
    kill_tree,
)

# A steady stream through the whole path: nginx, an instance, PgBouncer, PostgreSQL.
LOAD_PATH = "/demo/slow-sql/?x=3&ms=2"


def test_requests_reach_both_instances_and_name_the_client(stack: RunningStack):
    """nginx spreads requests over both instances; each instance logs the client
    nginx saw (from X-Forwarded-For), not nginx and not what the client claims."""
    prefix = uuid.uuid4().hex[:12]
    for n in range(10):
        response = requests.get(
            stack.url + "/demo/slow-sql/?x=7&ms=1",
            headers={"X-Request-ID": f"{prefix}-{n}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["square"] == 49
        assert response.headers["X-Request-ID"] == f"{prefix}-{n}"

    def ours() -> list[str]:
        return [line for line in stack.nginx_lines() if f"rid={prefix}-" in line]

    eventually(lambda: len(ours()) == 10)
    assert len(ours()) == 10
    served_by = {re.search(r"upstream=(\S+)", line).group(1) for line in ours()}
    assert served_by == stack.instance_ports()

    # "The client" is who connected to nginx. Connect from 127.0.0.2 (loopback
    # too) and claim another address: the instance must log 127.0.0.2.
    rid = f"{prefix}-spoof"
    with socket.create_connection(
        ("127.0.0.1", stack.state["nginx"]["port"]), source_address=("127.0.0.2", 0)
    ) as sock:
        sock.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {rid}\r\n"
            "X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")

    def instance_logs() -> list[str]:
        return [Path(i["log"]).read_text() for i in stack.state["instances"]]

    eventually(lambda: rid in "".join(instance_logs()))
    logs = instance_logs()
    for log in logs:  # both instances logged our requests with nginx's client
        assert re.search(rf"^127\.0\.0\.1 .*rid={prefix}-\d", log, re.MULTILINE)
    spoof_lines = [line for log in logs for line in log.splitlines() if rid in line]
    assert len(spoof_lines) == 1
    assert spoof_lines[0].startswith("127.0.0.2 "), spoof_lines


def test_database_path_goes_through_pgbouncer(stack: RunningStack):
    """slow-sql answers, and PgBouncer counts the transactions it pooled."""
    bouncer = stack.state["pgbouncer"]

    def transactions() -> int:
        # The service's role may read the admin console (stats_users).
        admin = psycopg2.connect(bouncer["database_url"], dbname="pgbouncer")
        try:
            admin.autocommit = True  # the admin console knows no BEGIN
            with admin.cursor() as cursor:
                cursor.execute("SHOW STATS")
                names = [column.name for column in cursor.description]
                rows = [dict(zip(names, row, strict=True)) for row in cursor]
        finally:
            admin.close()
        return sum(
            row["total_xact_count"] for row in rows if row["database"] == "stack"
        )

    before = transactions()
    for _ in range(20):
        response = requests.get(stack.url + "/demo/slow-sql/?x=7&ms=1", timeout=10)
        assert response.json()["square"] == 49
    # PgBouncer's stats are totals of its last period (1 s by default).
    deadline = time.monotonic() + 5
    while transactions() - before < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert transactions() - before >= 20


def fallbacks(stack: RunningStack, instance_url: str) -> float:
    """gd_cache_fallback_total of one instance, over its workers and labels."""
    text = requests.get(
        instance_url + "/metrics",
        headers={"Authorization": f"Bearer {stack.state['metrics_token']}"},
        timeout=5,
    ).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gd_cache_fallback_total{")
    )


def test_a_source_fetched_on_one_instance_is_a_hit_on_the_other(stack: RunningStack):
    """The aggregation cache is Redis: instance B answers from A's call."""
    first, second = (i["url"] for i in stack.state["instances"])
    item = uuid.uuid4().int % 10**9 + 1
    missed = stack.cached_item(item, first)
    hit = stack.cached_item(item, second)
    assert missed["status"] == hit["status"] == "ok"
    assert "cache" not in missed and hit["cache"] == "hit"
    # deploy/redis.conf: a full cache evicts instead of refusing writes.
    client = redis.Redis.from_url(stack.state["redis"]["url"])
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    client.close()


def test_aggregations_answer_with_redis_stopped(stack: RunningStack):
    """Redis killed: both instances still answer, from memory, and count it.

    Runs after the other cache test, and the stack stays without Redis after
    it (it is a cache: nothing later needs it).
    """
    instances = [i["url"] for i in stack.state["instances"]]
    item = uuid.uuid4().int % 10**9 + 1
    assert stack.cached_item(item)["status"] == "ok"
    before = sum(fallbacks(stack, url) for url in instances)
    redis = stack.state["redis"]["pid"]
    kill_tree(redis)
    assert eventually(lambda: not alive(redis))
    for url in instances * 3:
        # Fetched live where the instance has no copy; from memory where it has.
        assert stack.cached_item(item, url)["status"] == "ok"
    assert sum(fallbacks(stack, url) for url in instances) > before


def test_idle_and_slow_clients_do_not_slow_anyone(stack: RunningStack):
    """3,000 idle connections and a client trickling an endless body: /healthz
    through nginx still answers in well under 100 ms, and nginx cut the body off."""
    port = stack.state["nginx"]["port"]
    idle = []
    try:
        for _ in range(3000):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))

        cut_off: list[bytes] = []

        def trickle() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                try:
                    for _ in range(100):  # "endless": longer than the test waits
                        sock.sendall(b"1\r\nx\r\n")
                        time.sleep(0.1)
                except OSError:
                    pass  # nginx closed it
                try:
                    cut_off.append(sock.recv(200))
                except OSError:
                    cut_off.append(b"")

        slow = gevent.spawn(trickle)
        time.sleep(0.3)
        timings = []
        for _ in range(9):
            started = time.monotonic()
            response = requests.get(stack.url + "/healthz", timeout=5)
            timings.append(time.monotonic() - started)
            assert response.status_code == 200
            time.sleep(0.05)
        assert statistics.median(timings) < 0.1, timings
        # The idle connections were all still open while we probed.
        still_open = 0
        for sock in idle:
            sock.setblocking(False)
            try:
                still_open += sock.recv(1) != b""
            except BlockingIOError:
                still_open += 1
        assert still_open == 3000
        slow.join(timeout=15)
        # nginx answered the body with 413 (larger than client_max_body_size).
        assert cut_off and cut_off[0].startswith(b"HTTP/1.1 413"), cut_off
    finally:
        for sock in idle:
            sock.close()


def rolling_restart(stack: RunningStack) -> subprocess.CompletedProcess[str]:
    """Run deploy/rolling-restart against the stack; its outcome."""
    return subprocess.run(
        [str(BASE_DIR / "deploy" / "rolling-restart"), "--run-dir", str(stack.run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rolling_restarts_fail_no_request(stack: RunningStack):
    """Four deploy/rolling-restart runs in a row under 20 keep-alive clients
    that never retry: no request fails, the instances are new processes, and
    both serve afterwards."""
    old_pids = [i["pid"] for i in stack.state["instances"]]
    with SteadyLoad(stack.url + LOAD_PATH, clients=20) as load:
        time.sleep(0.5)
        for _ in range(4):
            result = rolling_restart(stack)
            assert result.returncode == 0, result.stdout + result.stderr
        time.sleep(0.5)
    assert load.requests > 1000
    assert load.failures == [], (len(load.failures), load.failures[:5])
    new_pids = [i["pid"] for i in stack.state["instances"]]
    assert all(new_pids) and not set(new_pids) & set(old_pids)

    since = stack.nginx_log_size()
    for _ in range(10):
        assert requests.get(stack.url + LOAD_PATH, timeout=10).status_code == 200
    eventually(lambda: len(stack.nginx_lines(since)) >= 10)
    lines = stack.nginx_lines(since)
    served_by = {re.search(r"upstream=(\S+)", line).group(1) for line in lines}
    assert served_by == stack.instance_ports()


def test_a_locust_load_loses_nothing_in_a_rolling_restart(
    stack: RunningStack, tmp_path: Path
):
    """``make loadtest --target`` through nginx (Locust, W1: ten upstream calls
    a request) while deploy/rolling-restart replaces both instances: Locust
    counts no failed request, and no refusal beyond a handful (one instance
    carries the load while the other restarts)."""
    command = [sys.executable, "-m", "loadtests.loadtest", "--target", stack.url]
    command += ["--upstream-url", stack.state["upstream"]["url"]]
    command += ["--scenarios", "W1", "--users", "10", "--seconds", "20"]
    command += ["--reports", str(tmp_path)]
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    with subprocess.Popen(
        command,
        cwd=BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as locust:
        time.sleep(8)  # past Locust's start and the steady state's warm-up
        restart = rolling_restart(stack)
        output, _ = locust.communicate(timeout=180)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    (report,) = tmp_path.glob("*-W1")
    with open(report / "locust_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 1000, output
    assert int(total["Failure Count"]) == 0, output
    refused = rows.get("/demo/fan-out/ W1 shed", {}).get("Request Count", "0")
    assert int(refused) <= int(total["Request Count"]) // 100, output


def test_killed_instance_fails_no_request(stack: RunningStack):
    """kill -9 of one instance (master and workers) under steady load: nginx
    sends the requests it could not deliver to the other one."""
    victim = stack.state["instances"][1]
    with SteadyLoad(stack.url + LOAD_PATH) as load:
        time.sleep(0.5)
        killed = kill_tree(victim["pid"])
        time.sleep(3)  # past fail_timeout: nginx tries the dead instance again
    assert len(killed) >= 2  # the master and its worker
    assert load.requests > 100
    assert load.failures == [], load.failures[:5]
    assert f"127.0.0.1:{victim['port']}" in "".join(stack.nginx_lines())

    # The stack noticed, and a rolling restart brings the instance back.
    assert eventually(lambda: stack.state["instances"][1]["pid"] is None)
    restart = rolling_restart(stack)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert alive(stack.state["instances"][1]["pid"])


def test_stopping_the_stack_stops_what_it_started(stack: RunningStack):
    """SIGINT (Ctrl-C): every process in the state file is gone, nothing else."""
    state = stack.state
    pids = [
        state["nginx"]["pid"],
        state["pgbouncer"]["pid"],
        *(i["pid"] for i in state["instances"] if i["pid"]),
    ]
    assert all(pids) and all(alive(pid) for pid in pids)
    stack.process.send_signal(signal.SIGINT)
    stack.process.wait(timeout=60)
    assert [pid for pid in pids if alive(pid)] == []
    assert stack.state["status"] == "stopped"
    if not state["postgres"]["started_here"]:  # it was running before: still is
        from project import embedded_pg

        assert embedded_pg.is_running(embedded_pg.TEST_DATA_DIR)
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.url + "/healthz", timeout=2)
