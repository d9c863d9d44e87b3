"""The plain-script side of the overhead benchmark: what a user would write instead of calling tunewire.

Fine-tunes a sequence classifier with transformers.Trainer exactly as tunewire's classification worker
does (same tokenization, TrainingArguments and collator; no eval, no checkpoints), then saves the model.
Prints one JSON line: the wall-clock times (time.time()) at which the imports were done, training
began, and the model was saved. The benchmark times the whole process from its own start.

    python bench/plain_classification.py --model M --train-file F.jsonl --output-dir OUT --max-steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

IMPORTED = time.time()


class LogTimes(TrainerCallback):
    """When the first and the last train log happened (the steps/s figure); with --first-step-file, the
    first one's time also goes to that file (start-latency benchmark)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step < 1 or "loss" not in (logs or {}):
            return
        now = (time.time(), state.global_step)
        if self.first is None:
            self.first = now
            if self.path:
                with open(self.path, "w") as f:
                    f.write(repr(now[0]))
        self.last = now


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--train-file", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--first-step-file")
    args = p.parse_args()

    threads = int(os.environ.get("TUNEWIRE_TORCH_THREADS", "0") or 0)  # the server's --torch-threads
    if threads > 0:
        torch.set_num_threads(threads)

    ds = load_dataset("json", data_files=args.train_file, split="train",
                      cache_dir=os.path.join(args.output_dir, "cache"))
    names = sorted(set(ds["label"]))
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(batch):
        encoded = tokenizer(batch["text"], padding=False, truncation=True, max_length=args.max_length)
        encoded["labels"] = [names.index(v) for v in batch["label"]]
        return encoded

    train = ds.map(encode, batched=True, remove_columns=ds.column_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
    training_args = TrainingArguments(
        output_dir=os.path.join(args.output_dir, "checkpoints"),
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        seed=42,
        eval_strategy="no",
        save_strategy="no",
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=args.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        gradient_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=False,
        fp16=False,
    )
    log_times = LogTimes(args.first_step_file)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[log_times],
    )
    began = time.time()
    trainer.train()
    trainer.save_model(os.path.join(args.output_dir, "model"))
    print(json.dumps({"imported": IMPORTED, "train_began": began, "saved": time.time(),
                      "steps": trainer.state.global_step, "first_log": log_times.first, "last_log": log_times.last}),
          flush=True)


if __name__ == "__main__":
    main()
