"""openai_api.jobs: OpenAI create requests to JobSpecs (the task from the file's columns, hyperparameters,
extra tunewire options, errors naming the request's parameter), and records and events to OpenAI objects."""

from __future__ import annotations

import json

import pytest

from tunewire_server.datasets.report import Column, Report
from tunewire_server.errors import FieldViolation, InvalidSpec
from tunewire_server.jobs.states import JobState
from tunewire_server.models.listing import CheckpointInfo, CheckpointListing
from tunewire_server.openai_api import jobs
from tunewire_server.store import DatasetRecord, Event, JobRecord


def _file(*columns: str, fid: str = "ds-" + "a" * 64) -> DatasetRecord:
    report = Report(num_rows=3, columns=[Column(c, "string", 0) for c in columns])
    return DatasetRecord(fid, 1, "f.jsonl", "jsonl", 10, "a" * 64, 0.0, "a.jsonl", report.to_json())


def test_chat_files_train_on_messages_with_assistant_only_loss():
    spec = jobs.spec_from_request({"model": "m", "training_file": "x"}, _file("messages"), None)
    assert spec.sft.messages_field == "messages" and spec.sft.assistant_only_loss
    assert spec.train_dataset.uploaded.dataset_id == "ds-" + "a" * 64 and not spec.HasField("eval_dataset")


def test_prompt_completion_files_train_on_the_completion_and_text_files_on_text():
    spec = jobs.spec_from_request({"model": "m"}, _file("prompt", "completion"), _file("prompt", "completion"))
    assert (spec.sft.prompt_field, spec.sft.completion_field) == ("prompt", "completion")
    assert not spec.sft.assistant_only_loss and spec.eval_dataset.uploaded.dataset_id
    assert jobs.spec_from_request({"model": "m"}, _file("text"), None).sft.text_field == "text"
    with pytest.raises(InvalidSpec) as refused:
        jobs.spec_from_request({"model": "m"}, _file("question", "answer"), None)
    assert refused.value.violations[0].field == "training_file"


def test_hyperparameters_from_method_or_the_older_top_level_field_with_auto():
    method = {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}}}
    spec = jobs.spec_from_request({"model": "m", "method": method, "seed": 9, "suffix": "s"}, _file("text"), None)
    hp = spec.hyperparameters
    assert hp.num_train_epochs == 2 and not hp.HasField("per_device_train_batch_size")
    assert hp.learning_rate == pytest.approx(2.5e-5) and hp.seed == 9 and spec.display_name == "s"
    old = jobs.spec_from_request({"model": "m", "hyperparameters": {"batch_size": 4}}, _file("text"), None)
    assert old.hyperparameters.per_device_train_batch_size == 4
    lora = jobs.spec_from_request({"model": "m", "lora": {"r": 4}, "hyperparameters": {
        "learning_rate_multiplier": 1}}, _file("text"), None)
    assert lora.lora.r == 4 and lora.hyperparameters.learning_rate == pytest.approx(2e-4)


def test_tunewire_options_merge_over_the_chosen_task():
    spec = jobs.spec_from_request({"model": "m", "packing": True, "max_length": 128, "tunewire": {
        "sft": {"assistant_only_loss": False}, "hyperparameters": {"save_strategy": "steps", "save_steps": 3}}},
        _file("messages"), None)
    assert spec.sft.packing and spec.sft.max_length == 128 and spec.sft.messages_field == "messages"
    assert not spec.sft.assistant_only_loss and spec.hyperparameters.save_steps == 3


