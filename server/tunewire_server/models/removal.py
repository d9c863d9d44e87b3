"""DeleteJob: a terminal job's artifacts (and its model in the inference cache), then its events and record.

The artifacts go first: if the store cannot record the deletion (a full disk), the job is still there to be
deleted again, and deleting again is not an error. The record goes last, in one write with its events; from
then on GetJob answers NOT_FOUND and the job's request id may name a new job.
"""

from __future__ import annotations

import structlog

from tunewire_server.errors import FailedPrecondition, ResourceExhausted
from tunewire_server.models.service import ModelService
from tunewire_server.store.base import DiskFull, Store

log = structlog.get_logger("tunewire.models")


async def delete_job(store: Store, models: ModelService, job_id: str) -> bool:
    """Delete a terminal job: True when this call removed its record, False when there is no job `job_id`
    (never stored, or deleted before). FailedPrecondition for a job that is not terminal (cancel it
    first); ResourceExhausted when the store cannot write (its artifacts are gone then; delete it again)."""
    job = store.get_job(job_id)
    if job is None:
        return False
    if not job.terminal:
        raise FailedPrecondition(f"job {job_id} is {job.state.value}; cancel it first, then delete it")
    await models.delete(job)
    try:
        deleted = await store.write(store.delete_job, job_id)
    except DiskFull:
        raise ResourceExhausted(f"the server's data disk is full: job {job_id}'s artifacts are deleted but its "
                                "record cannot be; delete it again later") from None
    if deleted:
        log.info("job deleted", job_id=job_id)
    return deleted
