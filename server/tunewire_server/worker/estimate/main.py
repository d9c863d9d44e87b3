"""Entry point of the estimate worker: one EstimateRequest in on stdin, one EstimateReply (or
EstimateFailure) out on --message-fd. It counts the job's data with the job's own tokenizer, reads the
model's shape on the meta device, measures the training device's memory and, when asked, times a few real
training steps. Nothing is written but the datasets library's cache under the request's cache_dir."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from tunewire_server.estimates.protocol import EstimateFailure, EstimateReply, EstimateRequest, decode, encode
from tunewire_server.worker.protocol import MessageWriter, die_with_parent, parse_args


def estimate(request: EstimateRequest) -> EstimateReply:
    """The facts of one job (the request's plan is validation's, resolved here as the worker does)."""
    import datasets

    from tunewire_server import hyperparameters as definition
    from tunewire_server.estimates import memory
    from tunewire_server.validation import spec_from_json
    from tunewire_server.worker.estimate import counts, device, model, probe
    from tunewire_server.worker.runtime import bf16_supported, configure_torch
    from tunewire_server.worker.training.sft import resolved

    configure_torch()
    datasets.disable_progress_bars()
    spec = spec_from_json(request.spec_json)
    task = request.plan["task"]
    cache = Path(request.cache_dir or ".") / "cache"
    # What a warm training worker has imported before its job arrives (training/main.py) is not part of
    # a job's setup: import it before the data phase is timed.
    if task == "sft":
        from tunewire_server.worker.training import sft as _sft  # noqa: F401
    else:
        from tunewire_server.worker.training import classification as _classification  # noqa: F401
    started = time.perf_counter()
    if task == "sft":
        plan = resolved(spec, request.plan)
        sp = plan["sft"]
        counted = counts.sft(spec, plan, sp, cache)
        dtype = sp["model_dtype"] or "float32"
        num_labels = 0
    else:
        plan = definition.resolve_plan(spec, request.plan)
        counted = counts.classification(spec, plan, cache)
        dtype = "float32"
        num_labels = len(plan["label_names"])
    prepare_seconds = time.perf_counter() - started
    hp = plan["hyperparameters"]
    facts = model.facts(plan["base_model"], task, num_labels, plan.get("lora"))
    dev = device.detect()
    if request.memory_limit_bytes:
        dev = replace(dev, memory_bytes=min(dev.memory_bytes, request.memory_limit_bytes))
    precision = hp["precision"]
    mixed = {"bf16": "bf16", "fp16": "fp16"}.get(precision) or ("bf16" if precision == "auto" and bf16_supported()
                                                                  else None)
    checkpointing = hp["gradient_checkpointing"]
    if checkpointing is None:
        checkpointing = dev.kind == "cuda"
    weight_bytes = 2 if dtype in ("bfloat16", "float16") else 4
    reply = EstimateReply(model=facts, data=counted.facts, device=dev, precision_bytes=weight_bytes,
                          mixed_precision=mixed is not None, gradient_checkpointing=bool(checkpointing),
                          notes=list(counted.notes), prepare_seconds=prepare_seconds)
    if request.probe_steps <= 0 or not counted.sequences:
        return reply
    batch = hp["per_device_train_batch_size"]
    shape = memory.job_shape(facts, batch, counted.facts.peak_length, weight_bytes, mixed is not None,
                             bool(checkpointing), dev.kind)
    if memory.estimate(facts, shape).total > dev.memory_bytes:  # the probe would run out of memory too
        batch = memory.suggestions(facts, shape, dev.memory_bytes)[0]
        if batch == 0:
            return reply
    notes = reply.notes + ([f"the probe ran at batch size {batch}, the largest estimated to fit"]
                           if batch != hp["per_device_train_batch_size"] else [])
    if task == "sft":
        result = probe.run_sft(spec, plan, request.probe_steps, batch, cache.parent / "probe")
        return replace(reply, probe=result, notes=notes)
    started = time.perf_counter()
    net = probe.load_classifier(plan, num_labels)
    load_seconds = time.perf_counter() - started
    pad = getattr(net.config, "pad_token_id", None) or 0
    result = probe.run(net, counted, batch, hp["gradient_accumulation_steps"], request.probe_steps,
                       hp["learning_rate"], bool(checkpointing), mixed, pad, hp["seed"],
                       pad_to=counted.facts.max_length if plan["classification"]["pad_to_max_length"] else 0)
    return replace(reply, probe=replace(result, load_seconds=load_seconds, batch=batch), notes=notes)


def main() -> int:
    args = parse_args()
    die_with_parent()
    # The probe trains: it gets the CPU share a training worker gets (niceness and session autogroup alike),
    # or its tokens/s would not be a training worker's.
    from tunewire_server.worker.training.main import _lower_priority

    _lower_priority()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = MessageWriter(args.message_fd)
    line = sys.stdin.readline()
    try:
        request = decode(line)
        if not isinstance(request, EstimateRequest):
            raise ValueError("expected an EstimateRequest")
        message = estimate(request)
        probe = message.probe
        # the measured parts of the time estimate, for whoever checks it (bench/estimates.py reads them)
        logging.getLogger("tunewire.estimate").info(
            "estimate facts: prepare_s=%.3f%s", message.prepare_seconds,
            f" load_s={probe.load_seconds:.3f} build_s={probe.build_seconds:.3f} warmup_s={probe.warmup_seconds:.3f}"
            f" probe_steps={probe.steps} probe_s={probe.seconds:.3f} probe_tokens={probe.tokens}"
            f" unpadded={probe.unpadded}" if probe else " probe=none")
    except Exception as exc:
        from tunewire_server.worker.runtime import UserError

        if isinstance(exc, UserError):
            message = EstimateFailure(message=exc.message, field=exc.field, code=exc.code)
        else:
            traceback.print_exc()
            message = EstimateFailure(message=f"the estimate failed: {type(exc).__name__}: {str(exc)[:500]}")
    out.send_line(encode(message))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's slow teardown of torch and datasets


if __name__ == "__main__":
    main()
