"""api/convert.py's Job.seed: the seed a job runs with, from its stored plan (the spec's, or the one drawn at
submission); a job stored without a plan ran with the spec's seed or the worker's default then."""

from __future__ import annotations

import json

from tunewire.spec import spec_from_dict
from tunewire.types import Job
from tunewire_server.api.convert import job_to_proto
from tunewire_server.hyperparameters import LEGACY_SEED
from tunewire_server.jobs.states import JobState
from tunewire_server.store import JobRecord
from tunewire_server.validation import spec_to_json


def record(hp: dict, plan: dict | None) -> JobRecord:
    spec = spec_from_dict({"base_model": "m", "classification": {}, "train_dataset": {"file": {"path": "t.jsonl"}},
                           "hyperparameters": hp})
    return JobRecord(id="job-1", ordinal=1, spec_json=spec_to_json(spec), state=JobState.QUEUED, created_at=1.0,
                     plan_json=json.dumps(plan) if plan is not None else None)


def test_the_seed_is_the_plans():
    msg = job_to_proto(record({}, {"task": "classification", "hyperparameters": {"seed": 3_000_000_007}}))
    assert msg.seed == 3_000_000_007
    assert Job.from_proto(msg).seed == 3_000_000_007


def test_a_job_stored_without_a_plan_reports_the_seed_it_ran_with():
    assert job_to_proto(record({"seed": 5}, None)).seed == 5
    assert job_to_proto(record({}, None)).seed == LEGACY_SEED
    assert job_to_proto(record({}, {"task": "classification"})).seed == LEGACY_SEED
