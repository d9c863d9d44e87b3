"""Entry point of the long-lived inference worker.

Requests arrive as JSON lines on stdin; answers go up the message pipe with the same id:
- {id, op: "predict", model_dir, inputs, conversations, generation} -> {id, ok, predictions} or {id, ok: false, error}
- {id, op: "generate_stream", model_dir, text | conversation, generation} -> {id, delta}... then {id, ok, final}
- {op: "cancel", id} stops that request's generation at the next token (its answer still follows).
A reader thread takes stdin so that a cancel reaches a generation running on the main thread.
Recently used models stay loaded (an LRU of TUNEWIRE_CACHE_SIZE entries); a LoRA job's adapter sits on
its own copy of the base model, unmerged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import sys
import threading
import traceback
from collections import OrderedDict
from pathlib import Path

from tunewire_server.worker.batching import Batcher
from tunewire_server.worker.protocol import MessageWriter, die_with_parent, parse_args

log = logging.getLogger("tunewire.inference")


class RequestError(Exception):
    def __init__(self, kind: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.field = kind, message, field


class LoadedClassifier:
    def __init__(self, model_dir: Path, meta: dict) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = meta.get("max_length") or 512
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def predict(self, request: dict) -> list[dict]:
        inputs = request.get("inputs") or []
        if request.get("conversations"):
            raise RequestError("invalid", "a classifier takes plain text inputs, not conversations", "conversations")
        torch = self.torch
        encoded = self.tokenizer(inputs, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        with torch.inference_mode():
            probs = torch.softmax(self.model(**encoded).logits.float(), dim=-1)
        results = []
        for row in probs.tolist():
            scores = sorted(zip(self.labels, row, strict=True), key=lambda x: -x[1])
            results.append({"classification": {
                "label": scores[0][0], "score": scores[0][1],
                "scores": [{"label": label, "score": score} for label, score in scores],
            }})
        return results


def _base_available(base: str) -> bool:
    return not base.startswith("/") or (Path(base) / "config.json").is_file()


class ModelCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[str, object] = OrderedDict()

    def get(self, model_dir: str):
        model = self._models.get(model_dir)
        if model is not None:
            self._models.move_to_end(model_dir)
            return model
        from tunewire_server.worker.artifacts import read_meta

        path = Path(model_dir)
        try:
            meta = read_meta(path)
        except (OSError, ValueError):
            raise RequestError("precondition", "the job's model is missing or incomplete") from None
        if meta["task"] == "classification":
            model = LoadedClassifier(path, meta)
        elif meta["task"] == "sft":
            from tunewire_server.worker.generation import LoadedGenerator

            if meta.get("adapter") and not _base_available(meta["base_model"]):
                raise RequestError("precondition", f"the base model {meta['base_model']!r} of this LoRA adapter "
                                   "is gone from the model root")
            model = LoadedGenerator(path, meta)
        else:
            raise RequestError("precondition", f"this server cannot serve {meta['task']} models yet")
        self._models[model_dir] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model


def _error(exc: Exception) -> dict:
    if isinstance(exc, RequestError):
        return {"kind": exc.kind, "message": exc.message, "field": exc.field}
    from tunewire_server.worker.generation import GenerationRequestError

    if isinstance(exc, GenerationRequestError):
        return {"kind": "invalid", "message": exc.message, "field": exc.field}
    traceback.print_exc()
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}


def handle(request: dict, cancel: threading.Event, cache: ModelCache, out: MessageWriter) -> None:
    """Answer one request: {ok, predictions} for predict; {delta}... then {ok, final} for generate_stream."""
    request_id = request["id"]
    try:
        model = cache.get(request["model_dir"])
        if request.get("op") == "generate_stream":
            if not hasattr(model, "stream"):
                raise RequestError("precondition", "streaming generation needs an SFT job's model")
            final = model.stream(request, cancel, lambda delta: out.send(id=request_id, delta=delta))
            log.info("stream %s: %s after %d tokens", request_id, final["finish_reason"], final["num_tokens"])
            out.send(id=request_id, ok=True, final=final)
        else:
            if hasattr(model, "stream"):
                predictions = model.predict(request, cancel)
            else:
                predictions = model.predict(request)
            out.send(id=request_id, ok=True, predictions=predictions)
    except Exception as exc:
        out.send(id=request_id, ok=False, error=_error(exc))


def read_requests(stream, requests: queue.Queue, active: dict[int, threading.Event]) -> None:
    """Runs on its own thread so that a cancel can reach a generation in progress on the main thread."""
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("op") == "cancel":
            event = active.get(message.get("id"))
            if event is not None:
                event.set()
            continue
        event = threading.Event()
        active[message["id"]] = event  # registered before it is queued: a cancel can always find it
        requests.put((message, event))
    requests.put(None)


def main() -> int:
    args = parse_args()
    die_with_parent()
    out = MessageWriter(args.message_fd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch  # noqa: F401

    from tunewire_server.worker.runtime import configure_torch

    configure_torch()
    cache = ModelCache(int(os.environ.get("TUNEWIRE_CACHE_SIZE", "2")))
    requests: queue.Queue = queue.Queue()
    active: dict[int, threading.Event] = {}
    threading.Thread(target=read_requests, args=(sys.stdin, requests, active), daemon=True,
                     name="tunewire-requests").start()
    batcher = Batcher(requests, float(os.environ.get("TUNEWIRE_BATCH_WINDOW_MS", "5")) / 1000,
                      int(os.environ.get("TUNEWIRE_MAX_BATCH", "32")))
    while (item := batcher.next()) is not None:
        request, cancel = item
        try:
            if cancel.is_set():
                out.send(id=request["id"], ok=False, error={"kind": "cancelled", "message": "cancelled"})
            elif kind := _batch_kind(request, cache):
                batch = batcher.fill(item, _inputs_of, functools.partial(_compatible, kind))
                handle_batch(batch, cache, out)
                for r, _ in batch[1:]:
                    active.pop(r["id"], None)
            else:
                handle(request, cancel, cache, out)
        finally:
            active.pop(request["id"], None)
    return 0


def _inputs_of(item) -> int:
    return len(item[0].get("inputs") or []) + len(item[0].get("conversations") or []) or 1


def _compatible(kind: str, first, other) -> bool:
    """Predict calls that can share a forward pass: the same model and generation parameters (a classifier
    takes no conversations; _batch_kind has checked `first` already)."""
    a, b = first[0], other[0]
    return (b.get("op", "predict") == "predict" and b.get("model_dir") == a.get("model_dir")
            and b.get("generation") == a.get("generation") and _shareable(b)
            and (kind == "generator" or not b.get("conversations")))


def _shareable(request: dict) -> bool:
    """A seeded sampling request needs the random generator to itself; everything else can share a batch."""
    generation = request.get("generation") or {}
    return not (generation.get("do_sample") and "seed" in generation)


def _batch_kind(request: dict, cache: ModelCache) -> str | None:
    """"classifier" or "generator" where a Predict call may be merged with others: a classifier's plain
    texts, a generator's texts or conversations (with the same generation parameters); None where it runs
    alone (streaming generation, seeded sampling, and calls that will fail)."""
    if request.get("op", "predict") != "predict" or not _shareable(request):
        return None
    try:
        model = cache.get(request["model_dir"])
    except Exception:
        return None  # handle() reports the error for this one request
    if isinstance(model, LoadedClassifier):
        return None if request.get("conversations") else "classifier"
    return "generator" if hasattr(model, "predict_many") else None


def handle_batch(batch: list, cache: ModelCache, out: MessageWriter) -> None:
    """One forward pass (or one generate) over the inputs of several Predict calls; each caller gets its
    own answer, or its own error where only its input was at fault."""
    try:
        model = cache.get(batch[0][0]["model_dir"])
        if isinstance(model, LoadedClassifier):
            inputs = [text for request, _ in batch for text in request.get("inputs") or []]
            predictions = model.predict({"inputs": inputs}) if inputs else []
            answers, start = [], 0
            for request, _ in batch:
                n = len(request.get("inputs") or [])
                answers.append(predictions[start:start + n])
                start += n
        else:
            answers = model.predict_many(batch)
        if len(batch) > 1:
            log.info("batched %d calls in one pass", len(batch))
    except Exception as exc:
        for request, _ in batch:
            out.send(id=request["id"], ok=False, error=_error(exc))
        return
    for (request, _), answer in zip(batch, answers, strict=True):
        if isinstance(answer, Exception):
            out.send(id=request["id"], ok=False, error=_error(answer))
        else:
            out.send(id=request["id"], ok=True, predictions=answer)


if __name__ == "__main__":
    sys.exit(main())
