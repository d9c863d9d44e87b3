"""Micro-batching decisions, without models or threads."""

import queue
import threading
import time

from tunewire_server.worker.inference.batching import Batcher


def size(item):
    return len(item["inputs"])


def same_model(a, b):
    return a["model"] == b["model"]


def req(model="m", n=1):
    return {"model": model, "inputs": ["x"] * n}


def test_a_lone_request_does_not_wait():
    q = queue.Queue()
    b = Batcher(q, window_s=5.0, max_inputs=32)
    t0 = time.monotonic()
    assert b.fill(req(), size, same_model) == [req()]
    assert time.monotonic() - t0 < 0.5


def test_queued_requests_are_batched_and_stragglers_waited_for():
    q = queue.Queue()
    for _ in range(3):
        q.put(req())
    b = Batcher(q, window_s=0.2, max_inputs=32)
    threading.Timer(0.05, lambda: q.put(req())).start()
    batch = b.fill(b.next(), size, same_model)
    assert len(batch) == 4  # three queued, one straggler inside the window


def test_max_inputs_and_other_models_are_held_for_the_next_batch():
    q = queue.Queue()
    for item in (req(n=2), req(n=2), req(model="other"), req(n=1)):
        q.put(item)
    b = Batcher(q, window_s=0.01, max_inputs=4)
    first = b.fill(b.next(), size, same_model)
    assert [size(x) for x in first] == [2, 2]
    second = b.fill(b.next(), size, same_model)
    assert [x["model"] for x in second] == ["other"]
    third = b.fill(b.next(), size, same_model)
    assert [size(x) for x in third] == [1]


def test_end_of_input_is_never_swallowed():
    q = queue.Queue()
    q.put(req())
    q.put(None)
    b = Batcher(q, window_s=0.01, max_inputs=32)
    assert len(b.fill(b.next(), size, same_model)) == 1
    assert b.next() is None


def test_the_end_of_input_reaches_every_lane():
    q = queue.Queue()
    q.put(None)
    b = Batcher(q, window_s=0.01, max_inputs=32)
    assert b.next() is None and b.next() is None  # a second lane sharing the batcher sees it too


def test_turns_are_served_in_arrival_order():
    from tunewire_server.worker.inference.turns import Holder, Turns

    turns, order = Turns(), []
    first = Holder()
    turns.acquire(first)
    threads = []
    for i in range(3):
        def take(i=i):
            with turns.hold(Holder()):
                order.append(i)
        threads.append(threading.Thread(target=take))
        threads[-1].start()
        while turns.waiting() < i + 1:  # each waits before the next one starts
            time.sleep(0.001)
    turns.pass_turn(first)  # the three waiting go first, in order, then `first` continues
    order.append("first")
    turns.release(first)
    for t in threads:
        t.join()
    assert order == [0, 1, 2, "first"]
