"""Issue 12, item 6 (and the runtime half of item 2): Predict and PredictStream under hostile use.

Unread streams are held (flow control from the gRPC client back to the worker) and stopped after
predict_stream_idle_s; long streams do not starve other callers; a client that goes away frees the
worker; inputs are bounded in characters (control plane) and tokens (worker); the worker refuses calls
beyond max_pending_predicts; memory goes back after a large batch; a numerically hopeless temperature is
a client error that leaves the worker serving. One real server with a tiny SFT job and a tiny classifier.
"""

from __future__ import annotations

import threading

import grpc
import pytest

import tunewire
from tests import tiny, tiny_lm
from tests.support.server_thread import ServerThread, make_settings
from tests.support.waiting import wait_for
from tunewire import JobState
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

IDLE_S = 5.0
MAX_PENDING = 6
# A client whose HTTP/2 receive window stays at 1 KB: its server-side `yield` blocks once about 1 KB of
# deltas is unread (the default BDP-grown window is about 4 MB, more than a whole tiny-model generation).
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
LONG = 4000  # max_new_tokens of the unread streams

SFT_SPEC = {
    "base_model": "tiny-llama",
    "sft": {"text_field": "text", "max_length": 32},
    "train_dataset": {"file": {"path": "text.jsonl"}},
    "hyperparameters": {"max_steps": 2, "learning_rate": 0.001, "per_device_train_batch_size": 8,
                        "save_strategy": "no"},
}
CLASSIFIER_SPEC = {
    "base_model": "tiny-bert",
    "classification": {},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "hyperparameters": {"max_steps": 2, "per_device_train_batch_size": 4, "save_strategy": "no"},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, models_root):
    root = tiny_lm.ensure_built(models_root)
    server = ServerThread(make_settings(tmp_path_factory.mktemp("predict-limits"), root,
                                        predict_stream_idle_s=IDLE_S, max_pending_predicts=MAX_PENDING)).start()
    datasets = server.settings.dataset_root
    tiny_lm.write_jsonl(datasets / "text.jsonl", tiny_lm.text_rows(16))
    tiny.write_jsonl(datasets / "train.jsonl", tiny.sentiment_rows(16))
    with tunewire.Client(server.address, timeout=120) as client:
        jobs = {}
        for name, spec in (("generator", SFT_SPEC), ("classifier", CLASSIFIER_SPEC)):
            job = client.submit(spec)
            list(client.stream_metrics(job.id))
            job = client.get(job.id)
            assert job.state == JobState.SUCCEEDED, job.error
            jobs[name] = job.id
        yield server, client, jobs
    server.stop()


def worker_stats(server) -> dict:
    return server.run(server.server.manager.inference.stats())


