"""The stored datasets: listing (newest first, paged like ListJobs), lookup, a fresh count of one column's
labels, and deletion, which is refused while a queued or running job names the dataset."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path

from google.protobuf import json_format

from tunewire.v1 import job_pb2
from tunewire_server.config import Settings
from tunewire_server.datasets import layout
from tunewire_server.datasets.report import DatasetProblem, Report, build_report
from tunewire_server.errors import FailedPrecondition, FieldViolation, InvalidSpec, NotFound
from tunewire_server.jobs.states import JobState
from tunewire_server.shared_store import dataset_key, open_shared
from tunewire_server.store import DatasetRecord, Store

DEFAULT_PAGE, MAX_PAGE = 50, 500
ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING, JobState.PAUSING,
          JobState.PAUSED)  # jobs that may still read their data (a paused one, once resumed)


def _token(ordinal: int) -> str:
    return base64.urlsafe_b64encode(f"d{ordinal}".encode()).decode()


def _before(token: str) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        if not text.startswith("d"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, UnicodeError):
        raise InvalidSpec(FieldViolation("page_token", "is not a token this server issued")) from None


def named_datasets(spec: job_pb2.JobSpec) -> set[str]:
    """The uploaded datasets a job spec names (train and eval)."""
    return {ds.uploaded.dataset_id for ds in (spec.train_dataset, spec.eval_dataset)
            if ds.WhichOneof("source") == "uploaded"}


class Catalog:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.datasets_dir = layout.datasets_dir(settings.upload_dir)

    def path(self, record: DatasetRecord) -> Path:
        return self.datasets_dir / record.file_name

    def list(self, page_size: int, page_token: str) -> tuple[list[DatasetRecord], str]:
        """One page, newest first, and the token of the next ('' on the last page)."""
        if len(page_token) > 64:
            raise InvalidSpec(FieldViolation("page_token", "is not a token this server issued"))
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        records = self.store.list_datasets(_before(page_token), size + 1)
        more = len(records) > size
        records = records[:size]
        return records, _token(records[-1].ordinal) if more and records else ""

    def get(self, dataset_id: str) -> DatasetRecord:
        record = self.store.get_dataset(layout.check_dataset_id(dataset_id))
        if record is None:
            raise NotFound(f"no dataset {dataset_id}")
        return record

    async def report(self, record: DatasetRecord, label_column: str = "") -> Report:
        """The stored report; with `label_column`, the file is read again to count that column's values."""
        report = Report.from_json(record.report_json)
        if not label_column or label_column == report.label_column:
            return report
        layout.check_label_column(label_column)
        try:
            fresh = await asyncio.to_thread(build_report, self.path(record), record.format, label_column)
        except (DatasetProblem, OSError) as exc:  # the stored file parsed on arrival: it was changed since
            raise FailedPrecondition(f"dataset {record.id} cannot be read again: {exc}") from None
        report.label_column, report.label_counts = fresh.label_column, fresh.label_counts
        report.labels_truncated = fresh.labels_truncated
        return report

    def users(self, dataset_id: str) -> list[str]:
        """The queued or running jobs whose spec names the dataset."""
        out = []
        for job in self.store.jobs_in_states(ACTIVE):
            spec = json_format.Parse(job.spec_json, job_pb2.JobSpec(), ignore_unknown_fields=True)
            if dataset_id in named_datasets(spec):
                out.append(job.id)
        return out

    async def delete(self, dataset_id: str) -> bool:
        """Remove the record, then the file. False when there was no such dataset; FailedPrecondition
        while a queued or running job names it."""
        layout.check_dataset_id(dataset_id)
        users = self.users(dataset_id)
        if users:
            shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
            raise FailedPrecondition(f"dataset_id: dataset {dataset_id} is used by {len(users)} queued or running "
                                     f"job(s) ({shown}); cancel them or wait until they end")
        record = self.store.get_dataset(dataset_id)
        if record is None:
            return False
        deleted = await self.store.write(self.store.delete_dataset, dataset_id)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(record).unlink)
        shared = open_shared(self.settings)
        if shared is not None:  # every replica's copy is a cache of this object: without it, none is usable
            await asyncio.to_thread(shared.delete_prefix, dataset_key(record.file_name))
        return deleted
