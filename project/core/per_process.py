"""State that belongs to one process: made again in a forked child.

gunicorn forks its workers from a master; a pool of sockets, a breaker's
counters or a cache inherited across the fork would be shared by two
processes that cannot coordinate. Everything per process goes through here,
so "after a fork, start empty" is written once.
"""

import os
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# This process's id, set again in a child by ``os.fork``'s hook: ``getpid()``
# is a system call, and ``get`` runs on every upstream call (``get_pool``),
# where it was 0.6 % of a W1 worker.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class PerProcess(Generic[T]):
    """A value made by ``factory`` on first use in each process."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._made: tuple[int, T] | None = None  # (pid, value)

    def get(self) -> T:
        """This process's value, made now if this process has none yet."""
        made = self._made
        if made is None or made[0] != _pid:
            made = self._made = (_pid, self._factory())
        return made[1]

    def peek(self) -> T | None:
        """This process's value if it has made one, without making it."""
        made = self._made
        return made[1] if made is not None and made[0] == _pid else None

    def forget(self) -> None:
        """Drop this process's value: the next ``get()`` makes a fresh one."""
        self._made = None
