"""Who the stack's services run as, and the files only they may read.

Started as root, the stack runs every service (nginx, PgBouncer, Redis, the
stub upstream, the instances) as one unprivileged system user, made when
missing: a bug or a crafted cache value in any of them then gets that user,
not root, and not ``nobody`` (whom every other unprivileged program shares).
Started as anyone else, the services run as that user.
"""

import os
import pwd
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_USER = "gevent-django"
# What the services create is theirs alone: logs, temp files, sockets.
SERVICE_UMASK = 0o077


@dataclass(frozen=True)
class Account:
    """A user the services run as: name, uid and primary gid."""

    name: str
    uid: int
    gid: int

    @property
    def is_us(self) -> bool:
        """Whether this is the user running the stack (nothing to switch to)."""
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, Any]:
        """``subprocess.Popen`` arguments that start a process as this account,
        with no supplementary groups (root's would come along otherwise)."""
        if self.is_us:
            return {"umask": SERVICE_UMASK}
        return {
            "user": self.uid,
            "group": self.gid,
            "extra_groups": [],
            "umask": SERVICE_UMASK,
        }

    def can_enter(self, directory: Path) -> bool:
        """Whether this account may traverse ``directory`` (its mode bits)."""
        info = directory.stat()
        if self.uid == 0 or info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid == self.gid:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


def service_account() -> Account:
    """Under root ``SERVICE_USER`` (a system user with no login, made with
    ``useradd`` when missing); otherwise the user running the stack."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home"]
            + ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
            + [SERVICE_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def closed_directory(account: Account, path: Path) -> Path | None:
    """The first directory on the way to ``path`` that ``account`` cannot
    enter, or None."""
    for directory in [*reversed(path.parents), path]:
        if directory.is_dir() and not account.can_enter(directory):
            return directory
    return None


def unusable_interpreter(account: Account, base_dir: Path) -> str | None:
    """Why ``account`` cannot run the project with this interpreter, or None.

    Runs the interpreter as ``account`` and compares: when the directory of
    its shared library or standard library is closed to the account, the
    binary may still start and quietly load another Python's (a pyenv build
    under /root falls back to the system's), so a version is compared, not
    just an exit status.
    """
    if account.is_us:
        return None
    probe = "import sys, django, gunicorn, psycopg2, redis; print(sys.version)"
    for path in (Path(sys.executable), Path(sys.base_prefix), base_dir):
        closed = closed_directory(account, path.resolve())
        if closed is not None:
            return f"{closed} (on the way to {path}) is closed to {account.name}"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=base_dir,
        capture_output=True,
        text=True,
        timeout=60,
        **account.popen_kwargs(),
    )
    if result.returncode != 0:
        return f"{sys.executable} fails as {account.name}: {result.stderr.strip()}"
    if result.stdout.strip() != sys.version:
        return (
            f"{sys.executable} runs as Python {result.stdout.split()[0]} for "
            f"{account.name}, not {sys.version.split()[0]}: its libraries are "
            f"under a directory closed to {account.name} ({sys.base_prefix})"
        )
    return None


def write_private(
    path: Path, text: str, *, mode: int = 0o600, group: int | None = None
) -> None:
    """Write ``text`` to ``path`` with ``mode`` (and ``group``), never through
    a symbolic link, so no one else ever reads it, even while it is written."""
    descriptor = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode
    )
    with os.fdopen(descriptor, "w") as out:
        os.fchmod(descriptor, mode)  # an existing file keeps its mode otherwise
        if group is not None:
            os.fchown(descriptor, -1, group)
        out.write(text)


def private_log(path: Path) -> None:
    """Create ``path`` (or take an existing one) as a 0600 log of ours,
    appended to by the process we hand it to."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(descriptor, 0o600)
    os.close(descriptor)
