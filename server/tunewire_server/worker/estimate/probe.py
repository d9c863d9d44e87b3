"""A short probe: a few real training steps of the job's model on the job's own rows, timed after a
warm-up step (forward, backward and AdamW updates, as the Trainer runs them)."""

from __future__ import annotations

import random
import time

from tunewire_server.estimates.protocol import ProbeFacts
from tunewire_server.worker.estimate.counts import Counted


def load(task: str, plan: dict, sp: dict | None, num_labels: int):
    """The job's model as the training worker loads it (with LoRA's adapter when the job has one)."""
    from transformers import AutoModelForSequenceClassification

    if task == "classification":
        return AutoModelForSequenceClassification.from_pretrained(plan["base_model"], num_labels=num_labels,
                                                                  ignore_mismatched_sizes=True)
    from tunewire_server.worker.training.sft import load_model, lora_config

    model = load_model(plan["base_model"], sp["model_dtype"])
    if plan["lora"] is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(plan["lora"], getattr(model.config, "model_type", None)))
    return model


def run(model, counted: Counted, batch: int, accumulation: int, steps: int, learning_rate: float,
        checkpointing: bool, mixed: str | None, pad_id: int, seed: int, max_grad_norm: float = 1.0) -> ProbeFacts:
    """Time `steps` micro-batches of `batch` rows (an optimizer step every `accumulation`) after one warm-up."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    order = list(range(len(counted.sequences)))
    random.Random(seed).shuffle(order)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed or "")

    def micro_batch(i: int) -> tuple[dict, int]:
        rows = [order[(i * batch + k) % len(order)] for k in range(batch)]
        width = max(len(counted.sequences[r]) for r in rows)
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for k, r in enumerate(rows):
            seq = counted.sequences[r]
            ids[k, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[k, :len(seq)] = 1
        inputs = {"input_ids": ids, "attention_mask": mask}
        if counted.labels:
            inputs["labels"] = torch.tensor([counted.labels[r] for r in rows], dtype=torch.long)
        else:
            inputs["labels"] = ids.masked_fill(mask == 0, -100)
        return {k: v.to(device) for k, v in inputs.items()}, batch * width

    def step(i: int) -> int:
        inputs, tokens = micro_batch(i)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = model(**inputs).loss / accumulation
        loss.backward()
        if (i + 1) % accumulation == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # as the Trainer does
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return tokens

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    step(-1 % max(len(order), 1))  # warm-up: first-call costs (allocations, kernel choice) are not timed
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync()
    start, tokens = time.perf_counter(), 0
    for i in range(steps):
        tokens += step(i)
    sync()
    return ProbeFacts(steps=steps, seconds=time.perf_counter() - start, tokens=tokens)
