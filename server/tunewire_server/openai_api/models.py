"""Model names: a SUCCEEDED job's model is "ft:<base>:<suffix>:<job id>" (the suffix may be empty), and
resolves back to the job by its last part; GET /v1/models lists the base models under the model root and
the fine-tuned models of succeeded jobs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Request

from tunewire_server.errors import NotFound, preview
from tunewire_server.jobs.states import JobState
from tunewire_server.validation.limits import check_job_id

PREFIX = "ft:"
CHECKPOINT_PART = "ckpt-step-"
MAX_LISTED = 1000  # fine-tuned models listed at most (the newest)

router = APIRouter()


def fine_tuned_name(spec: dict, job_id: str) -> str:
    """The name a job's fine-tuned model is called by in OpenAI requests."""
    return f"{PREFIX}{spec.get('base_model', '')}:{spec.get('display_name', '')}:{job_id}"


def job_of_model(model: str, param: str = "model") -> str:
    """The job id a model name names ("ft:...:<job id>", or a bare job id); NotFound for anything else."""
    if not isinstance(model, str) or not model:
        raise NotFound(f"{param}: a fine-tuned model name is required (\"ft:<base>:<suffix>:<job id>\")")
    candidate = model.rsplit(":", 1)[-1] if model.startswith(PREFIX) else model
    if candidate.startswith(CHECKPOINT_PART):
        raise NotFound(f"{param}: {preview(model)} is a checkpoint; only a job's final model serves completions")
    try:
        return check_job_id(candidate, param)
    except Exception:
        raise NotFound(f"{param}: no fine-tuned model {preview(model)} on this server (base models are trained, "
                       "not served: use a job's fine_tuned_model)") from None


def base_models(root: Path) -> list[tuple[str, float]]:
    """Folders under the model root holding a config.json, with their modification time."""
    out = []
    if root.is_dir():
        for child in sorted(root.iterdir()):
            config = child / "config.json"
            if child.is_dir() and config.is_file():
                out.append((child.name, config.stat().st_mtime))
    return out


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    face = request.app.state.face
    data = [{"id": name, "object": "model", "created": int(mtime), "owned_by": "tunewire"}
            for name, mtime in await asyncio.to_thread(base_models, face.settings.model_root)]
    store = face.manager.store
    jobs = sorted(store.jobs_in_states([JobState.SUCCEEDED]), key=lambda j: j.created_at, reverse=True)
    for job in jobs[:MAX_LISTED]:
        spec = json.loads(job.spec_json)
        data.append({"id": fine_tuned_name(spec, job.id), "object": "model", "created": int(job.ended_at or
                     job.created_at), "owned_by": "tunewire", "parent": spec.get("base_model")})
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict:
    face = request.app.state.face
    if not model.startswith(PREFIX):
        for name, mtime in await asyncio.to_thread(base_models, face.settings.model_root):
            if name == model:
                return {"id": name, "object": "model", "created": int(mtime), "owned_by": "tunewire"}
    job = face.manager.get(job_of_model(model))
    if job.state != JobState.SUCCEEDED:
        raise NotFound(f"model: job {job.id} is {job.state.value}; its model exists once it has SUCCEEDED")
    spec = json.loads(job.spec_json)
    return {"id": fine_tuned_name(spec, job.id), "object": "model", "created": int(job.ended_at or job.created_at),
            "owned_by": "tunewire", "parent": spec.get("base_model")}
