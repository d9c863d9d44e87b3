"""Merge a LoRA adapter into its base model and save the result as a plain transformers model folder.

The base is loaded as the inference worker loads it for Predict (same class, same dtype, embeddings resized
to the vocabulary the job trained with), the adapter put on it with PeftModel.from_pretrained, merged with
merge_and_unload, and saved with save_pretrained (safetensors) together with the adapter's tokenizer. A
classifier (a SEQ_CLS adapter) is loaded with its labels, so the merged model keeps its id2label and the
trained head PEFT saved beside the adapter (modules_to_save).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MergeRequest:
    adapter_dir: str  # a LoRA adapter folder (the final model, or a checkpoint)
    base_model: str  # the base it was trained on (a local path or hub id, as the plan resolved it)
    output_dir: str  # an empty or missing folder; the caller renames it into place
    model_dtype: str | None = None  # "float32" | "bfloat16" | "float16"; float32 when unset
    vocab_size: int | None = None  # the job's vocabulary where it resized the base's (an added chat template)
    label_names: tuple[str, ...] = ()  # a classifier's labels, in index order

    @classmethod
    def from_dict(cls, d: dict) -> MergeRequest:
        return cls(adapter_dir=str(d["adapter_dir"]), base_model=str(d["base_model"]), output_dir=str(d["output_dir"]),
                   model_dtype=d.get("model_dtype"), vocab_size=d.get("vocab_size"),
                   label_names=tuple(d.get("label_names") or ()))


def _task_type(adapter_dir: Path) -> str:
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    return str(config.get("task_type") or "CAUSAL_LM")


def merge(request: MergeRequest) -> list[str]:
    """Write the merged model into request.output_dir: the names of the files written."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tunewire_server.worker.runtime import torch_dtype

    adapter = Path(request.adapter_dir)
    dtype = torch_dtype(request.model_dtype)
    if _task_type(adapter) == "SEQ_CLS":
        names = list(request.label_names)
        labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
                  "label2id": {n: i for i, n in enumerate(names)}} if names else {}
        base = AutoModelForSequenceClassification.from_pretrained(request.base_model, dtype=dtype, **labels)
    else:
        base = AutoModelForCausalLM.from_pretrained(request.base_model, dtype=dtype)
    if request.vocab_size and base.get_input_embeddings().num_embeddings != request.vocab_size:
        base.resize_token_embeddings(request.vocab_size)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out = Path(request.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out)
    return sorted(p.name for p in out.iterdir())
