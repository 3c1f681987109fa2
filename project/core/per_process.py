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


class PerProcess(Generic[T]):
    """A value made by ``factory`` on first use in each process."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._pid: int | None = None
        self._value: T | None = None

    def get(self) -> T:
        """This process's value, made now if this process has none yet."""
        if self._pid != os.getpid():
            self._value = self._factory()
            self._pid = os.getpid()
        return self._value  # type: ignore[return-value]

    def peek(self) -> T | None:
        """This process's value if it has made one, without making it."""
        return self._value if self._pid == os.getpid() else None

    def forget(self) -> None:
        """Drop this process's value: the next ``get()`` makes a fresh one."""
        self._pid = None
        self._value = None
