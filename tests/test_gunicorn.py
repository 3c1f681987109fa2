"""The service end to end: real gunicorn, gevent worker, PostgreSQL, stub upstream."""

import http.client
import os
import re
import resource
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import gevent
import pytest
import requests
from gevent.pool import Pool

from devtools.processes import stop as stop_process
from tests.helpers import (
    app_backends,
    is_shed,
    socket_count,
    worker_pid,
)
from tests.observability.live import samples, total

pytestmark = pytest.mark.django_db(transaction=True)


def timed_get(server, path: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = server.get(path, **kwargs)
    return response, time.monotonic() - started


def test_worker_is_gevent_and_patched(gunicorn_server):
    """The gevent worker logs that sockets and psycopg2 are patched."""
    log = gunicorn_server.log.read_text()
    assert "Using worker: project.server.worker.GeventWorker" in log
    assert "patched=True" in log
    assert "MonkeyPatchWarning" not in log
    # What the worker loaded is frozen out of the collector's full passes.
    frozen = re.search(r"frozen=(\d+)", log)
    assert frozen and int(frozen.group(1)) > 10000
    # And the collector runs far less often than Python's default (700).
    thresholds = re.search(r"gc=(\d+),(\d+),(\d+)", log)
    assert thresholds and int(thresholds.group(1)) >= 10000


def _keep_calling(url: str, until: float) -> tuple[float, int]:
    """One keep-alive client: seconds to its first answer, answers by ``until``."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    started, first, answers = time.monotonic(), None, 0
    try:
        while first is None or time.monotonic() < until:
            connection.request("GET", "/demo/slow-sql/?x=3&ms=20")
            response = connection.getresponse()
            response.read()
            # A fast refusal under overload is an answer too (admission control).
            assert response.status == 200 or is_shed(response.status, response.headers)
            answers += 1
            first = first if first is not None else time.monotonic() - started
    finally:
        connection.close()
    return first, answers


def test_new_connections_are_accepted_while_workers_are_saturated(
    start_gunicorn, test_database_url
):
    """400 keep-alive clients at once on 2 workers: every one answered (served, or
    refused at once by admission control) within 4 s.

    gunicorn's own gevent worker accepts one connection per event-loop
    iteration when there are several workers; with the workers saturated the
    clients that connected last got their first answer only when the rest
    stopped (here after 8 s).
    """
    name = "gevent-django-accept"
    server = start_gunicorn(test_database_url, workers=2, application_name=name)
    until = time.monotonic() + 8
    results = Pool(400).map(lambda _: _keep_calling(server.url, until), range(400))
    firsts = sorted(first for first, _ in results)
    assert firsts[-1] < 4.0, f"slowest first answers: {firsts[-5:]}"
    assert min(answers for _, answers in results) >= 3
    stop_process(server.process)  # its idle connections would crowd later servers


def _connection_closed(sock: socket.socket) -> bool:
    sock.settimeout(0)  # gevent's socket would wait for data despite MSG_DONTWAIT
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_and_slowloris_connections_do_not_lock_out_new_clients(
    start_gunicorn, test_database_url
):
    """1,200 connections that never finish a request (half idle, half trickling
    a header) against one worker's 1,000 slots: a new client is answered at
    once instead of after the keep-alive timeout (5 s), the longest-waiting
    connections are the ones closed, and a request in progress is not touched.
    """
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1400:
        pytest.skip("needs a file-descriptor limit of at least 1,400 (ulimit -n)")
    server = start_gunicorn(test_database_url)
    parts = urlsplit(server.url)
    in_progress = gevent.spawn(server.get, "/demo/delay/?ms=2500", timeout=10)
    gevent.sleep(0.3)
    held = []
    try:
        for i in range(1200):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
            if i % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            held.append(sock)
        gevent.sleep(1.0)  # the worker has accepted all it can
        response, elapsed = timed_get(server, "/healthz", timeout=10)
        assert response.status_code == 200
        assert elapsed < 1.0, f"/healthz took {elapsed:.2f} s"
        closed = [_connection_closed(sock) for sock in held]
        assert all(closed[:100]), "the oldest waits were not the ones closed"
        assert not any(closed[-100:]), "the newest waits were closed"
        assert in_progress.get(timeout=10).status_code == 200
    finally:
        for sock in held:
            sock.close()
    assert "are not enough: closed" in server.log.read_text()
    stop_process(server.process)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or an error's repr)."""
    sock.settimeout(15)
    received = b""
    try:
        while data := sock.recv(65536):
            received += data
    except OSError as exc:
        return received + repr(exc).encode()
    finally:
        sock.close()
    return received


def test_connections_in_the_listen_queue_at_sigterm_are_answered(
    start_gunicorn, test_database_url
):
    """SIGTERM while completed connections wait in the listen queue, their
    requests sent: each gets its whole answer, with ``Connection: close``.

    The worker is stopped (SIGSTOP) so nothing it would accept is: the kernel
    completes the clients' connects (half before the master's SIGTERM, half
    after the master closed its listener, the worker's still open) and queues
    them. When the last listening descriptor closes, the kernel resets what is
    still queued: gunicorn's worker closed its listener on SIGTERM with them
    there, and all 40 were reset (ConnectionResetError) before the worker
    accepted what was queued first (BatchAcceptServer.close).
    """
    server = start_gunicorn(test_database_url)
    worker = worker_pid(server)
    address = urlsplit(server.url).hostname, urlsplit(server.url).port
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    queued = []
    os.kill(worker, signal.SIGSTOP)
    try:
        for _ in range(20):
            queued.append(socket.create_connection(address, timeout=5))
            queued[-1].sendall(request)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the master has closed its listener, signalled the worker
        for _ in range(20):
            queued.append(socket.create_connection(address, timeout=5))
            queued[-1].sendall(request)
        time.sleep(1.0)  # the worker's 1 s check of whether to stop is due
    finally:
        os.kill(worker, signal.SIGCONT)
    answers = [_answer(sock) for sock in queued]
    complete = [
        answer
        for answer in answers
        if answer.startswith(b"HTTP/1.1 200 ")
        and b"\r\nconnection: close\r\n" in answer.lower()
        and answer.endswith(b'{"status": "ok"}')
    ]
    assert len(complete) == len(queued), answers
    assert server.process.wait(timeout=30) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5)


