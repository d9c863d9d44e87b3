"""OpenAI fine-tuning requests in, OpenAI objects out: a create request becomes a JobSpec (the task chosen
from the training file's columns), a JobRecord a `fine_tuning.job`, an Event a `fine_tuning.job.event`,
a checkpoint a `fine_tuning.job.checkpoint`.

States: QUEUED → queued, RUNNING → running, SUCCEEDED/FAILED/CANCELLED → succeeded/failed/cancelled,
PAUSED → paused. PAUSING → running: the job still holds its worker while it writes its checkpoint (and may
still finish), and it can be resumed only once paused. CANCELLING → cancelled: nothing is left to do with
it but wait for its worker to stop. The exact tunewire state is in the object's `tunewire.state`.
"""

from __future__ import annotations

import json
from typing import Any

from tunewire.spec import SpecError, spec_from_dict
from tunewire.v1 import job_pb2
from tunewire_server.datasets.report import Report
from tunewire_server.errors import FieldViolation, InvalidSpec
from tunewire_server.hyperparameters import DEFAULT_LORA_LEARNING_RATE, Hyperparameters
from tunewire_server.jobs.states import JobState
from tunewire_server.models.listing import CheckpointListing
from tunewire_server.openai_api.models import fine_tuned_name
from tunewire_server.store import DatasetRecord, Event, JobRecord

STATUS = {JobState.QUEUED: "queued", JobState.RUNNING: "running", JobState.PAUSING: "running",
          JobState.PAUSED: "paused", JobState.SUCCEEDED: "succeeded", JobState.FAILED: "failed",
          JobState.CANCELLING: "cancelled", JobState.CANCELLED: "cancelled"}
OPENAI_FIELDS = frozenset({"model", "training_file", "validation_file", "suffix", "seed", "hyperparameters",
                           "method", "metadata", "integrations"})
# tunewire options a client may send as top-level keys (the openai client's extra_body lands there), besides
# a whole partial JobSpec under "tunewire".
SHORTHANDS = {"lora": ("lora",), "packing": ("sft", "packing"), "max_length": ("sft", "max_length"),
              "max_steps": ("hyperparameters", "max_steps"), "assistant_only_loss": ("sft", "assistant_only_loss")}
MAX_SUFFIX = 64
DEFAULT_LEARNING_RATE = Hyperparameters().learning_rate


