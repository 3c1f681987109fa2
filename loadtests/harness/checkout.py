"""Another git revision of this repository, checked out to run side by side."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loadtests.harness.paths import BASE_DIR


@contextmanager
def checkout(rev: str, workdir: Path) -> Iterator[Path]:
    """A temporary detached git worktree of ``rev``; removed afterwards."""
    tree = workdir / f"tree-{rev}"

    def git(*args: str) -> None:
        subprocess.run(
            ["git", *args], cwd=BASE_DIR, check=True, capture_output=True, timeout=60
        )

    git("worktree", "add", "--detach", str(tree), rev)
    try:
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))
