"""Sequence classification with transformers.Trainer: the tutorial's steps with today's API."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from tunewire.v1 import job_pb2
from tunewire_server import hyperparameters as definition
from tunewire_server.validation.dataset_scan import DatasetProblem, label_index
from tunewire_server.worker.protocol import MessageWriter
from tunewire_server.worker.runtime import UserError, checked_config
from tunewire_server.worker.training import data
from tunewire_server.worker.training.artifacts import save_final_model
from tunewire_server.worker.training.callback import Control, EventCallback, guarded
from tunewire_server.worker.training.class_weights import effective_weights, weighted_loss
from tunewire_server.worker.training.classification_metrics import classification_metrics
from tunewire_server.worker.training.trainer_args import training_kwargs

log = logging.getLogger("tunewire.worker.classification")


def run(spec: job_pb2.JobSpec, plan: dict, job_dir: Path, out: MessageWriter, control: Control,
        resume_from: str | None = None) -> dict:
    task = spec.classification
    plan = definition.resolve_plan(spec, plan)  # a plan stored by an older server gets the same defaults
    options = plan["classification"]
    text_field = task.text_field or "text"
    pair_field = task.text_pair_field or None
    label_field = task.label_field or "label"
    names: list[str] = plan["label_names"]
    seed = plan["hyperparameters"]["seed"]
    cache = job_dir / "cache"

    control.enter("model")
    checked_config(plan["base_model"])
    tokenizer = AutoTokenizer.from_pretrained(plan["base_model"])
    max_length = options["max_length"] or min(tokenizer.model_max_length, definition.CLASSIFICATION_MAX_LENGTH_CAP)

    def prepare(ds, field: str):
        data.require_columns(ds, [text_field, label_field] + ([pair_field] if pair_field else []), field)

        def encode(batch, indices):
            labels = []
            for row, value in zip(indices, batch[label_field], strict=True):
                try:  # the message names the row, never the value: it is data (issue 12, item 7)
                    index = label_index(value, names)
                except (DatasetProblem, ValueError, TypeError, OverflowError):
                    raise UserError("INVALID_DATA", f"row {row + 1}: the label ({type(value).__name__}) is not one "
                                    f"of the {len(names)} label names or an index below {len(names)}",
                                    field) from None
                if not 0 <= index < len(names):
                    raise UserError("INVALID_DATA", f"row {row + 1}: the label is out of range for {len(names)} "
                                    "labels", field)
                labels.append(index)
            encoded = tokenizer(
                batch[text_field],
                batch[pair_field] if pair_field else None,
                padding="max_length" if options["pad_to_max_length"] else False,  # else the collator pads per batch
                truncation=True,
                max_length=max_length,
            )
            encoded["labels"] = labels
            return encoded

        return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                      desc=f"tokenize {field}")

    def load(field: str):
        control.enter("data", field)
        return prepare(data.load(plan[field], field, seed, cache), field)

    train = load("train_dataset")
    evals = load("eval_dataset") if plan.get("eval_dataset") else None

    control.enter("model")
    model = AutoModelForSequenceClassification.from_pretrained(
        plan["base_model"],
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,  # a checkpoint with another head gets a fresh one
    )

    control.enter("config")
    weights = effective_weights(task.class_weights, names, train["labels"])
    if weights is not None:  # the job's log shows what `balanced` came to
        log.info("class weights in the loss: %s",
                 ", ".join(f"{name}={weight:.4g}" for name, weight in zip(names, weights, strict=True)))

    def compute_metrics(eval_pred):
        logits, references = eval_pred
        return classification_metrics(logits, references, names)

    # A classifier's loss is a mean over its own batch: in a multi-process run, Trainer's token averaging
    # across devices would scale it (and its gradients) by the number of processes.
    args = TrainingArguments(**training_kwargs(plan, job_dir), average_tokens_across_devices=False)
    callback = EventCallback(out, control)
    trainer = guarded(Trainer, control)(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics if evals is not None else None,
        compute_loss_func=weighted_loss(weights) if weights is not None else None,
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume_from)
    if control.stop or control.checkpoint_and_stop:
        return {}
    control.enter("save")
    meta = {"task": "classification", "label_names": names, "max_length": max_length, "text_pair": bool(pair_field)}
    save_final_model(job_dir, trainer.save_model, meta, key=control.checkpoint_key, step=trainer.state.global_step)
    return callback.last_eval
