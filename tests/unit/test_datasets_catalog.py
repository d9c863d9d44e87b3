"""tunewire_server.datasets.catalog on a real SQLite store: pages, and deletion refused while a queued or
running job names the dataset."""

from __future__ import annotations

import asyncio
import json

import pytest

from tunewire_server.config import Settings
from tunewire_server.datasets.catalog import Catalog
from tunewire_server.errors import FailedPrecondition, InvalidSpec, NotFound
from tunewire_server.jobs.states import JobState
from tunewire_server.store import SQLiteStore

SHA = "b" * 64
ID = "ds-" + SHA


@pytest.fixture
def catalog(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    store = SQLiteStore(settings.db_path)
    (settings.upload_dir / "datasets").mkdir(parents=True)
    yield Catalog(settings, store)
    store.close()


def add(catalog: Catalog, sha: str = SHA):
    (catalog.datasets_dir / f"{sha}.jsonl").write_text('{"a": 1}\n')
    report = {"num_rows": 1, "columns": [], "problem_rows": [], "problem_row_count": 0, "label_column": "",
              "label_counts": [], "columns_truncated": False, "labels_truncated": False}
    return catalog.store.add_dataset("ds-" + sha, "d.jsonl", "jsonl", 9, sha, f"{sha}.jsonl", json.dumps(report))


def job_naming(catalog: Catalog, job_id: str, where: str = "eval_dataset"):
    spec = {"base_model": "m", "train_dataset": {"file": {"path": "x.jsonl"}}, where: {"uploaded": {"dataset_id": ID}}}
    return catalog.store.create_job(job_id, json.dumps(spec), None, ("state_change", {"state": "QUEUED"}))


def test_a_dataset_named_by_a_queued_or_running_job_is_not_deleted(catalog):
    add(catalog)
    job_naming(catalog, "job-a", "eval_dataset")
    job_naming(catalog, "job-b", "train_dataset")
    catalog.store.update_job("job-b", state=JobState.RUNNING)
    with pytest.raises(FailedPrecondition) as info:
        asyncio.run(catalog.delete(ID))
    assert "job-a" in info.value.message and "job-b" in info.value.message
    for job_id in ("job-a", "job-b"):
        catalog.store.update_job(job_id, state=JobState.CANCELLED)
    assert asyncio.run(catalog.delete(ID)) is True
    assert not (catalog.datasets_dir / f"{SHA}.jsonl").exists()
    assert asyncio.run(catalog.delete(ID)) is False
    with pytest.raises(NotFound):
        catalog.get(ID)


@pytest.mark.parametrize("state", [JobState.PAUSING, JobState.PAUSED])
def test_a_dataset_named_by_a_paused_job_is_not_deleted(catalog, state):
    add(catalog)
    job_naming(catalog, "job-a", "train_dataset")
    catalog.store.update_job("job-a", state=state)  # a resume reads it again
    with pytest.raises(FailedPrecondition, match="job-a"):
        asyncio.run(catalog.delete(ID))


def test_pages_follow_their_tokens_and_foreign_tokens_are_refused(catalog):
    ids = [add(catalog, c * 64).id for c in "abc"]
    page, token = catalog.list(2, "")
    rest, last = catalog.list(2, token)
    assert [r.id for r in page + rest] == ids[::-1] and last == ""
    for bad in ("nope", "MTIz", "x" * 100):  # "MTIz" is a job listing's kind of token ("123")
        with pytest.raises(InvalidSpec):
            catalog.list(2, bad)


def test_a_label_count_on_request_reads_the_file_again(catalog):
    record = add(catalog)
    report = asyncio.run(catalog.report(record, "a"))
    assert [(c.value, c.count) for c in report.label_counts] == [("1", 1)] and report.num_rows == 1
