"""The image and a real PostgreSQL for the container tests (``make image-test``,
``make kube-test``): skipped, with the reason, where no engine can run."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from deploy import database, image
from devtools.processes import stop

DB_NAME = "image_test"


@pytest.fixture(scope="session")
def engine() -> image.Engine:
    """podman or docker, whichever can run containers here."""
    found, reason = image.find_engine()
    if found is None:
        pytest.skip(f"no container engine can run here: {reason}")
    return found


@pytest.fixture(scope="session")
def built_image(engine: image.Engine) -> str:
    """The image of this tree (``make image``; cached layers make it quick)."""
    tag = os.environ.get("IMAGE") or image.IMAGE
    try:
        image.build(engine, tag, os.environ.get("BASE_IMAGE") or None)
    except image.ImageError as error:
        pytest.fail(f"the image did not build: {error}")
    return tag


@pytest.fixture(scope="session")
def container_database_url() -> Iterator[str]:
    """A ``DATABASE_URL`` a container on the host's network can use: the tests'
    PostgreSQL through a TCP port on 127.0.0.1, as a role of its own that is no
    superuser (``deploy.database``), with a password checked by SCRAM."""
    from project import embedded_pg

    data = embedded_pg.TEST_DATA_DIR
    embedded_pg.ensure_running(data, DB_NAME)
    password = os.urandom(18).hex()
    role = database.ensure_role(embedded_pg.connect_kwargs(data), DB_NAME, password)
    socket = embedded_pg.socket_dir(data) / f".s.PGSQL.{embedded_pg.PORT}"
    forward = subprocess.Popen(
        [sys.executable, "-m", "tests.containers.tcp_forward", str(socket)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert forward.stdout is not None
    port = forward.stdout.readline().strip()
    assert re.fullmatch(r"\d+", port), port
    try:
        yield f"postgres://{role}:{quote(password)}@127.0.0.1:{port}/{DB_NAME}"
    finally:
        stop(forward, timeout=5)
