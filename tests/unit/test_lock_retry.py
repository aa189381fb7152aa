"""host/lock.flock_within: how it waits for a lock someone holds (a fake clock and a
flock that is refused a given number of times; the real lock's behaviour is in
tests/kernel/test_concurrency.py and tests/unit/test_output_contract.py)."""

from __future__ import annotations

from typing import List

import pytest

from portmapctl.host import lock


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: List[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(lock.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(lock.time, "sleep", fake.sleep)
    return fake


def _refused(monkeypatch, times: int) -> List[int]:
    tries: List[int] = []

    def flock(fd: int, how: int) -> None:
        tries.append(how)
        if len(tries) <= times:
            raise BlockingIOError()

    monkeypatch.setattr(lock.fcntl, "flock", flock)
    return tries


def test_a_lock_freed_soon_is_taken_soon(clock, monkeypatch):
    tries = _refused(monkeypatch, 3)
    assert lock.flock_within(3, wait=60.0)
    # Retried after 1, 2 and 4 ms: held 5 ms, taken within 7 ms (a fixed 50 ms step
    # took it after 50 at best).
    assert clock.slept == [0.001, 0.002, 0.004] and len(tries) == 4


def test_a_long_holder_is_asked_every_poll_and_the_wait_ends_on_time(clock, monkeypatch):
    _refused(monkeypatch, 10**6)
    said: List[float] = []
    taken = lock.flock_within(3, wait=1.0, on_wait=lambda: said.append(clock.now), say_after=0.5)
    assert not taken
    assert clock.slept[:7] == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05]
    assert set(clock.slept[7:-1]) == {0.05}
    assert clock.now == pytest.approx(101.0)  # (the last sleep cut to the deadline)
    assert len(said) == 1 and said[0] >= 100.5


def test_a_shorter_poll_is_never_exceeded(clock, monkeypatch):
    _refused(monkeypatch, 5)
    assert lock.flock_within(3, wait=10.0, poll=0.003)
    assert clock.slept == [0.001, 0.002, 0.003, 0.003, 0.003]
