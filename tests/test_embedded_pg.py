"""The embedded PostgreSQL: initialised once, restarted with its data, socket-only."""

from pathlib import Path
from urllib.parse import unquote

import psycopg2
import pytest

from project import embedded_pg


def test_socket_dir_sits_beside_short_data_dirs():
    """Short paths keep the socket next to the data (initdb wants that dir empty)."""
    data = Path("/srv/app/.data/postgres")
    assert embedded_pg.socket_dir(data) == Path("/srv/app/.data/postgres.sock")


def test_socket_dir_moves_to_tmp_for_long_paths():
    """Paths too long for a unix socket get a stable per-cluster temp dir."""
    data = Path("/" + "x" * 120) / "postgres"
    sock = embedded_pg.socket_dir(data)
    assert len(str(sock / ".s.PGSQL.5432")) < 108
    assert sock == embedded_pg.socket_dir(data)
    assert sock != embedded_pg.socket_dir(Path("/" + "y" * 120) / "postgres")


def test_url_names_the_socket_dir_and_database():
    """The URL carries the %-encoded socket dir as host."""
    data = Path("/srv/app/.data/postgres")
    url = embedded_pg.url(data, "mydb")
    assert url.startswith("postgres://postgres@")
    assert url.endswith(":5432/mydb")
    assert unquote(url.split("@")[1].split(":")[0]) == "/srv/app/.data/postgres.sock"


@pytest.fixture
def cluster(tmp_path) -> Path:
    """A brand-new cluster directory, stopped at the end of the test."""
    data = tmp_path / "pg"
    yield data
    embedded_pg.stop(data)


def connect(data: Path, database: str):
    return psycopg2.connect(
        host=str(embedded_pg.socket_dir(data)),
        user="postgres",
        dbname=database,
        connect_timeout=5,
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
