"""What a local unprivileged user (``nobody``) can do to the stack: nothing.

Each test is an attack that worked against the stack before it ran least
privileged (issue 24): a pickle in the shared cache ran as root, PgBouncer let
anyone in as the database superuser, the state file and logs were readable,
and /metrics answered anyone through nginx.
"""

import json
import os
import pickle
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import redis
import requests

from tests.stack.helpers import RunningStack, as_nobody

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="acting as another user (nobody) needs root"
)


def uid_of(pid: int) -> int:
    """The real uid of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ValueError(f"no Uid line for {pid}")


def with_children(pid: int) -> list[int]:
    """``pid`` and its children (a master and its workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def test_no_service_runs_as_root(stack: RunningStack):
    """nginx, PgBouncer, Redis, the stub upstream and both instances (masters
    and workers) run as an unprivileged user, and not as nobody either."""
    state = stack.state
    pids = [state["nginx"]["pid"], state["pgbouncer"]["pid"], state["redis"]["pid"]]
    pids += [state["upstream"]["pid"], *(i["pid"] for i in state["instances"])]
    uids = {p: uid_of(p) for pid in pids for p in with_children(pid)}
    assert len(uids) >= len(pids) + 3  # nginx's and the instances' workers too
    assert 0 not in uids.values(), uids
    assert 65534 not in uids.values(), uids  # nobody is the attacker


def cached_keys(client: redis.Redis) -> set[bytes]:
    """The aggregation cache's keys in Redis."""
    return set(client.scan_iter(match="*agg:*"))


class RunsShell:
    """A pickle that runs ``command`` in a shell when it is loaded."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def cached_entry(stack: RunningStack) -> tuple[int, bytes, Path]:
    """Cache an item: (the item, its Redis key, a marker file for a pickle to
    write, in /tmp so that any user could)."""
    item = uuid.uuid4().int % 10**9 + 1
    client = redis.Redis.from_url(stack.state["redis"]["url"])
    before = cached_keys(client)
    assert stack.cached_item(item)["status"] == "ok"
    (key,) = cached_keys(client) - before
    client.close()
    return item, key, Path("/tmp") / f"stack-pickle-{uuid.uuid4().hex}"


def test_nobody_cannot_write_to_the_cache(stack: RunningStack):
    """Redis needs the password: nobody cannot plant a value, and the request
    that reads the key runs nothing."""
    item, key, marker = cached_entry(stack)
    redis_url = urlsplit(stack.state["redis"]["url"])
    payload = pickle.dumps(RunsShell(f"id > {marker}"))
    attack = as_nobody(
        "import redis, sys\n"
        f"client = redis.Redis(host={redis_url.hostname!r}, port={redis_url.port})\n"
        f"client.set({key!r}, {payload!r}, ex=300)\n"
        "print('written')\n"
    )
    try:
        assert stack.cached_item(item)["status"] == "ok"
        executed = marker.read_text() if marker.exists() else None
        assert executed is None, f"the pickle ran: {executed}"
        assert "written" not in attack.stdout
        assert "AuthenticationError" in attack.stderr, attack.stderr
    finally:
        marker.unlink(missing_ok=True)


def test_a_pickle_in_the_cache_is_never_run(stack: RunningStack):
    """Whoever has the password: a pickle written to the key the next request
    reads is not executed, and that request answers from a miss."""
    item, key, marker = cached_entry(stack)
    client = redis.Redis.from_url(stack.state["redis"]["url"])
    client.set(key, pickle.dumps(RunsShell(f"id > {marker}")), ex=300)
    client.close()
    try:
        source = stack.cached_item(item)
        executed = marker.read_text() if marker.exists() else None
        assert executed is None, f"the pickle ran: {executed}"
        assert source["status"] == "ok" and "cache" not in source, source
    finally:
        marker.unlink(missing_ok=True)


def test_nobody_cannot_log_in_through_pgbouncer(stack: RunningStack):
    """PgBouncer wants a password (SCRAM) from everyone, and the role the
    service logs in with is no superuser."""
    bouncer = stack.state["pgbouncer"]
    database = urlsplit(bouncer["database_url"])
    attempts = {}
    for user in ("postgres", database.username):
        attack = as_nobody(
            "import psycopg2\n"
            f"conn = psycopg2.connect(host='127.0.0.1', port={bouncer['port']}, "
            f"user={user!r}, dbname={database.path[1:]!r}, connect_timeout=5)\n"
            "cursor = conn.cursor()\n"
            "cursor.execute('SELECT rolsuper FROM pg_roles "
            "WHERE rolname = current_user')\n"
            "print('logged in, superuser:', cursor.fetchone()[0])\n"
        )
        attempts[user] = attack.stdout + attack.stderr
    for user, output in attempts.items():
        assert "logged in" not in output, (user, output)
        assert "password" in output, (user, output)

    service = psycopg2.connect(bouncer["database_url"], connect_timeout=5)
    try:
        with service.cursor() as cursor:
            cursor.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user"
            )
            assert cursor.fetchone() == (False, False, False)
    finally:
        service.close()


def test_nobody_reads_no_secret_or_log(stack: RunningStack):
    """The run dir is closed to others: the state file (tokens, passwords), the
    configurations and every log are unreadable for nobody."""
    state = stack.state
    files = [stack.run_dir / "state.json", Path(state["nginx"]["access_log"])]
    files += [Path(state["nginx"]["error_log"]), Path(state["pgbouncer"]["log"])]
    files += [Path(state["pgbouncer"]["config"])]
    files += [Path(i["log"]) for i in state["instances"]]
    files += sorted(stack.run_dir.glob("*.conf")) + sorted(stack.run_dir.glob("*.txt"))
    files = [path for path in files if path.exists()]
    assert len(files) >= 7, files
    attack = as_nobody(
        "import json, sys\n"
        "read = {}\n"
        f"for path in {[str(path) for path in files]!r}:\n"
        "    try:\n"
        "        read[path] = len(open(path).read())\n"
        "    except OSError as exc:\n"
        "        read[path] = type(exc).__name__\n"
        "print(json.dumps(read))\n"
    )
    read = json.loads(attack.stdout)
    assert set(read.values()) == {"PermissionError"}, read
    assert stack.run_dir.stat().st_mode & 0o007 == 0
    assert (stack.run_dir / "state.json").stat().st_mode & 0o777 == 0o600
    for path in files:
        assert path.stat().st_mode & 0o037 == 0, (path, oct(path.stat().st_mode))


def test_metrics_are_not_served_through_nginx(stack: RunningStack):
    """/metrics through nginx: 404, with or without the token. The instances
    answer it only with the token (Prometheus scrapes them directly)."""
    token = stack.state.get("metrics_token", "")
    authorized = {"Authorization": f"Bearer {token}"}
    for path in ("/metrics", "/metrics/", "//metrics", "/%6Detrics"):
        for headers in ({}, authorized):
            response = requests.get(stack.url + path, headers=headers, timeout=5)
            assert response.status_code in (401, 404), (path, response.status_code)
    instance = stack.state["instances"][0]["url"]
    assert requests.get(instance + "/metrics", timeout=5).status_code == 401
    scraped = requests.get(instance + "/metrics", headers=authorized, timeout=5)
    assert scraped.status_code == 200 and "gd_" in scraped.text
