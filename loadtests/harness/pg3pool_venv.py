"""The psycopg 3 rival's own venv (``.data/venv-pg3pool``), built on demand.

The rival needs psycopg 3; the service's venv keeps psycopg2 and must not change
for a benchmark. The venv is made with ``python -m venv`` from the interpreter
running the bench and filled with ``pip install -r loadtests/pg3pool/requirements.txt``;
it is rebuilt only when that file changed since the last build (a stamp holding
its text), so every later run starts at once.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from loadtests.harness.paths import BASE_DIR, LOADTESTS

REQUIREMENTS = LOADTESTS / "pg3pool" / "requirements.txt"
VENV_DIR = BASE_DIR / ".data" / "venv-pg3pool"
STAMP = ".requirements"


def venv_python(venv: Path = VENV_DIR) -> Path:
    """The venv's interpreter."""
    return venv / "bin" / "python"


class VenvError(RuntimeError):
    """The rival's venv could not be built; the message ends with the tool's output."""


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise VenvError(f"{' '.join(args)} failed ({result.returncode}):\n{output}")


def ensure_venv(venv: Path = VENV_DIR, requirements: Path = REQUIREMENTS) -> Path:
    """Build ``venv`` from ``requirements`` unless already built from this very
    file; return its interpreter. Raises VenvError when venv or pip fails (no
    package index to reach, say)."""
    wanted = requirements.read_text()
    stamp = venv / STAMP
    if stamp.is_file() and stamp.read_text() == wanted and venv_python(venv).exists():
        return venv_python(venv)
    # A half-built or outdated venv is rebuilt from nothing: no stale package stays.
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv_python(venv))
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ]
    )
    stamp.write_text(wanted)
    return venv_python(venv)
