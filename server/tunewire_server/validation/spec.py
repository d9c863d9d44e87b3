"""Check a JobSpec completely before it is queued, and resolve it into the plan a worker runs.

The orchestration: bounds first (limits), then the structure of each part (model, hyperparameters,
sources, the task's options), then the data scan, which runs only when the structure is sound. Every
problem becomes a FieldViolation naming the JobSpec field (`train_dataset.file.path`) and, for data, the
row. Nothing here imports torch or grpc.
"""

from __future__ import annotations

from google.protobuf import json_format

from tunewire.v1 import job_pb2
from tunewire_server import hyperparameters as definition
from tunewire_server.config import Settings
from tunewire_server.errors import InvalidSpec
from tunewire_server.validation import classification, limits, sft
from tunewire_server.validation.common import Violations
from tunewire_server.validation.hyperparameters import check_best_metric, check_hyperparameters, check_lora
from tunewire_server.validation.model import check_model
from tunewire_server.validation.sources import check_dataset_source


def spec_to_json(spec: job_pb2.JobSpec) -> str:
    """The spec as JSON. A spec that JSON cannot hold (NaN or infinity in an inline row) is InvalidSpec
    naming the row, whether or not it went through validate() first."""
    try:
        return json_format.MessageToJson(spec, indent=None, preserving_proto_field_name=True)
    except (json_format.Error, ValueError):
        problems = limits.check_rows(spec)
        if problems:
            raise InvalidSpec(problems) from None
        raise


def spec_from_json(text: str) -> job_pb2.JobSpec:
    return json_format.Parse(text, job_pb2.JobSpec())


def validate(spec: job_pb2.JobSpec, settings: Settings) -> dict:
    """Return the worker's plan for `spec`, or raise InvalidSpec with every problem found.

    The plan holds every hyperparameter resolved, each default filled here once from their definition
    (tunewire_server/hyperparameters.py): "hyperparameters", "lora" (None without LoRA) and the task's
    entry ("classification" or "sft").

    Bounds on every value run first (limits: lengths, characters, enums, numbers, rows), and stop here
    when broken, so no later check sizes anything by or quotes an unbounded value; then cheap structural
    checks; the data scan runs only when the structure is sound.
    """
    v = Violations()
    limits.check_spec(spec, settings, v.add)
    v.raise_if_any()
    task = spec.WhichOneof("task")
    model_path = check_model(spec.base_model, settings, v)
    if task is None:
        v.add("task", "set exactly one task: classification or sft")
    check_hyperparameters(spec, settings, v)
    check_lora(spec, task, settings, v)
    if not spec.HasField("train_dataset"):
        v.add("train_dataset", "is required")
    train = check_dataset_source(spec.train_dataset, "train_dataset", "train", settings, v) \
        if spec.HasField("train_dataset") else None
    evals = check_dataset_source(spec.eval_dataset, "eval_dataset", "validation", settings, v) \
        if spec.HasField("eval_dataset") else None
    if task == "classification":
        classification.check_options(spec.classification, settings, v)
        if model_path is not None:
            classification.check_positions(spec.classification, spec.base_model, settings, v)
    elif task == "sft":
        sft.check_options(spec, settings, v)
    v.raise_if_any()

    plan: dict = {
        "task": task,
        "base_model": model_path,
        "train_dataset": train.to_dict(),
        "eval_dataset": evals.to_dict() if evals else None,
        # A spec without a seed gets one drawn here, kept in the plan (and so on the job: Job.seed).
        "hyperparameters": definition.hyperparameters_entry(spec, has_eval=evals is not None,
                                                            seed=definition.draw_seed()),
        "lora": definition.as_dict(lora) if (lora := definition.lora(spec)) is not None else None,
    }
    if task == "classification":
        plan["label_names"] = classification.scan(spec, train, evals, settings, v)
        plan["classification"] = definition.as_dict(definition.classification_options(spec))
    elif task == "sft":
        plan.update(sft.scan(spec, train, evals, settings, v))
    check_best_metric(spec, task, plan.get("label_names"), v)
    v.raise_if_any()
    return plan
