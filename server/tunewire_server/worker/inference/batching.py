"""Dynamic micro-batching for the inference worker.

While one batch runs, concurrent requests queue up. The next batch takes every compatible request
already waiting; when that shows concurrency (more than one request), it waits up to a short window
for stragglers. A lone request never waits, so one client pays no latency for batching.
Several threads may share one Batcher under a lock (the inference worker's Predict lanes).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

Item = Any  # (request, cancel_event), or None at the end of input


class Batcher:
    def __init__(self, requests: queue.Queue, window_s: float, max_inputs: int) -> None:
        self._requests = requests
        self._window_s = window_s
        self._max_inputs = max_inputs
        self._held: list[Item] = []  # taken from the queue but not fit for the last batch

    def next(self) -> Item:
        """The next request, or None at the end of input; None stays, so every caller of next() sees it."""
        item = self._held.pop(0) if self._held else self._requests.get()
        if item is None:
            self._held.insert(0, None)
        return item

    def fill(self, first: Item, size: Callable[[Item], int], compatible: Callable[[Item, Item], bool]) -> list[Item]:
        """`first` plus compatible queued items, up to max_inputs inputs in all."""
        batch, total = [first], size(first)
        deadline = None
        while total < self._max_inputs:
            try:
                if self._held:
                    item = self._held.pop(0)
                elif deadline is None:
                    item = self._requests.get_nowait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    item = self._requests.get(timeout=remaining)
            except queue.Empty:
                if deadline is not None or len(batch) == 1:
                    break
                deadline = time.monotonic() + self._window_s  # concurrency seen: wait for stragglers
                continue
            if item is None or not compatible(first, item) or total + size(item) > self._max_inputs:
                self._held.append(item)
                break
            batch.append(item)
            total += size(item)
        return batch
