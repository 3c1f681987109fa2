"""One priority's wait line, served round-robin by client and in order within one
(newest first when the gate is overloaded: adaptive LIFO).

A client with many requests waiting (200 connections that retry at once) gets
one slot in turn with every other client that waits, not one slot per request
it queued: the line is fair by client, as a fair queue (DRR with equal
weights and unit cost) is by flow.
"""

from collections import OrderedDict, deque
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    """What the line needs of a waiter: the client it came from."""

    client: str


W = TypeVar("W", bound=Queued)


class FairLine(Generic[W]):
    """Waiters by client; ``pop`` takes the next client's oldest."""

    def __init__(self) -> None:
        self._clients: OrderedDict[str, deque[W]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, waiter: W) -> None:
        """Queue ``waiter`` behind its client's earlier ones."""
        line = self._clients.get(waiter.client)
        if line is None:
            line = self._clients[waiter.client] = deque()
        line.append(waiter)
        self._size += 1

    def pop(self, *, newest: bool = False) -> W | None:
        """The oldest (or ``newest``) waiter of the client whose turn it is
        (None: empty)."""
        if not self._clients:
            return None
        client, line = next(iter(self._clients.items()))
        waiter = line.pop() if newest else line.popleft()
        if line:
            self._clients.move_to_end(client)
        else:
            del self._clients[client]
        self._size -= 1
        return waiter

    def remove(self, waiter: W) -> bool:
        """Take ``waiter`` out (its wait ended); False if it was not in line."""
        line = self._clients.get(waiter.client)
        if line is None:
            return False
        try:
            line.remove(waiter)
        except ValueError:
            return False
        if not line:
            del self._clients[waiter.client]
        self._size -= 1
        return True