def _auto(value: Any, param: str, kind: type) -> Any:
    """None for "auto" (or absent): the server's default; else a positive number of `kind`."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or \
            (kind is int and value != int(value)):
        raise InvalidSpec(FieldViolation(param, f'must be "auto" or a positive {kind.__name__}, got {value!r}'))
    return kind(value)


def _hyperparameters(request: dict) -> tuple[dict, str]:
    """The supervised hyperparameters (method.supervised.hyperparameters, else the older top-level
    hyperparameters) and the parameter path they came from."""
    method = request.get("method")
    if method is not None:
        if not isinstance(method, dict):
            raise InvalidSpec(FieldViolation("method", "must be an object"))
        if method.get("type", "supervised") != "supervised":
            raise InvalidSpec(FieldViolation("method.type", f"{method.get('type')!r} is not supported; this server "
                                                            "trains supervised fine-tuning only"))
        supervised = method.get("supervised") or {}
        if not isinstance(supervised, dict):
            raise InvalidSpec(FieldViolation("method.supervised", "must be an object"))
        found = supervised.get("hyperparameters")
        if found is not None:
            if not isinstance(found, dict):
                raise InvalidSpec(FieldViolation("method.supervised.hyperparameters", "must be an object"))
            return found, "method.supervised.hyperparameters"
    found = request.get("hyperparameters") or {}
    if not isinstance(found, dict):
        raise InvalidSpec(FieldViolation("hyperparameters", "must be an object"))
    return found, "hyperparameters"


def sft_options(record: DatasetRecord, param: str) -> dict:
    """The SFT task for an uploaded file, from its columns: chat (`messages`) with assistant-only loss,
    prompt/completion with completion-only loss, or plain `text`."""
    columns = {c.name for c in Report.from_json(record.report_json).columns}
    if "messages" in columns:
        return {"messages_field": "messages", "assistant_only_loss": True}
    if {"prompt", "completion"} <= columns:
        return {"prompt_field": "prompt", "completion_field": "completion"}
    if "text" in columns:
        return {"text_field": "text"}
    raise InvalidSpec(FieldViolation(param, f"file {record.id} has no `messages` column (chat format), no `prompt` "
                                            "and `completion` columns, and no `text` column; its columns are "
                                            f"{sorted(columns)[:10]}"))


def _merge(target: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def spec_from_request(request: dict, training: DatasetRecord, validation: DatasetRecord | None) -> job_pb2.JobSpec:
    """The JobSpec of an OpenAI create request whose files have been looked up; InvalidSpec naming the
    request parameter at fault."""
    unknown = sorted(set(request) - OPENAI_FIELDS - set(SHORTHANDS) - {"tunewire"})
    if unknown:
        raise InvalidSpec(FieldViolation(unknown[0], "is not a parameter of this server (tunewire options go in "
                                                     f"`tunewire` or are one of {sorted(SHORTHANDS)})"))
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidSpec(FieldViolation("model", "is required: a base model of this server (GET /v1/models)"))
    suffix = request.get("suffix") or ""
    if not isinstance(suffix, str) or len(suffix) > MAX_SUFFIX or ":" in suffix:
        raise InvalidSpec(FieldViolation("suffix", f"must be a string of at most {MAX_SUFFIX} characters without ':'"))
    spec: dict = {"base_model": model, "display_name": suffix, "sft": sft_options(training, "training_file"),
                  "train_dataset": {"uploaded": {"dataset_id": training.id}}, "hyperparameters": {}}
    if validation is not None:
        spec["eval_dataset"] = {"uploaded": {"dataset_id": validation.id}}
    for key, path in SHORTHANDS.items():
        if key in request:
            _merge(spec, _nest(path, request[key]))
    extra = request.get("tunewire")
    if extra is not None:
        if not isinstance(extra, dict):
            raise InvalidSpec(FieldViolation("tunewire", "must be an object: a partial tunewire JobSpec"))
        _merge(spec, extra)
    hp, where = _hyperparameters(request)
    values = spec["hyperparameters"]
    if (epochs := _auto(hp.get("n_epochs"), f"{where}.n_epochs", int)) is not None:
        values["num_train_epochs"] = epochs
    if (batch := _auto(hp.get("batch_size"), f"{where}.batch_size", int)) is not None:
        values["per_device_train_batch_size"] = batch
    multiplier = _auto(hp.get("learning_rate_multiplier"), f"{where}.learning_rate_multiplier", float)
    if multiplier is not None:
        base = DEFAULT_LORA_LEARNING_RATE if spec.get("lora") else DEFAULT_LEARNING_RATE
        values["learning_rate"] = base * multiplier
    if request.get("seed") is not None:
        seed = request["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidSpec(FieldViolation("seed", f"must be an integer, got {seed!r}"))
        values["seed"] = seed
    try:  # the SDK's reading of a spec mapping: enum values may be short ("steps"), as in spec files
        return spec_from_dict(spec)
    except SpecError as exc:
        raise InvalidSpec(FieldViolation("tunewire", f"not a valid tunewire JobSpec: {exc}")) from None


# JobSpec fields as the create request's parameters, for errors that name the field at fault.
PARAMS = (("base_model", "model"), ("train_dataset", "training_file"), ("eval_dataset", "validation_file"),
          ("display_name", "suffix"), ("hyperparameters.seed", "seed"),
          ("hyperparameters.num_train_epochs", "hyperparameters.n_epochs"),
          ("hyperparameters.per_device_train_batch_size", "hyperparameters.batch_size"),
          ("hyperparameters.learning_rate", "hyperparameters.learning_rate_multiplier"))


def param_of(field: str) -> str:
    """The create request's parameter a JobSpec field came from (a tunewire option: "tunewire.<field>")."""
    for prefix, param in PARAMS:
        if field == prefix or field.startswith(prefix + "."):
            return param
    return f"tunewire.{field}"


def as_request_error(exc: InvalidSpec) -> InvalidSpec:
    """A JobSpec's InvalidSpec with each violation named by the create request's parameter."""
    return InvalidSpec([FieldViolation(param_of(v.field), v.description) for v in exc.violations])


def _nest(path: tuple[str, ...], value: Any) -> dict:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


# --- out ----------------------------------------------------------------------------------------


def _int_time(seconds: float | None) -> int | None:
    return int(seconds) if seconds is not None else None


def _spec(job: JobRecord) -> dict:
    return json.loads(job.spec_json)


def _file_of(spec: dict, key: str) -> str | None:
    return (spec.get(key) or {}).get("uploaded", {}).get("dataset_id")


