"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events and checkpoints, on the
JobManager (jobs.py converts). Lists are newest first with OpenAI's `after` cursor (the last id seen)."""

from __future__ import annotations

import asyncio
import base64

import orjson
from fastapi import APIRouter, Request

from tunewire_server.errors import FieldViolation, InvalidSpec, NotFound
from tunewire_server.openai_api import jobs
from tunewire_server.openai_api.errors import NotImplementedYet
from tunewire_server.store import DatasetRecord
from tunewire_server.validation.limits import check_job_id

router = APIRouter(prefix="/v1/fine_tuning/jobs")
DEFAULT_LIMIT, MAX_LIMIT = 20, 500


async def json_object(request: Request) -> dict:
    """The request body as a JSON object; InvalidSpec(body) otherwise."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidSpec(FieldViolation("body", "is not JSON")) from None
    if not isinstance(body, dict):
        raise InvalidSpec(FieldViolation("body", "must be a JSON object"))
    return body


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidSpec(FieldViolation("limit", f"must be 1..{MAX_LIMIT}"))
    return limit


def _file(face, body: dict, param: str) -> DatasetRecord | None:
    file_id = body.get(param)
    if file_id is None and param == "validation_file":
        return None
    if not isinstance(file_id, str) or not file_id:
        raise InvalidSpec(FieldViolation(param, "is required: the id of a file uploaded with purpose fine-tune"))
    try:
        return face.catalog.get(file_id)
    except (NotFound, InvalidSpec):
        raise InvalidSpec(FieldViolation(param, f"no uploaded file {file_id[:80]!r} (POST /v1/files)")) from None


def _job(face, job_id: str):
    try:
        check_job_id(job_id, "fine_tuning_job_id")
    except InvalidSpec:
        raise NotFound(f"no fine-tuning job {job_id[:80]!r}") from None
    return face.manager.get(job_id)


@router.post("")
async def create_job(request: Request) -> dict:
    face = request.app.state.face
    body = await json_object(request)
    training = _file(face, body, "training_file")
    validation = _file(face, body, "validation_file")
    spec = jobs.spec_from_request(body, training, validation)
    try:
        job = await face.manager.submit(spec, request.headers.get("idempotency-key", ""))
    except InvalidSpec as exc:
        raise jobs.as_request_error(exc) from None
    return jobs.job_object(job)


@router.get("")
async def list_jobs(request: Request, after: str | None = None, limit: int = DEFAULT_LIMIT) -> dict:
    face = request.app.state.face
    token = ""
    if after:
        token = base64.urlsafe_b64encode(str(_job(face, after).ordinal).encode()).decode()
    records, next_token = face.manager.list([], _limit(limit), token)
    return {"object": "list", "data": [jobs.job_object(j) for j in records], "has_more": bool(next_token)}


@router.get("/{job_id}")
async def retrieve_job(job_id: str, request: Request) -> dict:
    return jobs.job_object(_job(request.app.state.face, job_id))


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request) -> dict:
    face = request.app.state.face
    return jobs.job_object(await face.manager.cancel(_job(face, job_id).id))


async def _pause_or_resume(request: Request, job_id: str, method: str) -> dict:
    face = request.app.state.face
    job = _job(face, job_id)
    call = getattr(face.manager, method, None)
    if call is None:  # the JobManager of this build has no pause/resume yet
        raise NotImplementedYet(f"this server cannot {method} jobs yet")
    return jobs.job_object(await call(job.id))


@router.post("/{job_id}/pause")
async def pause_job(job_id: str, request: Request) -> dict:
    return await _pause_or_resume(request, job_id, "pause")


@router.post("/{job_id}/resume")
async def resume_job(job_id: str, request: Request) -> dict:
    return await _pause_or_resume(request, job_id, "resume")


@router.get("/{job_id}/events")
async def list_events(job_id: str, request: Request, after: str | None = None, limit: int = DEFAULT_LIMIT) -> dict:
    """Newest first. Seqs are dense (1, 2, 3... with no gaps), so the page before `after` is one range read."""
    face = request.app.state.face
    job = _job(face, job_id)
    limit = _limit(limit)
    before = jobs.seq_of_event_id(after) if after else job.last_seq + 1
    start = max(0, before - 1 - limit)
    events = face.manager.store.events_after(job.id, start, before - 1 - start) if before > 1 else []
    events = [e for e in events if e.seq < before]
    data = [jobs.event_object(e) for e in reversed(events)]
    return {"object": "list", "data": data, "has_more": start > 0}


@router.get("/{job_id}/checkpoints")
async def list_checkpoints(job_id: str, request: Request, after: str | None = None,
                           limit: int = 10) -> dict:
    face = request.app.state.face
    job = _job(face, job_id)
    listing = await asyncio.to_thread(face.models.list_checkpoints, job)
    data = jobs.checkpoint_objects(job, listing)
    if after:
        ids = [c["id"] for c in data]
        data = data[ids.index(after) + 1:] if after in ids else []
    limit = _limit(limit)
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit,
            "first_id": data[0]["id"] if data else None, "last_id": data[min(limit, len(data)) - 1]["id"]
            if data else None}
