"""The plain-script side of the overhead benchmark for SFT: TRL's SFTTrainer as a user would call it.

Same model loading (float32), SFTConfig and data as tunewire's SFT worker for a plain-text job (no
eval, no checkpoints, no packing), then saves the model. Prints one JSON line with the wall-clock
times at which imports were done, training began, and the model was saved.

    python bench/plain_sft.py --model M --train-file F.jsonl --output-dir OUT --max-steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

IMPORTED = time.time()


class LogTimes(TrainerCallback):
    """When the first and the last train log happened, as (time, step, tokens trained so far): the steps/s
    and tokens/s figures; with --first-step-file, the first one's time also goes to that file (start-latency
    benchmark)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.first: tuple[float, int, float] | None = None
        self.last: tuple[float, int, float] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step < 1 or "loss" not in (logs or {}):
            return
        now = (time.time(), state.global_step, float(logs.get("num_tokens", 0.0)))
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
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--first-step-file")
    # the GPU benchmark's throughput options (bench/gpu_sft.py); the defaults are the CPU overhead job's
    p.add_argument("--model-dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    p.add_argument("--packing", action="store_true", help="padding-free packing, the bfd strategy")
    args = p.parse_args()

    threads = int(os.environ.get("TUNEWIRE_TORCH_THREADS", "0") or 0)  # the server's --torch-threads
    if threads > 0:
        torch.set_num_threads(threads)

    train = load_dataset("json", data_files=args.train_file, split="train",
                         cache_dir=os.path.join(args.output_dir, "cache"))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.model_dtype))
    config = SFTConfig(
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
        gradient_checkpointing=False,  # SFTConfig turns it on by default; tunewire turns it off on a CPU
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=args.bf16,  # SFTConfig defaults to bf16; tunewire picks fp32 on a CPU
        fp16=False,
        dataset_text_field="text",
        max_length=args.max_length,
        packing=args.packing,
        packing_strategy="bfd",
    )
    log_times = LogTimes(args.first_step_file)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
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
