"""Rows and tokens of a job's data as training sees them: the job's own loading (worker/training/data.py),
formatting (the SFT modes, TRL's own tokenizing) and tokenizer."""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from tunewire.v1 import job_pb2
from tunewire_server import hyperparameters as definition
from tunewire_server.estimates.protocol import DataFacts
from tunewire_server.worker.training import data


@dataclass
class Counted:
    """The facts, and the training sequences (token ids as trained, labels for a classifier) for a probe."""

    facts: DataFacts
    sequences: list[list[int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def percentile(values: list[int], q: float) -> int:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def mean_padded(lengths: list[int], batch: int, seed: int) -> float:
    """Mean length of a batch padded to its longest row, over one shuffled epoch (the trainer's sampler
    shuffles; padding per batch is what the collators do)."""
    if not lengths:
        return 0.0
    order = list(lengths)
    random.Random(seed).shuffle(order)
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    return sum(max(b) * len(b) for b in batches) / len(order)


def _facts(raw: list[int], trained: list[int], max_length: int, eval_rows: int, eval_lengths: list[int],
           batch: int, seed: int, padded_to_max: bool) -> DataFacts:
    per_row = float(max_length) if padded_to_max else mean_padded(trained, batch, seed)
    eval_mean = float(max_length) if padded_to_max else (sum(eval_lengths) / len(eval_lengths) if eval_lengths else 0.0)
    return DataFacts(train_rows=len(raw), eval_rows=eval_rows, train_tokens=sum(raw),
                     truncated_rows=sum(1 for n in raw if n > max_length), max_length=max_length,
                     p50=percentile(raw, 50), p95=percentile(raw, 95), max=max(raw, default=0),
                     train_sequences=len(trained), mean_train_length=per_row, mean_eval_length=eval_mean,
                     peak_length=max_length if padded_to_max else max(trained, default=0),
                     mean_unpadded_length=sum(trained) / max(len(trained), 1))


def classification(spec: job_pb2.JobSpec, plan: dict, cache: Path) -> Counted:
    """A classifier's rows: text (and pair) tokenized as the training worker does, before truncation."""
    from transformers import AutoTokenizer

    from tunewire_server.validation.dataset_scan import label_index

    task = spec.classification
    options = plan["classification"]
    hp = plan["hyperparameters"]
    text, pair = task.text_field or "text", task.text_pair_field or None
    label_field = task.label_field or "label"
    tokenizer = AutoTokenizer.from_pretrained(plan["base_model"])
    max_length = options["max_length"] or min(tokenizer.model_max_length, definition.CLASSIFICATION_MAX_LENGTH_CAP)

    def lengths(key: str) -> tuple[list[list[int]], list[int]]:
        ds = data.load(plan[key], key, hp["seed"], cache)
        data.require_columns(ds, [text, label_field] + ([pair] if pair else []), key)
        ids = tokenizer(list(ds[text]), list(ds[pair]) if pair else None, truncation=False)["input_ids"]
        labels = [label_index(v, plan["label_names"]) for v in list(ds[label_field])]
        return ids, labels

    train_ids, labels = lengths("train_dataset")
    eval_ids = lengths("eval_dataset")[0] if plan.get("eval_dataset") else []
    raw = [len(ids) for ids in train_ids]
    trained = [min(n, max_length) for n in raw]
    eval_lengths = [min(len(ids), max_length) for ids in eval_ids]
    facts = _facts(raw, trained, max_length, len(eval_ids), eval_lengths, hp["per_device_train_batch_size"],
                   hp["seed"], options["pad_to_max_length"])
    counted = Counted(facts, [ids[:max_length] for ids in train_ids], labels)
    if facts.truncated_rows:
        counted.notes.append(f"{facts.truncated_rows} training rows are longer than max_length ({max_length} tokens) "
                             "and will be cut")
    return counted


def _tokenize_sft(ds, tokenizer, sp: dict, name: str, chat_template: str | None):
    """TRL's own preparation (SFTTrainer._prepare_dataset), without truncation or packing."""
    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(output_dir=tmp, max_length=None, packing=False, dataset_text_field="text",
                           completion_only_loss=sp["completion_only_loss"],
                           assistant_only_loss=sp["assistant_only_loss"], bf16=False, fp16=False,
                           report_to="none")
        sample = next(iter(ds))
        completion_only = sp["completion_only_loss"]
        if completion_only is None:
            completion_only = "prompt" in sample and "completion" in sample
        trainer = SimpleNamespace(_tokenizer=tokenizer, chat_template=chat_template,
                                  completion_only_loss=completion_only, padding_free=False)
        return SFTTrainer._prepare_dataset(trainer, ds, tokenizer, config, False, None, name)


def sft(spec: job_pb2.JobSpec, plan: dict, sp: dict, cache: Path) -> Counted:
    """An SFT job's rows as TRL tokenizes them; packing counts the packed rows."""
    from transformers import AutoTokenizer

    from tunewire_server.worker.training.sft import to_trl_dataset

    hp = plan["hyperparameters"]
    tokenizer = AutoTokenizer.from_pretrained(plan["base_model"])
    notes: list[str] = []
    if sp.get("chat_template_source"):
        source = Path(sp["chat_template_source"])
        if source.is_file():
            tokenizer.chat_template = source.read_text()
        else:  # TRL clones the template (and its special tokens) from another model's tokenizer
            tokenizer.chat_template = AutoTokenizer.from_pretrained(str(source)).chat_template
            notes.append("token counts use the cloned chat template without its added special tokens")
    chat_template = None
    if sp["assistant_only_loss"]:
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers

        if not has_generation_markers(tokenizer.chat_template):
            chat_template = get_training_chat_template(tokenizer)

    def tokenized(key: str):
        ds = to_trl_dataset(data.load(plan[key], key, hp["seed"], cache), spec.sft, key,
                            check_rows=plan[key]["kind"] == "hub")
        return _tokenize_sft(ds, tokenizer, sp, key, chat_template)

    train = tokenized("train_dataset")
    evals = tokenized("eval_dataset") if plan.get("eval_dataset") else None
    max_length = sp["max_length"]
    raw = [len(ids) for ids in train["input_ids"]]
    eval_lengths = [min(len(ids), max_length) for ids in evals["input_ids"]] if evals is not None else []
    batch = hp["per_device_train_batch_size"]
    if sp["packing"]:
        from trl.data_utils import pack_dataset

        packed = pack_dataset(train.select_columns(["input_ids"]), max_length, sp["packing_strategy"] or "bfd")
        sequences = [list(ids) for ids in packed["input_ids"]]
        trained = [len(ids) for ids in sequences]
        facts = _facts(raw, trained, max_length, len(eval_lengths), eval_lengths, batch, hp["seed"], False)
        # padding-free: a micro-batch is its rows' tokens, no padding
        facts = DataFacts(**{**facts.__dict__, "mean_train_length": sum(trained) / max(len(trained), 1)})
    else:
        sequences = [list(ids[:max_length]) for ids in train["input_ids"]]
        trained = [len(ids) for ids in sequences]
        facts = _facts(raw, trained, max_length, len(eval_lengths), eval_lengths, batch, hp["seed"], False)
    if facts.truncated_rows:
        cut = "are spread over packed rows" if sp["packing"] and sp["packing_strategy"] != "bfd" else "will be cut"
        notes.append(f"{facts.truncated_rows} training rows are longer than max_length ({max_length} tokens) and {cut}")
    return Counted(facts, sequences, [], notes)
