"""The Redis store's connection slots (``loopguard_core.stores._slots``): a bounded semaphore on C calls."""

from __future__ import annotations

import threading

import pytest

from loopguard_core.stores._slots import Slots


def test_slots_are_taken_until_none_is_free_and_given_back() -> None:
    slots = Slots(2)
    assert slots.acquire(False) and slots.acquire(False)
    assert not slots.acquire(False)  # all taken: at once, no wait
    assert slots.free() == 0
    slots.release()
    assert slots.free() == 1
    assert slots.acquire(False)


def test_a_waiter_times_out_without_a_slot_and_gets_one_given_back_meanwhile() -> None:
    slots = Slots(1)
    assert slots.acquire()
    assert not slots.acquire(True, 0.01)  # none came free within the timeout
    timer = threading.Timer(0.05, slots.release)
    timer.start()
    assert slots.acquire(True, 10)  # woken by the release, long before the timeout
    timer.join()
    assert slots.free() == 0


def test_many_threads_never_hold_more_than_the_slots() -> None:
    slots, lock = Slots(3), threading.Lock()
    holding, most = [0], [0]

    def work() -> None:
        for _ in range(200):
            assert slots.acquire(True, 10)
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
            with lock:
                holding[0] -= 1
            slots.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] <= 3
    assert slots.free() == 3


def test_releasing_more_than_was_taken_is_an_error() -> None:
    slots = Slots(1)
    with pytest.raises(ValueError, match="released too many times"):
        slots.release()
    assert slots.acquire(False)
    slots.release()
    with pytest.raises(ValueError, match="released too many times"):
        slots.release()


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "2"])
def test_a_size_that_is_not_a_positive_int_is_refused(size: object) -> None:
    with pytest.raises(ValueError, match="size >= 1"):
        Slots(size)  # type: ignore[arg-type]
