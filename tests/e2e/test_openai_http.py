"""The OpenAI-compatible HTTP face, judged by the official `openai` package against a real server on
127.0.0.1 (its HTTP port beside the gRPC one, bearer tokens on): upload a chat JSONL, fine-tune a tiny
local chat model, follow its events and checkpoints, then chat and text completions (plain and streamed)
with the fine-tuned model; cancel, pause and resume other jobs; and the errors the client raises."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests import tiny_lm
from tests.support.server_thread import ServerThread, make_settings
from tunewire_server.jobs.manager import JobManager

TOKEN = "test-openai-token"
MAX_UPLOAD = 200_000
TERMINAL = ("succeeded", "failed", "cancelled")
CAT = [{"role": "user", "content": "what color is the cat?"}]
# a short run with checkpoints and a metrics event at every step
TUNEWIRE = {"hyperparameters": {"max_steps": 8, "logging_steps": 1, "save_strategy": "steps", "save_steps": 4},
            "sft": {"max_length": 64}}


@pytest.fixture(scope="module")
def http_server(tmp_path_factory, lm_root):
    settings = make_settings(tmp_path_factory.mktemp("openai-http"), lm_root, http_port=0, auth_tokens=TOKEN,
                             keep_checkpoints=-1, max_upload_bytes=MAX_UPLOAD)
    server = ServerThread(settings).start()
    yield server
    # a generous stop: WarmPool.close waits for a warm worker still importing torch (slow on a loaded machine)
    server.run(server.server.stop(grace=1), timeout=240)
    server._server_stopped = True
    server.stop()


@pytest.fixture(scope="module")
def oai(http_server) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_server.server.http_port}/v1", api_key=TOKEN,
                           max_retries=0, timeout=120)
    yield client
    client.close()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def chat_file(oai):
    return oai.files.create(file=("chat.jsonl", _jsonl(tiny_lm.chat_rows(32))), purpose="fine-tune")


def _wait(oai, job_id: str, statuses=TERMINAL, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while True:
        job = oai.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


@pytest.fixture(scope="module")
def trained(oai, chat_file):
    """The main job: created, its events listed while it runs, then followed to its end."""
    job = oai.fine_tuning.jobs.create(model="tiny-llama", training_file=chat_file.id, suffix="animals", seed=7,
                                      method={"type": "supervised", "supervised": {"hyperparameters": {
                                          "n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": 2}}},
                                      extra_body={"tunewire": TUNEWIRE})
    seen_running = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        events = oai.fine_tuning.jobs.list_events(job.id, limit=50).data
        current = oai.fine_tuning.jobs.retrieve(job.id)
        if current.status == "running":
            seen_running.append([e.type for e in events])
        if current.status in TERMINAL:
            break
        time.sleep(0.2)
    return job, _wait(oai, job.id), seen_running


def test_the_uploaded_file_is_listed_retrieved_and_readable(oai, chat_file):
    assert chat_file.purpose == "fine-tune" and chat_file.filename == "chat.jsonl" and chat_file.bytes > 0
    assert chat_file.id in [f.id for f in oai.files.list().data]
    assert oai.files.retrieve(chat_file.id).bytes == chat_file.bytes
    assert oai.files.content(chat_file.id).content == _jsonl(tiny_lm.chat_rows(32))


def test_a_job_fine_tunes_the_chat_model_to_success(http_server, trained):
    created, job, seen_running = trained
    assert created.status in ("queued", "running") and created.model == "tiny-llama"
    assert created.seed == 7 and created.hyperparameters.batch_size == 8
    assert created.hyperparameters.learning_rate_multiplier == pytest.approx(2)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny-llama:animals:{job.id}"
    assert job.finished_at and job.training_file == created.training_file
    assert seen_running, "the job was never seen running"
    # chat data trains with assistant-only loss on the messages column; extra_body's options are in the spec
    spec = json.loads(http_server.server.manager.get(job.id).spec_json)
    assert spec["sft"]["messages_field"] == "messages" and spec["sft"]["assistant_only_loss"] is True
    assert spec["hyperparameters"]["max_steps"] == 8 and spec["display_name"] == "animals"
    assert spec["hyperparameters"]["learning_rate"] == pytest.approx(2 * 5e-5)


def test_events_are_newest_first_with_metrics_and_state_changes(oai, trained):
    _, job, _ = trained
    events = oai.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert all(e.object == "fine_tuning.job.event" for e in events)
    assert [int(e.id.split("-")[1]) for e in events] == sorted((int(e.id.split("-")[1]) for e in events), reverse=True)
    metrics = [e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert len(metrics) == 8 and {e.data["step"] for e in metrics} == set(range(1, 9))
    assert all(e.data["total_steps"] == 8 for e in metrics)
    assert events[0].data["status"] == "succeeded" and events[-1].data["status"] == "queued"
    # paging with `after` walks back through the same events, none twice
    page = oai.fine_tuning.jobs.list_events(job.id, limit=3)
    walked = [e.id for e in page.data]
    while page.has_next_page():
        page = page.get_next_page()
        walked += [e.id for e in page.data]
    assert walked == [e.id for e in events]


def test_checkpoints_list_their_steps(oai, trained):
    _, job, _ = trained
    checkpoints = oai.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [8, 4]
    assert all(c.fine_tuning_job_id == job.id and c.metrics.step == c.step_number for c in checkpoints)


def test_chat_completion_plain_and_streamed_agree(oai, trained):
    _, job, _ = trained
    plain = oai.chat.completions.create(model=job.fine_tuned_model, messages=CAT, max_tokens=6, temperature=0)
    text = plain.choices[0].message.content
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason in ("stop", "length") and text
    assert plain.usage.completion_tokens > 0 and plain.usage.prompt_tokens > 0
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    chunks = list(oai.chat.completions.create(model=job.fine_tuned_model, messages=CAT, max_tokens=6,
                                              temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same text, token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_text_completion_plain_and_streamed(oai, trained):
    _, job, _ = trained
    plain = oai.completions.create(model=job.fine_tuned_model, prompt="the cat", max_tokens=5, temperature=0)
    assert plain.object == "text_completion" and plain.usage.completion_tokens > 0
    pieces = [c.choices[0].text for c in oai.completions.create(model=job.fine_tuned_model, prompt="the cat",
                                                                max_tokens=5, temperature=0, stream=True)]
    assert "".join(pieces) == plain.choices[0].text
    stopped = oai.completions.create(model=job.fine_tuned_model, prompt="the cat", max_tokens=5, temperature=0,
                                     stop=[plain.choices[0].text[-1:]] if plain.choices[0].text else None, seed=3)
    assert len(stopped.choices[0].text) <= len(plain.choices[0].text)


def test_models_lists_base_and_fine_tuned_models(oai, trained):
    _, job, _ = trained
    ids = [m.id for m in oai.models.list().data]
    assert "tiny-llama" in ids and job.fine_tuned_model in ids
    assert oai.models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model
    assert job.id in [j.id for j in oai.fine_tuning.jobs.list(limit=50).data]


def test_a_second_job_is_cancelled(oai, chat_file):
    job = oai.fine_tuning.jobs.create(model="tiny-llama", training_file=chat_file.id,
                                      extra_body={"tunewire": {"hyperparameters": {"max_steps": 500}}})
    cancelled = oai.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert _wait(oai, job.id).status == "cancelled"
    with pytest.raises(openai.NotFoundError):  # a cancelled job has no model
        oai.models.retrieve(f"ft:tiny-llama::{job.id}")
    with pytest.raises(openai.ConflictError):  # nor a model to chat with
        oai.chat.completions.create(model=f"ft:tiny-llama::{job.id}", messages=CAT)


def test_pause_and_resume(oai, chat_file, trained):
    job = oai.fine_tuning.jobs.create(model="tiny-llama", training_file=chat_file.id,
                                      extra_body={"tunewire": {"hyperparameters": {
                                          "max_steps": 60, "logging_steps": 1, "save_strategy": "no"}}})
    if not hasattr(JobManager, "pause"):
        with pytest.raises(openai.APIStatusError) as refused:
            oai.fine_tuning.jobs.pause(job.id)
        assert refused.value.status_code == 501
        oai.fine_tuning.jobs.cancel(job.id)
        pytest.skip("JobManager.pause is not in this build (the pause/resume work is merged separately): "
                    "the routes answer 501")
    _wait(oai, job.id, ("running", *TERMINAL))
    paused = oai.fine_tuning.jobs.pause(job.id)
    assert paused.status in ("running", "paused")
    assert _wait(oai, job.id, ("paused", *TERMINAL)).status == "paused"
    resumed = oai.fine_tuning.jobs.resume(job.id)
    assert resumed.status in ("queued", "running")
    assert _wait(oai, job.id).status == "succeeded"


def test_errors_come_as_the_clients_exceptions(oai, http_server, chat_file):
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.retrieve("job-0000000000000000")
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.list_events("no such job!")
    with pytest.raises(openai.BadRequestError) as bad_file:
        oai.files.create(file=("broken.jsonl", b'{"messages": [\n'), purpose="fine-tune")
    assert bad_file.value.body["param"] == "file" and "JSONL" in bad_file.value.message
    with pytest.raises(openai.BadRequestError) as too_large:
        oai.files.create(file=("big.jsonl", b'{"text": "x"}\n' * (MAX_UPLOAD // 10)), purpose="fine-tune")
    assert "max_upload_bytes" in too_large.value.message
    with pytest.raises(openai.BadRequestError) as missing:
        oai.fine_tuning.jobs.create(model="tiny-llama", training_file="file-missing")
    assert missing.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as bad_model:
        oai.fine_tuning.jobs.create(model="no-such-model", training_file=chat_file.id)
    assert bad_model.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad_hp:
        oai.fine_tuning.jobs.create(model="tiny-llama", training_file=chat_file.id,
                                    hyperparameters={"n_epochs": -1})
    assert bad_hp.value.body["param"] == "hyperparameters.n_epochs"
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="ft:tiny-llama::job-0000000000000000", messages=CAT)
    wrong = openai.OpenAI(base_url=oai.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.files.list()
    assert denied.value.body["type"] == "authentication_error"
    wrong.close()
