"""Taking work off a queue in batches, for the background threads of serving.

The log writer, the shadow runner and the sidecar's forwarder all wait for a first item,
then let more arrive and take them together. :func:`take_batch` does that with one pause
per batch, not one wake-up per item: each wake-up of a background thread takes the GIL
from the request threads of the same process.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

__all__ = ["take_batch"]


def take_batch(
    items: queue.Queue[object],
    *,
    limit: int,
    linger_s: float,
    stop: object,
    timeout: float | None = None,
    pause: Callable[[float], object] = time.sleep,
) -> list[object]:
    """Block for a first item (at most ``timeout`` seconds: ``[]`` when none came); then,
    unless ``limit`` items already wait, ``pause(linger_s)`` once; then take what is queued,
    up to ``limit`` items or the ``stop`` marker (which ends the batch, included last)."""
    try:
        batch = [items.get(timeout=timeout)]
    except queue.Empty:
        return []
    if batch[0] is not stop and linger_s > 0 and items.qsize() < limit - 1:
        pause(linger_s)
    while len(batch) < limit and batch[-1] is not stop:
        try:
            batch.append(items.get_nowait())
        except queue.Empty:
            break
    return batch
