"""The embedded PostgreSQL: initialised once, restarted with its data, socket-only."""

import os
import subprocess
from pathlib import Path
from urllib.parse import unquote

import psycopg2
import pytest

from project import embedded_pg


@pytest.fixture
def not_root(monkeypatch):
    """Path rules as for an ordinary user (root keeps its clusters elsewhere)."""
    monkeypatch.setattr(embedded_pg.os, "geteuid", lambda: 1000)


def test_socket_dir_sits_beside_short_data_dirs(not_root):
    """Short paths keep the socket next to the data (initdb wants that dir empty)."""
    data = Path("/srv/app/.data/postgres")
    assert embedded_pg.socket_dir(data) == Path("/srv/app/.data/postgres.sock")


def test_socket_dir_moves_to_tmp_for_long_paths(not_root):
    """Paths too long for a unix socket get a stable per-cluster temp dir."""
    data = Path("/" + "x" * 120) / "postgres"
    sock = embedded_pg.socket_dir(data)
    assert len(str(sock / ".s.PGSQL.5432")) < 108
    assert sock == embedded_pg.socket_dir(data)
    assert sock != embedded_pg.socket_dir(Path("/" + "y" * 120) / "postgres")


def test_url_names_the_socket_dir_the_password_and_database(tmp_path):
    """The URL carries the password and the %-encoded socket dir as host."""
    data = tmp_path / "postgres"
    url = embedded_pg.url(data, "mydb")
    secret = embedded_pg.password_file(data).read_text()
    assert url.startswith(f"postgres://postgres:{secret}@")
    assert url.endswith(":5432/mydb")
    host = unquote(url.split("@")[1].split(":")[0])
    assert host == str(embedded_pg.socket_dir(data))
    assert embedded_pg.password_file(data).stat().st_mode & 0o777 == 0o600
    assert embedded_pg.url(data, "mydb") == url  # generated once


@pytest.fixture
def cluster(tmp_path) -> Path:
    """A brand-new cluster directory, stopped at the end of the test."""
    data = tmp_path / "pg"
    yield data
    embedded_pg.remove(data)


def connect(data: Path, database: str):
    return psycopg2.connect(
        **embedded_pg.connect_kwargs(data, database), connect_timeout=5
    )


def test_cluster_is_created_started_and_restarted_with_its_data(cluster):
    """First start initialises; restart keeps the data; start is idempotent."""
    assert not embedded_pg.is_running(cluster)
    url = embedded_pg.ensure_running(cluster, "probe")
    assert embedded_pg.is_running(cluster)
    assert url == embedded_pg.url(cluster, "probe")
    conn = connect(cluster, "probe")
    with conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        cursor.execute("SHOW listen_addresses")
        assert cursor.fetchone() == ("",)  # no TCP at all
    conn.close()

    assert embedded_pg.ensure_running(cluster, "probe") == url  # already running
    assert embedded_pg.stop(cluster) is True
    assert embedded_pg.stop(cluster) is False
    embedded_pg.ensure_running(cluster, "probe")
    conn = connect(cluster, "probe")
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT v FROM kept")
        assert cursor.fetchall() == [(7,)]
    conn.close()


def test_cli_reports_status(cluster, capsys):
    """`status` exits 3 when stopped and 0 when running; `url` prints the URL."""
    assert embedded_pg.main(["status", "--data", str(cluster)]) == 3
    assert embedded_pg.main(["start", "--data", str(cluster)]) == 0
    assert embedded_pg.main(["status", "--data", str(cluster)]) == 0
    assert embedded_pg.main(["url", "--data", str(cluster)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == embedded_pg.url(cluster)


def test_cluster_wants_the_password_and_hides_its_socket(cluster):
    """No password, no login; the socket's directory is 0700."""
    embedded_pg.ensure_running(cluster, "probe")
    kwargs = embedded_pg.connect_kwargs(cluster, "probe")
    del kwargs["password"]
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(**kwargs, connect_timeout=5)
    assert embedded_pg.socket_dir(cluster).stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_os_user_cannot_connect(cluster):
    """The OS user nobody cannot even reach the server's socket."""
    embedded_pg.ensure_running(cluster, "probe")
    path = embedded_pg.socket_dir(cluster) / f".s.PGSQL.{embedded_pg.PORT}"
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.socket(socket.AF_UNIX).connect({str(path)!r})\n"
        "except OSError as exc:\n"
        "    sys.exit(exc.strerror)\n"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-c", probe],
        user="nobody",
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


def test_a_trust_cluster_from_before_is_moved_to_passwords(cluster):
    """A cluster made with trust authentication gets SCRAM and the password."""
    embedded_pg.ensure_running(cluster, "probe")
    hba = embedded_pg.server_data_dir(cluster) / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    embedded_pg.stop(cluster)
    embedded_pg.ensure_running(cluster, "probe")
    assert "trust" not in hba.read_text().split("# TYPE")[-1]
    kwargs = embedded_pg.connect_kwargs(cluster, "probe")
    connect(cluster, "probe").close()
    del kwargs["password"]
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(**kwargs, connect_timeout=5)


def test_a_cluster_whose_password_file_is_lost_gets_a_new_password(cluster):
    """A new checkout where the old cluster survived (under root it lives in
    /var/lib): the cluster takes the freshly generated password."""
    embedded_pg.ensure_running(cluster, "probe")
    old = embedded_pg.password(cluster)
    embedded_pg.password_file(cluster).unlink()
    # Settings build the URL (making a new password file) before anything
    # starts the cluster.
    embedded_pg.url(cluster, "probe")
    embedded_pg.ensure_running(cluster, "probe")
    assert embedded_pg.password(cluster) != old
    connect(cluster, "probe").close()
    kwargs = embedded_pg.connect_kwargs(cluster, "probe")
    del kwargs["password"]
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(**kwargs, connect_timeout=5)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root layout applies under root")
def test_under_root_no_directory_of_the_project_is_opened(cluster):
    """Under root the server's files live in /var/lib/embedded-postgres: the
    directories above the cluster keep their permissions."""
    parents = list(cluster.parents)[:-1]
    before = [path.stat().st_mode for path in parents]
    embedded_pg.ensure_running(cluster, "probe")
    assert [path.stat().st_mode for path in parents] == before
    home = embedded_pg.server_data_dir(cluster).parent
    assert home.parent == Path("/var/lib/embedded-postgres")
    assert embedded_pg.socket_dir(cluster).parent == home
    assert embedded_pg._bin("postgres").startswith("/var/lib/embedded-postgres/")
