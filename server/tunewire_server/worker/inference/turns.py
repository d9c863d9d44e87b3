"""Fair turns at the model for the inference worker's threads.

Every Predict batch and every stream runs on its own thread, but only the thread holding the turn runs
model or tokenizer code. A generation hands the turn on after each token (`pass_turn`), so a long
generation interleaves with everything else instead of making it wait: a classifier call waits for at
most one step of each active generation. Waiters are served first come, first served.

Why turns rather than free-running threads: the tokenizers are not safe to call from several threads at
once, seeded sampling needs the random generator to itself (each holder that asked for one gets its own
RNG state, swapped in and out with the turn), and on a small machine one compute thread at a time keeps
every caller's latency predictable.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Holder:
    """One caller of the model. `private_rng`: its sampling uses its own RNG state (a seeded request)."""

    def __init__(self, private_rng: bool = False) -> None:
        self.private_rng = private_rng
        self._rng = None  # this holder's RNG state while another holds the turn
        self._outer = None  # the shared RNG state while this holder has the turn


class Turns:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def acquire(self, holder: Holder) -> None:
        with self._lock:
            if not self._held and not self._waiting:
                self._held = True
                event = None
            else:
                event = threading.Event()
                self._waiting.append(event)
        if event is not None:
            event.wait()  # release() hands the turn over directly: nobody can overtake a waiter
        if holder.private_rng:
            _swap_in(holder)

    def release(self, holder: Holder) -> None:
        if holder.private_rng:
            _swap_out(holder)
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False

    def pass_turn(self, holder: Holder) -> None:
        """Between two steps: let the callers waiting go first, then continue."""
        with self._lock:
            if not self._waiting:
                return
        self.release(holder)
        self.acquire(holder)

    @contextmanager
    def hold(self, holder: Holder) -> Iterator[None]:
        self.acquire(holder)
        try:
            yield
        finally:
            self.release(holder)

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)


def _rng_state():
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _swap_in(holder: Holder) -> None:
    holder._outer = _rng_state()
    if holder._rng is not None:  # on its first turn the holder seeds the generator itself
        _set_rng_state(holder._rng)


def _swap_out(holder: Holder) -> None:
    holder._rng = _rng_state()
    if holder._outer is not None:
        _set_rng_state(holder._outer)
        holder._outer = None