def job_object(job: JobRecord) -> dict:
    """A `fine_tuning.job`."""
    spec = _spec(job)
    plan = job.plan or {}
    hp = plan.get("hyperparameters") or {}
    given = spec.get("hyperparameters") or {}
    lr = hp.get("learning_rate")
    base_lr = DEFAULT_LORA_LEARNING_RATE if spec.get("lora") else DEFAULT_LEARNING_RATE
    hyperparameters = {
        "n_epochs": hp.get("num_train_epochs", "auto") if "max_steps" not in given else "auto",
        "batch_size": hp.get("per_device_train_batch_size", "auto"),
        "learning_rate_multiplier": round(lr / base_lr, 6) if isinstance(lr, (int, float)) else "auto",
    }
    error = None
    if job.state == JobState.FAILED and job.error:
        error = {"code": job.error.get("code") or "failed", "message": job.error.get("message") or "",
                 "param": job.error.get("field") or None}
    seed = given.get("seed", hp.get("seed", getattr(job, "seed", None) or 42))
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "created_at": int(job.created_at),
        "finished_at": _int_time(job.ended_at) if job.terminal else None,
        "error": error,
        "fine_tuned_model": fine_tuned_name(spec, job.id) if job.state == JobState.SUCCEEDED else None,
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "model": spec.get("base_model", ""),
        "organization_id": "tunewire",
        "result_files": [],
        "seed": int(seed),
        "status": STATUS.get(job.state, "running"),
        "trained_tokens": None,
        "training_file": _file_of(spec, "train_dataset") or "",
        "validation_file": _file_of(spec, "eval_dataset"),
        "estimated_finish": None,
        "metadata": None,
        "integrations": [],
        "tunewire": {"state": job.state.value, "progress": job.progress, "metrics": job.metrics,
                     "attempts": job.attempts, "suffix": spec.get("display_name") or None},
    }


def event_id(seq: int) -> str:
    return f"ftevent-{seq}"


def seq_of_event_id(value: str) -> int:
    """The seq an event id names (the `after` cursor); InvalidSpec(after) for anything else."""
    prefix = "ftevent-"
    if not value.startswith(prefix) or not value[len(prefix):].isdigit():
        raise InvalidSpec(FieldViolation("after", f"is not an event id of this server ({prefix}N)"))
    return int(value[len(prefix):])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and \
        value not in (float("inf"), float("-inf"))


def event_object(event: Event) -> dict:
    """A `fine_tuning.job.event`: state changes and checkpoints as messages, train logs and evaluations as
    metrics (OpenAI's names: step, total_steps, train_loss, valid_loss, ..., and tunewire's own)."""
    p = event.payload
    level, kind, data = "info", "message", None
    if event.kind == "state_change":
        state = JobState(p["state"])
        message = f"Job {STATUS.get(state, state.value)}" + (f" ({state.value})" if STATUS.get(state) !=
                                                              state.value.lower() else "")
        if p.get("message"):
            message += f": {p['message']}"
        error = p.get("error")
        if state == JobState.FAILED:
            level = "error"
            if error:
                message += f" — {error.get('code')}: {error.get('message')}"
        data = {"status": STATUS.get(state), "state": state.value}
    elif event.kind == "train_log":
        kind = "metrics"
        data = {"step": p.get("step"), "total_steps": p.get("max_steps"), "epoch": p.get("epoch")}
        for src, dst in (("loss", "train_loss"), ("mean_token_accuracy", "train_mean_token_accuracy"),
                         ("learning_rate", "learning_rate"), ("grad_norm", "grad_norm"),
                         ("num_tokens", "num_tokens")):
            if _finite(p.get(src)):
                data[dst] = p[src]
        shown = ", ".join(f"{k}={v:.4g}" for k, v in data.items() if k.startswith("train_") and _finite(v))
        message = f"Step {p.get('step')}/{p.get('max_steps')}" + (f": {shown}" if shown else "")
    elif event.kind == "eval_result":
        kind = "metrics"
        metrics = p.get("metrics") or {}
        data = {"step": p.get("step"), "epoch": p.get("epoch")}
        data.update({f"valid_{k}": v for k, v in metrics.items() if _finite(v)})
        message = f"Step {p.get('step')}: " + ", ".join(f"{k}={v:.4g}" for k, v in data.items()
                                                         if k.startswith("valid_"))
    elif event.kind == "checkpoint_saved":
        data = {"step": p.get("step")}
        message = f"Checkpoint saved at step {p.get('step')}"
    else:
        data = {"kind": event.kind}
        message = event.kind.replace("_", " ")
    return {"object": "fine_tuning.job.event", "id": event_id(event.seq), "created_at": int(event.time),
            "level": level, "message": message, "type": kind, "data": data}


def checkpoint_objects(job: JobRecord, listing: CheckpointListing) -> list[dict]:
    """The job's checkpoints as `fine_tuning.job.checkpoint` objects, newest first (as OpenAI lists them)."""
    name = fine_tuned_name(_spec(job), job.id)
    out = []
    for c in reversed(listing.checkpoints):
        metrics: dict[str, Any] = {"step": float(c.step)}
        metrics.update({f"valid_{k}": v for k, v in c.metrics.items() if _finite(v)})
        out.append({"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{job.id}-{c.step}",
                    "created_at": int(c.time), "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{c.step}",
                    "fine_tuning_job_id": job.id, "step_number": c.step, "metrics": metrics})
    return out
