"""A short probe: a few real training steps of the job's model on the job's own rows, timed after a
warm-up step. Classification: forward, backward and AdamW updates in a bare loop, as the Trainer runs them
(its loop adds nothing measurable to a classifier's step). SFT: the job's own SFTTrainer, because TRL's
per-step work beside the model (its fused loss, token accuracy and entropy, token counts) is up to half of a
small model's step, which a bare loop would miss."""

from __future__ import annotations

import random
import time

from tunewire_server.estimates.protocol import ProbeFacts
from tunewire_server.worker.estimate.counts import Counted

MIN_SECONDS = 1.0  # a probe goes on past its steps until this much is timed: a few fast steps are noise
MAX_STEPS = 64  # ... but no further than this


def load_classifier(plan: dict, num_labels: int):
    """A classification job's model as the training worker loads it (an SFT job's probe builds its trainer)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(plan["base_model"], num_labels=num_labels,
                                                              ignore_mismatched_sizes=True)


def run(model, counted: Counted, batch: int, accumulation: int, steps: int, learning_rate: float,
        checkpointing: bool, mixed: str | None, pad_id: int, seed: int, max_grad_norm: float = 1.0,
        pad_to: int = 0) -> ProbeFacts:
    """Time `steps` micro-batches of `batch` rows (an optimizer step every `accumulation`) after one warm-up,
    and more while under MIN_SECONDS (up to MAX_STEPS)."""
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
        width = max(pad_to, *(len(counted.sequences[r]) for r in rows))  # pad_to: the job pads to max_length
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

    warmup_start = time.perf_counter()
    step(-1 % max(len(order), 1))  # warm-up: first-call costs (allocations, kernel choice), timed apart
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync()
    start, tokens, done = time.perf_counter(), 0, 0
    while done < steps or (done < MAX_STEPS and time.perf_counter() - start < MIN_SECONDS):
        tokens += step(done)
        done += 1
        if done >= steps:
            sync()
    sync()
    return ProbeFacts(steps=done, seconds=time.perf_counter() - start, tokens=tokens,
                      warmup_seconds=start - warmup_start)


def run_sft(spec, plan: dict, steps: int, batch: int, job_dir) -> ProbeFacts:
    """The job's SFTTrainer (worker/training/sft.py's build_trainer, the job's data, model, LoRA and options)
    for a warm-up step and `steps` more (more while under MIN_SECONDS), at `batch` rows, logging every step:
    tokens/s from TRL's own num_tokens (padding left out) between the first and the last step's logs."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from tunewire_server.worker.training.sft import build_trainer

    hp = {**plan["hyperparameters"], "max_steps": max(steps, MAX_STEPS) + 1, "per_device_train_batch_size": batch,
          "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no", "eval_on_start": False,
          "load_best_model_at_end": False, "metric_for_best_model": None, "eval_steps": None, "save_steps": None}
    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), 0.0))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                marks.append((time.perf_counter(), float(logs["num_tokens"])))
                timed = len(marks) - 2  # steps after the warm-up one
                if timed >= steps and marks[-1][0] - marks[1][0] >= MIN_SECONDS:
                    control.should_training_stop = True

    started = time.perf_counter()
    trainer, _ = build_trainer(spec, {**plan, "hyperparameters": hp}, job_dir, callbacks=[Clock()])
    build_seconds = time.perf_counter() - started
    trainer.remove_callback(PrinterCallback)  # a log line per probed step is noise in the worker's log
    trainer.train()
    if len(marks) < 3:
        raise RuntimeError(f"the probe's trainer logged {len(marks) - 1} steps with token counts")
    (begin, _), (first, first_tokens), (last, last_tokens) = marks[0], marks[1], marks[-1]
    return ProbeFacts(steps=len(marks) - 2, seconds=last - first, tokens=int(last_tokens - first_tokens),
                      warmup_seconds=first - begin, build_seconds=build_seconds, batch=batch, unpadded=True)