def _sent(address: tuple, path: str) -> socket.socket:
    """A connection with a GET of ``path`` sent on it."""
    sock = socket.create_connection(address, timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def test_connections_queued_behind_a_full_pool_at_sigterm_are_answered(
    start_gunicorn, test_database_url
):
    """WORKER_CONNECTIONS=2, both busy with a 1.5 s request: the next ten wait
    in the listen queue (a full pool accepts nothing). SIGTERM: the two finish,
    then the ten are answered, each with ``Connection: close``, as slots free
    (without BatchAcceptServer.close's accepting they are reset).
    """
    server = start_gunicorn(test_database_url, WORKER_CONNECTIONS="2")
    address = urlsplit(server.url).hostname, urlsplit(server.url).port
    slow = [_sent(address, "/demo/delay/?ms=1500") for _ in range(2)]
    time.sleep(0.3)  # both in flight: the pool is full
    queued = [_sent(address, "/healthz") for _ in range(10)]
    server.process.send_signal(signal.SIGTERM)
    answers = [_answer(sock) for sock in slow + queued]
    # The two in flight were answered keep-alive (gunicorn decides as a
    # request starts); each queued one was accepted after SIGTERM.
    served = [
        answer.startswith(b"HTTP/1.1 200 ")
        and (
            i < 2
            or b"\r\nconnection: close\r\n" in answer.lower()
            and answer.endswith(b'{"status": "ok"}')
        )
        for i, answer in enumerate(answers)
    ]
    summary = [answer.split(b"\r\n")[0] for answer in answers]
    assert all(served), summary
    assert server.process.wait(timeout=30) == 0


def test_burst_under_ulimit_1024_recovers(start_gunicorn, test_database_url, upstream):
    """ulimit -n 1024: the worker warns with the numbers and caps its upstream
    sockets; a burst of 1,200 legs ends within its deadline, then the worker
    answers at once and its upstream sockets close once idle."""
    server = start_gunicorn(
        test_database_url,
        nofile=1024,
        DEMO_UPSTREAM_URL=upstream,
        HTTP_POOL_IDLE_S="1",
        application_name="gevent-django-nofile",
    )
    # 1000 client connections + upstream sockets + the database do not fit.
    assert "a worker may need" in server.log.read_text()
    worker = worker_pid(server)
    responses = Pool(12).map(
        lambda _: server.get(
            "/demo/fan-out/?http=100&ms=300",
            headers={"X-Request-Timeout-Ms": "3000"},
            timeout=10,
        ),
        range(12),
    )
    assert [r.status_code for r in responses] == [200] * 12
    statuses = {leg["status"] for r in responses for leg in r.json()["legs"]}
    assert statuses <= {"ok", "timeout"} and "ok" in statuses
    assert "Too many open files" not in server.log.read_text()
    response, elapsed = timed_get(server, "/demo/fan-out/?http=10&ms=50")
    assert response.status_code == 200 and response.json()["ok"] == 10
    assert elapsed < 0.5
    time.sleep(2.5)  # HTTP_POOL_IDLE_S=1, swept every second
    assert socket_count(worker) < 20
    stop_process(server.process)


def _endless_chunks(sock: socket.socket, until: float) -> int:
    sent = 0
    try:
        while time.monotonic() < until:
            sock.sendall(b"1000\r\n" + b"x" * 4096 + b"\r\n")
            sent += 4096
    except OSError:
        pass  # the server closed the connection: what we want
    return sent


def test_an_endless_request_body_gets_413_and_a_closed_connection(gunicorn_server):
    """A POST streaming a chunked body forever: 413 JSON at once, connection closed,
    /healthz unaffected meanwhile."""
    parts = urlsplit(gunicorn_server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    sock.sendall(
        b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    streamer = gevent.spawn(_endless_chunks, sock, time.monotonic() + 3)
    started = time.monotonic()
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert time.monotonic() - started < 1.0
    health = [timed_get(gunicorn_server, "/healthz")[1] for _ in range(5)]
    assert max(health) < 0.1
    rest = b""
    while True:  # the server closes; an open connection would time out here
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    assert b"request body not accepted" in answer + rest
    streamer.kill()
    sock.close()


def test_a_declared_body_is_a_413(gunicorn_server):
    """Any Content-Length > 0 on these GET-only endpoints is a 413 JSON."""
    response = requests.post(
        gunicorn_server.url + "/demo/delay/?ms=1", data=b"x" * 5, timeout=5
    )
    assert response.status_code == 413
    assert response.json()["error"].startswith("request body not accepted")


def test_a_huge_declared_body_is_not_waited_for(gunicorn_server):
    """Content-Length of 1 GB with 10 bytes sent: 413 at once, connection closed."""
    parts = urlsplit(gunicorn_server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 1000000000\r\n\r\n" + b"x" * 10
        )
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert time.monotonic() - started < 1.0


def test_ten_sql_legs_take_one_leg_time(gunicorn_server):
    """/demo/fan-out/?sql=10&ms=500 returns in under 2 s (serial: 5 s)."""
    response, elapsed = timed_get(gunicorn_server, "/demo/fan-out/?sql=10&ms=500")
    assert response.status_code == 200
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 10
    assert 0.5 <= elapsed < 2.0


def test_ten_http_legs_take_one_leg_time(gunicorn_server):
    """/demo/fan-out/?http=10&ms=500 against the stub returns in under 2 s."""
    response, elapsed = timed_get(gunicorn_server, "/demo/fan-out/?http=10&ms=500")
    assert response.status_code == 200
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 10
    assert 0.5 <= elapsed < 2.0


def test_fifty_concurrent_slow_queries_on_one_worker(gunicorn_server):
    """50 clients each calling /demo/slow-sql/?ms=500 all finish in under 3 s."""
    pool = Pool(50)
    started = time.monotonic()
    responses = pool.map(
        lambda x: gunicorn_server.get(f"/demo/slow-sql/?x={x}&ms=500"), range(50)
    )
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 50
    assert [r.json()["square"] for r in responses] == [x * x for x in range(50)]
    assert elapsed < 3.0


def test_deadline_cuts_legs_and_leaves_nothing_behind(gunicorn_server):
    """Legs outlasting the deadline are timed out on time; no query keeps running."""
    response, elapsed = timed_get(
        gunicorn_server,
        "/demo/fan-out/?http=5&sql=5&ms=5000",
        headers={"X-Request-Timeout-Ms": "400"},
    )
    assert elapsed < 1.2
    body = response.json()
    assert response.status_code == 200
    assert [leg["status"] for leg in body["legs"]] == ["timeout"] * 10
    assert body["deadline_ms"] == 400
    waited = time.monotonic()
    while app_backends(state="active") and time.monotonic() - waited < 1.0:
        gevent.sleep(0.05)
    assert app_backends(state="active") == 0
    # The pool's size as its worker reports it: the default, sized from the budget.
    pool_size = total(samples(gunicorn_server.url), "gd_db_pool_size")
    assert app_backends() <= pool_size


def test_bad_input_through_gunicorn_is_a_400(gunicorn_server):
    """Validation errors reach the client as 400 JSON, not 500."""
    response = gunicorn_server.get("/demo/fan-out/?http=1000&ms=1")
    assert response.status_code == 400
    assert response.json()["param"] == "http"


def test_default_upstream_is_this_server(start_gunicorn, test_database_url):
    """Without DEMO_UPSTREAM_URL the HTTP legs call this server's own /demo/delay."""
    server = start_gunicorn(test_database_url, workers=1)
    response, elapsed = timed_get(server, "/demo/fan-out/?http=10&ms=300")
    assert [leg["status"] for leg in response.json()["legs"]] == ["ok"] * 10
    assert elapsed < 1.5


def test_unreachable_database_fails_fast_with_503(start_gunicorn, tmp_path):
    """With no database, /readyz and SQL endpoints answer 503 JSON quickly."""
    server = start_gunicorn(
        f"postgres://nobody@{tmp_path.as_posix().replace('/', '%2F')}/x"
    )
    response, elapsed = timed_get(server, "/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "reason": "database unreachable",
    }
    assert elapsed < 2.0
    response = server.get("/demo/slow-sql/?x=1&ms=1")
    assert response.status_code == 503
    assert response.json()["error"] == "database unavailable"
    legs = server.get("/demo/fan-out/?sql=1&ms=1").json()["legs"]
    assert legs[0]["error"] == "OperationalError: database unavailable"
    for path in ("/readyz", "/demo/fan-out/?sql=2&ms=1", "/demo/slow-sql/?x=1&ms=1"):
        assert tmp_path.as_posix() not in server.get(path).text  # no socket path
    assert server.get("/healthz").status_code == 200


def test_readyz_tells_a_full_pool_from_a_dead_database(
    start_gunicorn, test_database_url
):
    """Every pooled connection busy: /readyz is 200 "busy" within ~1 s, not 503."""
    server = start_gunicorn(
        test_database_url, DB_POOL_SIZE="2", application_name="gevent-django-busy"
    )
    busy = [
        gevent.spawn(server.get, "/demo/slow-sql/?x=1&ms=3000", timeout=10)
        for _ in range(4)
    ]
    gevent.sleep(0.5)
    response, elapsed = timed_get(server, "/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "busy"}
    assert 0.9 <= elapsed < 2.0
    gevent.joinall(busy)
    assert server.get("/readyz").json() == {"status": "ok", "database": "ok"}
    stop_process(server.process)


def test_recycled_workers_keep_the_embedded_database(start_gunicorn):
    """Workers restarted by max_requests leave the embedded PostgreSQL running."""
    from django.conf import settings

    from project import embedded_pg

    server = start_gunicorn(
        "", GUNICORN_CMD_ARGS="--max-requests 5 --max-requests-jitter 0"
    )
    statuses = []
    deadline = time.monotonic() + 20
    while server.log.read_text().count("Booting worker") < 3:
        assert time.monotonic() < deadline, "workers were not recycled"
        try:
            statuses.append(server.get("/readyz", timeout=5).status_code)
        except requests.ConnectionError:  # between an old worker and its successor
            pass
        gevent.sleep(0.05)
    assert len(statuses) >= 10
    assert set(statuses) == {200}
    assert embedded_pg.is_running(Path(settings.EMBEDDED_PG_DATA_DIR))
    assert server.get("/readyz").status_code == 200


def test_each_instance_has_its_own_control_socket(
    start_gunicorn, test_database_url, tmp_path
):
    """Two servers on one host get two gunicornc sockets, named by their address."""
    servers = [
        start_gunicorn(test_database_url, workers=1, XDG_RUNTIME_DIR=str(tmp_path))
        for _ in range(2)
    ]
    expected = {
        "gunicorn-" + server.url.removeprefix("http://").replace(":", "_") + ".ctl"
        for server in servers
    }
    assert {path.name for path in tmp_path.iterdir() if path.is_socket()} == expected