def worker_rss(server) -> int:
    """The inference worker's resident memory, in bytes (from /proc)."""
    import os

    with open(f"/proc/{server.server.manager.inference.pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stream_calls(server) -> list[dict]:
    return [c for c in worker_stats(server)["calls"] if c["op"] == "generate_stream"]


def held_streams(server, n: int) -> list[dict] | None:
    """The worker's streams once exactly `n` of them wait for their clients to read."""
    held = [c for c in stream_calls(server) if c["held"]]
    return held if len(held) == n else None


class UnreadStreams:
    """PredictStream calls opened on a small-window channel and never read."""

    def __init__(self, server, job_id: str, n: int, max_new_tokens: int = LONG) -> None:
        self.channel = grpc.insecure_channel(server.address, options=SMALL_WINDOW)
        stub = pb_grpc.TuningServiceStub(self.channel)
        request = pb.PredictStreamRequest(job_id=job_id, text="one two three",
                                          generation=pb.GenerationParams(max_new_tokens=max_new_tokens))
        self.calls = [stub.PredictStream(request, timeout=300) for _ in range(n)]

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        self.channel.close()


def test_unread_streams_are_held_and_other_callers_are_served(served):
    server, client, jobs = served
    streams = UnreadStreams(server, jobs["generator"], 4)
    try:
        held = wait_for(lambda: held_streams(server, 4), timeout=120)
        # Each stream stopped a bounded distance ahead of its client: the credit window plus what fits
        # in a 1 KB HTTP/2 window, nowhere near its 4000 tokens.
        assert all(c["tokens"] < 400 for c in held), held
        [label] = client.predict(jobs["classifier"], "great happy calm", timeout=60)
        [text] = client.predict(jobs["generator"], "the red", max_new_tokens=8, timeout=60)
        assert label.label in ("positive", "negative") and text.num_tokens <= 8
        after = stream_calls(server)  # still bounded (or already stopped, on a slow machine)
        assert all(c["tokens"] < 400 for c in after), (held, after)
        # Nobody reads for IDLE_S seconds: the worker stops them and frees their slots...
        wait_for(lambda: not stream_calls(server), timeout=60)
        # ...and a client that reads on gets what was generated, then a clear RESOURCE_EXHAUSTED.
        pieces = []
        with pytest.raises(grpc.RpcError) as info:
            pieces.extend(m.text_delta for m in streams.calls[0])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "read nothing" in info.value.details()
        assert pieces and "four" in "".join(pieces)
    finally:
        streams.close()


def test_long_streams_do_not_starve_a_classifier(served):
    """Default client windows absorb a whole tiny generation, so these streams really run: their tokens
    are generated in turns with everyone else's, and a classifier call is answered while all of them
    are still under way (before the fix it waited for every one to finish, one after another)."""
    server, client, jobs = served
    generators = [client.predict_stream(jobs["generator"], "one two three", max_new_tokens=LONG) for _ in range(3)]
    firsts = [next(g) for g in generators]  # all three are generating
    assert all(firsts)
    try:
        [label] = client.predict(jobs["classifier"], "awful bad pain", timeout=120)
        assert label.label in ("positive", "negative")
        running = stream_calls(server)
        assert len(running) == 3 and all(c["tokens"] < LONG for c in running), running
    finally:
        for g in generators:
            g.close()
    wait_for(lambda: not stream_calls(server), timeout=30)


def test_a_client_that_goes_away_stops_its_generation_even_unread(served):
    server, client, jobs = served
    streams = UnreadStreams(server, jobs["generator"], 1)
    try:
        [held] = wait_for(lambda: held_streams(server, 1), timeout=120)
    finally:
        streams.close()  # the client goes away while its stream is held (well before IDLE_S)
    wait_for(lambda: not stream_calls(server), timeout=IDLE_S / 2)
    [line] = [x for x in (server.settings.data_dir / "inference.log").read_text().splitlines()
              if f"stream {held['id']}:" in x]
    assert "cancelled after" in line and "read nothing" not in line


def test_calls_beyond_max_pending_predicts_are_resource_exhausted(served):
    server, client, jobs = served
    streams = UnreadStreams(server, jobs["generator"], MAX_PENDING)
    try:
        wait_for(lambda: len(stream_calls(server)) == MAX_PENDING, timeout=120)
        with pytest.raises(tunewire.ResourceExhaustedError, match="max_pending_predicts"):
            client.predict(jobs["classifier"], "great", timeout=60)
    finally:
        streams.close()
    wait_for(lambda: not stream_calls(server), timeout=30)
    assert client.predict(jobs["classifier"], "great", timeout=60)  # room again


def test_oversized_inputs_are_invalid_arguments_naming_the_input(served):
    server, client, jobs = served
    limit = server.settings.max_predict_input_chars
    cases = [
        (lambda: client.predict(jobs["classifier"], ["fine", "x" * (limit + 1)]), "inputs[1]"),
        (lambda: client.predict(jobs["generator"], [[{"role": "user", "content": "y" * (limit // 2)},
                                                     {"role": "user", "content": "z" * (limit // 2)}]]),
         "conversations[0].messages"),
        (lambda: list(client.predict_stream(jobs["generator"], "w" * (limit + 1))), "text"),
    ]
    words = " ".join(["great"] * (server.settings.max_predict_input_tokens + 10))  # few characters, many tokens
    assert len(words) < limit
    cases += [
        (lambda: client.predict(jobs["classifier"], ["fine", "good", words]), "inputs[2]"),
        (lambda: client.predict(jobs["generator"], [[{"role": "user", "content": words}]]),
         "conversations[0].messages"),
        (lambda: list(client.predict_stream(jobs["generator"], words)), "text"),
    ]
    for call, field in cases:
        with pytest.raises(tunewire.InvalidArgumentError) as info:
            call()
        assert info.value.violations[0].field == field
        assert len(str(info.value)) < 1024
    assert client.predict(jobs["classifier"], ["fine"])  # the worker serves on


def test_only_the_caller_with_an_over_long_input_fails_in_a_shared_batch(served):
    server, client, jobs = served
    words = " ".join(["great"] * (server.settings.max_predict_input_tokens + 10))
    results: dict[str, object] = {}

    def call(name, inputs):
        try:
            results[name] = client.predict(jobs["classifier"], inputs, timeout=60)
        except tunewire.TunewireError as exc:
            results[name] = exc

    threads = [threading.Thread(target=call, args=(f"ok{i}", ["calm happy"])) for i in range(4)]
    threads.append(threading.Thread(target=call, args=("long", ["good", words])))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results.pop("long"), tunewire.InvalidArgumentError)
    assert all(isinstance(r, list) and len(r) == 1 for r in results.values()), results


def test_memory_goes_back_after_a_large_batch(served):
    server, client, jobs = served
    client.predict(jobs["classifier"], ["warm up"] * 64)
    before = worker_rss(server)
    words = " ".join(["great", "pill", "calm", "doctor"] * 1000)  # about 4000 tokens, 20 KB
    big = [f"{i} {words}" for i in range(server.settings.max_predict_inputs)]  # 256 of them, about 5 MB
    assert len(client.predict(jobs["classifier"], big, timeout=120)) == len(big)
    after = worker_rss(server)
    print(f"RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB")
    assert after - before < 40 * 2**20, f"RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB"


def test_a_hopeless_temperature_is_a_client_error_and_the_worker_serves_on(served):
    server, client, jobs = served
    pid = server.server.manager.inference.pid
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.predict(jobs["generator"], "the red", do_sample=True, temperature=1e-300, max_new_tokens=5)
    assert info.value.violations[0].field == "generation.temperature"
    assert "tensor" not in str(info.value)
    [after] = client.predict(jobs["generator"], "the red", max_new_tokens=5)
    assert after.num_tokens <= 5 and server.server.manager.inference.pid == pid