@pytest.mark.parametrize(("request_", "param"), [
    ({"model": ""}, "model"),
    ({"model": "m", "suffix": "a:b"}, "suffix"),
    ({"model": "m", "method": {"type": "dpo"}}, "method.type"),
    ({"model": "m", "hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"model": "m", "method": {"supervised": {"hyperparameters": {"batch_size": 1.5}}}},
     "method.supervised.hyperparameters.batch_size"),
    ({"model": "m", "seed": "7"}, "seed"),
    ({"model": "m", "bogus": 1}, "bogus"),
    ({"model": "m", "tunewire": {"sft": {"nope": 1}}}, "tunewire"),
])
def test_bad_requests_name_the_parameter(request_, param):
    with pytest.raises(InvalidSpec) as refused:
        jobs.spec_from_request(request_, _file("text"), None)
    assert refused.value.violations[0].field == param


def test_validation_errors_are_named_by_the_request_parameter():
    exc = jobs.as_request_error(InvalidSpec([FieldViolation("base_model", "x"),
                                             FieldViolation("train_dataset.uploaded.dataset_id", "y"),
                                             FieldViolation("hyperparameters.per_device_train_batch_size", "z"),
                                             FieldViolation("lora.r", "w")]))
    assert [v.field for v in exc.violations] == ["model", "training_file", "hyperparameters.batch_size",
                                                 "tunewire.lora.r"]


def _job(state: JobState, **kw) -> JobRecord:
    spec = {"base_model": "tiny", "display_name": "sfx", "train_dataset": {"uploaded": {"dataset_id": "ds-1"}},
            "hyperparameters": {"seed": 5}}
    return JobRecord("job-1", 1, json.dumps(spec), state, 100.5, ended_at=200.0, plan_json=json.dumps(
        {"hyperparameters": {"num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-4}}), **kw)


@pytest.mark.parametrize(("state", "status"), [
    (JobState.QUEUED, "queued"), (JobState.RUNNING, "running"), (JobState.PAUSING, "running"),
    (JobState.PAUSED, "paused"), (JobState.CANCELLING, "cancelled"), (JobState.CANCELLED, "cancelled"),
    (JobState.SUCCEEDED, "succeeded"), (JobState.FAILED, "failed")])
def test_states_map_onto_openai_statuses(state, status):
    obj = jobs.job_object(_job(state))
    assert obj["status"] == status and obj["tunewire"]["state"] == state.value
    assert (obj["fine_tuned_model"] is not None) == (state == JobState.SUCCEEDED)


def test_a_job_object_carries_model_files_hyperparameters_and_error():
    obj = jobs.job_object(_job(JobState.FAILED, error={"code": "NAN_LOSS", "message": "loss is nan",
                                                       "field": "hyperparameters.learning_rate", "kind": "USER"}))
    assert obj["object"] == "fine_tuning.job" and obj["model"] == "tiny" and obj["training_file"] == "ds-1"
    assert obj["hyperparameters"] == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 2.0}
    assert obj["seed"] == 5 and obj["created_at"] == 100 and obj["finished_at"] == 200
    assert obj["error"] == {"code": "NAN_LOSS", "message": "loss is nan", "param": "hyperparameters.learning_rate"}
    assert jobs.job_object(_job(JobState.SUCCEEDED))["fine_tuned_model"] == "ft:tiny:sfx:job-1"


def test_events_become_messages_and_metrics():
    state = jobs.event_object(Event("job-1", 1, 10.0, "state_change", {"state": "QUEUED", "message": "queued"}))
    assert state["type"] == "message" and state["id"] == "ftevent-1" and state["data"]["status"] == "queued"
    log = jobs.event_object(Event("job-1", 2, 11.0, "train_log", {"step": 3, "max_steps": 8, "epoch": 0.5,
                                                                  "loss": 1.5, "grad_norm": "nan"}))
    assert log["type"] == "metrics" and log["data"]["train_loss"] == 1.5 and log["data"]["total_steps"] == 8
    assert "grad_norm" not in log["data"]  # not finite: left out, so the JSON stays valid
    assert log["message"] == "Step 3/8: train_loss=1.5"
    summary = jobs.event_object(Event("job-1", 5, 11.0, "train_log", {"step": 8, "max_steps": 8, "epoch": 1}))
    assert summary["message"] == "Step 8/8"
    ev = jobs.event_object(Event("job-1", 3, 12.0, "eval_result", {"step": 4, "epoch": 1, "metrics": {"loss": 2}}))
    assert ev["data"]["valid_loss"] == 2
    failed = jobs.event_object(Event("job-1", 4, 13.0, "state_change", {
        "state": "FAILED", "error": {"code": "OOM", "message": "out of memory"}}))
    assert failed["level"] == "error" and "OOM" in failed["message"]
    assert jobs.seq_of_event_id("ftevent-12") == 12
    with pytest.raises(InvalidSpec):
        jobs.seq_of_event_id("evt-12")


def test_checkpoints_are_listed_newest_first():
    listing = CheckpointListing("job-1", [CheckpointInfo(4, 0.5, 1.0, 10, 5), CheckpointInfo(8, 1.0, 2.0, 10, 5,
                                                                                            {"loss": 0.5})], None)
    out = jobs.checkpoint_objects(_job(JobState.SUCCEEDED), listing)
    assert [c["step_number"] for c in out] == [8, 4] and out[0]["metrics"] == {"step": 8.0, "valid_loss": 0.5}
    assert out[0]["fine_tuned_model_checkpoint"] == "ft:tiny:sfx:job-1:ckpt-step-8"
