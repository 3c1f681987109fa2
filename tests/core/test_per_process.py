"""Per-process state: one value per process, a fresh one in a forked child."""

import os

from project.core.per_process import PerProcess


def test_one_value_per_process_and_a_fresh_one_after_fork():
    made: list[int] = []
    state = PerProcess(lambda: made.append(os.getpid()) or {"pid": os.getpid()})
    assert state.peek() is None
    first = state.get()
    assert state.get() is first
    assert state.peek() is first
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: what it sees before and after get()
        ok = state.peek() is None and state.get() is not first
        ok = ok and state.get()["pid"] == os.getpid()
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(child, 0)
    assert made == [os.getpid()]
    assert state.get() is first


def test_forget_makes_the_next_value_fresh():
    state = PerProcess(dict)
    first = state.get()
    state.forget()
    assert state.peek() is None
    assert state.get() is not first
