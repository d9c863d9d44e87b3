"""A server upgraded over the data of the previous version runs what that version queued: jobs stored before
plans moved into the store have their plan in jobs/<id>/plan.json, and the scheduler reads it from there."""

from __future__ import annotations

import json

import pytest

import tunewire
from tests.robust.test_faults import short_spec, write_data
from tests.support.server_thread import make_settings
from tunewire.spec import spec_from_dict
from tunewire_server import validation
from tunewire_server.store import SQLiteStore

pytestmark = pytest.mark.slow


def test_a_job_queued_before_plans_were_stored_runs_from_its_plan_json(server_factory, models_root, tmp_path):
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir, models_root)
    write_data(data_dir)
    spec = spec_from_dict(short_spec())
    plan = validation.validate(spec, settings)
    store = SQLiteStore(settings.db_path)  # what the previous version left: a queued job without a stored plan
    store.create_job("job-from-before", validation.spec_to_json(spec), None,
                     ("state_change", {"state": "QUEUED", "message": "queued"}))
    store.close()
    job_dir = settings.jobs_dir / "job-from-before"
    job_dir.mkdir(parents=True)
    (job_dir / "plan.json").write_text(json.dumps(plan))

    st = server_factory(data_dir=data_dir)
    with tunewire.Client(st.address, timeout=30) as client:
        job = client.wait("job-from-before", raise_on_failure=False)
    assert job.state == tunewire.JobState.SUCCEEDED, job.error
    assert (job_dir / "model").is_dir()
