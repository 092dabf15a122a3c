"""take_batch: one pause per batch, the limit, the stop marker, the timeout."""

from __future__ import annotations

import queue

from pruneguard.deploy.batches import take_batch

STOP = object()


def _queue(*items: object) -> queue.Queue[object]:
    q: queue.Queue[object] = queue.Queue()
    for item in items:
        q.put(item)
    return q


def test_pauses_once_then_takes_what_arrived_up_to_the_limit() -> None:
    q = _queue(1)
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # items that arrive while the thread sleeps
        pauses.append(seconds)
        for item in (2, 3, 4, 5):
            q.put(item)

    assert take_batch(q, limit=4, linger_s=0.1, stop=STOP, pause=pause) == [1, 2, 3, 4]
    assert pauses == [0.1] and q.qsize() == 1


def test_no_pause_when_a_full_batch_already_waits() -> None:
    pauses: list[float] = []
    got = take_batch(_queue(*range(5)), limit=3, linger_s=0.1, stop=STOP, pause=pauses.append)
    assert got == [0, 1, 2] and pauses == []


def test_the_stop_marker_ends_the_batch() -> None:
    q = _queue(1, 2, STOP, 3)
    assert take_batch(q, limit=10, linger_s=0.0, stop=STOP) == [1, 2, STOP]
    assert take_batch(_queue(STOP), limit=10, linger_s=5.0, stop=STOP) == [STOP]  # no pause
    assert q.get_nowait() == 3


def test_an_empty_queue_gives_an_empty_batch_after_the_timeout() -> None:
    assert take_batch(_queue(), limit=10, linger_s=0.0, stop=STOP, timeout=0.01) == []
