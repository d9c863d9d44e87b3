"""Entry point of the long-lived inference worker.

Requests arrive as JSON lines on stdin; answers go up the message pipe with the same id:
- {id, op: "predict", model_dir, inputs, conversations, generation} -> {id, ok, predictions} or {id, ok: false, error}
- {id, op: "generate_stream", model_dir, text | conversation, generation, credit} -> {id, delta}... then
  {id, ok, final} (or {id, ok: false, error})
- {op: "cancel", id} stops that request's generation at the next token (its answer still follows).
- {op: "credit", id, n}: the control plane passed n more deltas of that stream on to its client.
- {id, op: "stats"} -> {id, ok, stats}: the calls in progress (tokens generated, whether held) and RSS.
- {id, op: "evict", model_dir} -> {id, ok, evicted}: drop every cached model at or under model_dir (a deleted
  job's folder); a call already using one finishes with it.

Scheduling. A reader thread takes stdin, so cancels and credits reach work in progress. Predict calls run
on PREDICT_LANES threads (micro-batched, worker/batching.py), streams on STREAM_SLOTS threads (more wait
in arrival order), and all of them take fair turns at the model (worker/turns.py): a generation hands the
turn on after every token, so long generations interleave with short ones and with classifier calls
instead of making them wait. A stream runs at most `credit` deltas ahead of what its client has taken:
with none left it waits without holding the turn, and after TUNEWIRE_STREAM_IDLE_S seconds of waiting
it is stopped (the client is not reading), which frees its slot.

Limits and memory: an input longer than TUNEWIRE_MAX_INPUT_TOKENS tokens is refused, naming it (not cut:
a client would not know its text was only partly read; a classifier still truncates to the length it
was trained on, as before). Classifier forward passes and generate() calls take at most
TUNEWIRE_MAX_BATCH inputs at a time, and after a call with more than LARGE_REQUEST_BYTES of input, the
freed memory goes back to the OS (gc, the torch cache, glibc's malloc_trim).

Recently used models stay loaded (an LRU of TUNEWIRE_CACHE_SIZE entries); a LoRA job's adapter sits on
its own copy of the base model, unmerged.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunewire_server.worker.inference.batching import Batcher
from tunewire_server.worker.inference.turns import Holder, Turns
from tunewire_server.worker.protocol import MessageWriter, die_with_parent, parse_args

log = logging.getLogger("tunewire.inference")

PREDICT_LANES = 4  # Predict batches at once: long generations leave lanes to the other callers
STREAM_SLOTS = 8  # streams generating at once (each holds its KV cache); later ones wait in order
LARGE_REQUEST_BYTES = 1 << 20


class RequestError(Exception):
    def __init__(self, kind: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.field = kind, message, field


class LoadedClassifier:
    def __init__(self, model_dir: Path, meta: dict, max_input_tokens: int | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = meta.get("max_length") or 512
        self.max_input_tokens = max_input_tokens
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def check(self, inputs: list[str], rows: int = 32) -> None:
        """Refuse the first input longer than max_input_tokens tokens (RequestError naming it)."""
        limit = self.max_input_tokens
        if limit is None:
            return
        for start in range(0, len(inputs), rows):
            ids = self.tokenizer(inputs[start:start + rows], truncation=True, max_length=limit + 1)["input_ids"]
            for i, row in enumerate(ids, start):
                if len(row) > limit:
                    raise RequestError("invalid", f"is more than {limit} tokens long; at most {limit} tokens "
                                       "per input", f"inputs[{i}]")

    def predict(self, request: dict, pace: Callable[[], None] | None = None, rows: int = 32,
                checked: bool = False) -> list[dict]:
        inputs = request.get("inputs") or []
        if request.get("conversations"):
            raise RequestError("invalid", "a classifier takes plain text inputs, not conversations", "conversations")
        if not checked:
            self.check(inputs, rows)
        torch = self.torch
        results = []
        for start in range(0, len(inputs), rows):  # bounded forward passes, whatever the call's size
            if pace is not None and start:
                pace()
            encoded = self.tokenizer(inputs[start:start + rows], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                probs = torch.softmax(self.model(**encoded).logits.float(), dim=-1)
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
    def __init__(self, size: int, max_input_tokens: int | None = None) -> None:
        self.size = size
        self.max_input_tokens = max_input_tokens
        self._models: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()  # one load at a time; a model in use stays alive when evicted

    def get(self, model_dir: str):
        with self._lock:
            return self._get(model_dir)

    def _get(self, model_dir: str):
        model = self._models.get(model_dir)
        if model is not None:
            self._models.move_to_end(model_dir)
            return model
        from tunewire_server.worker.training.artifacts import read_meta

        path = Path(model_dir)
        try:
            meta = read_meta(path)
        except (OSError, ValueError):
            raise RequestError("precondition", "the job's model is missing or incomplete") from None
        if meta["task"] == "classification":
            model = LoadedClassifier(path, meta, self.max_input_tokens)
        elif meta["task"] == "sft":
            from tunewire_server.worker.inference.generation import LoadedGenerator

            if meta.get("adapter") and not _base_available(meta["base_model"]):
                raise RequestError("precondition", f"the base model {meta['base_model']!r} of this LoRA adapter "
                                   "is gone from the model root")
            model = LoadedGenerator(path, meta, self.max_input_tokens)
        else:
            raise RequestError("precondition", f"this server cannot serve {meta['task']} models yet")
        self._models[model_dir] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model

    def evict(self, model_dir: str) -> int:
        """Drop the models loaded from `model_dir` or from a folder under it: how many were dropped. Waits for
        a load in progress, so a model being loaded from a deleted folder is dropped too."""
        prefix = model_dir.rstrip("/") + "/"
        with self._lock:
            gone = [key for key in self._models if key == model_dir.rstrip("/") or key.startswith(prefix)]
            for key in gone:
                del self._models[key]
        return len(gone)


class Call:
    """A request in progress: its cancel flag, and for a stream the deltas it may still send unread."""

    def __init__(self, request: dict, size: int = 0) -> None:
        self.id = request.get("id")
        self.op = request.get("op", "predict")
        self.size = size  # bytes of the request line
        self.cancel = threading.Event()
        self.holder = Holder(private_rng=not _shareable(request))
        self.window = request.get("credit") if self.op == "generate_stream" else None
        self.credit = int(self.window or 0)
        self.tokens = 0
        self.held = False  # waiting for its client to read
        self.idle = False  # stopped because its client read nothing for too long
        self._cond = threading.Condition()

    def add_credit(self, n: int) -> None:
        with self._cond:
            self.credit += n
            self._cond.notify_all()

    def stop(self) -> None:
        self.cancel.set()
        with self._cond:
            self._cond.notify_all()

    def sent(self) -> None:
        with self._cond:
            self.credit -= 1

    def pace(self, turns: Turns, idle_s: float) -> None:
        """Between two tokens: wait (off the turn) while the client is behind, then let others go first."""
        self.tokens += 1
        if self.window is not None:
            with self._cond:
                behind = self.credit <= 0 and not self.cancel.is_set()
            if behind:
                turns.release(self.holder)
                try:
                    self._wait_for_credit(idle_s)
                finally:
                    turns.acquire(self.holder)
        turns.pass_turn(self.holder)

    def _wait_for_credit(self, idle_s: float) -> None:
        deadline = time.monotonic() + idle_s
        with self._cond:
            self.held = True
            while self.credit <= 0 and not self.cancel.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.idle = True
                    self.cancel.set()
                    break
                self._cond.wait(remaining)
            self.held = False

    def describe(self) -> dict:
        return {"id": self.id, "op": self.op, "tokens": self.tokens, "held": self.held,
                "cancelled": self.cancel.is_set()}


@dataclass
class Context:
    cache: ModelCache
    out: MessageWriter
    turns: Turns
    calls: dict[int, Call]
    idle_s: float
    max_batch: int


def _error(exc: Exception) -> dict:
    if isinstance(exc, RequestError):
        return {"kind": exc.kind, "message": exc.message, "field": exc.field}
    from tunewire_server.worker.inference.generation import GenerationRequestError

    if isinstance(exc, GenerationRequestError):
        return {"kind": "invalid", "message": exc.message, "field": exc.field}
    traceback.print_exc()  # to the inference log; the client gets a bounded message
    return {"kind": "internal", "message": f"prediction failed ({type(exc).__name__}); the server's "
                                           "inference log has the details"}


def _cancelled(ctx: Context, request_id) -> None:
    ctx.out.send(id=request_id, ok=False, error={"kind": "cancelled", "message": "cancelled"})


def run_stream(request: dict, call: Call, ctx: Context) -> None:
    """{delta}... then {ok, final}, at most the call's credit ahead of its client."""
    request_id = request["id"]
    try:
        if call.cancel.is_set():
            return _cancelled(ctx, request_id)
        model = ctx.cache.get(request["model_dir"])
        if not hasattr(model, "stream"):
            raise RequestError("precondition", "streaming generation needs an SFT job's model")

        def emit(delta: str) -> None:
            call.sent()
            ctx.out.send(id=request_id, delta=delta)

        with ctx.turns.hold(call.holder):
            final = model.stream(request, call.cancel, emit, functools.partial(call.pace, ctx.turns, ctx.idle_s))
        log.info("stream %s: %s after %d tokens%s", request_id, final["finish_reason"], final["num_tokens"],
                 " (its client read nothing)" if call.idle else "")
        if call.idle:
            raise RequestError("idle", f"generation stopped: the client read nothing for {ctx.idle_s:g} s")
        ctx.out.send(id=request_id, ok=True, final=final)
    except Exception as exc:
        ctx.out.send(id=request_id, ok=False, error=_error(exc))


def run_predict(request: dict, call: Call, ctx: Context) -> list[dict]:
    """One Predict call on its own (seeded sampling, or a call that will fail): its answer message."""
    try:
        model = ctx.cache.get(request["model_dir"])
        with ctx.turns.hold(call.holder):
            pace = functools.partial(call.pace, ctx.turns, ctx.idle_s)
            if hasattr(model, "stream"):
                predictions = model.predict(request, call.cancel, pace, ctx.max_batch)
            else:
                predictions = model.predict(request, pace, ctx.max_batch)
        return [{"id": request["id"], "ok": True, "predictions": predictions}]
    except Exception as exc:
        return [{"id": request["id"], "ok": False, "error": _error(exc)}]


def handle_batch(batch: list, ctx: Context) -> list[dict]:
    """One forward pass (or one generate) over the inputs of several Predict calls; each caller gets its
    own answer message, or its own error where only its input was at fault."""
    first = batch[0][1]
    pace = functools.partial(first.pace, ctx.turns, ctx.idle_s)
    try:
        model = ctx.cache.get(batch[0][0]["model_dir"])
        with ctx.turns.hold(first.holder):
            if isinstance(model, LoadedClassifier):
                answers = _classify_batch(model, batch, pace, ctx.max_batch)
            else:
                answers = model.predict_many([(r, c.cancel) for r, c in batch], pace, ctx.max_batch)
        if len(batch) > 1:
            log.info("batched %d calls in one pass", len(batch))
    except Exception as exc:
        error = _error(exc)
        return [{"id": request["id"], "ok": False, "error": error} for request, _ in batch]
    return [{"id": request["id"], "ok": False, "error": _error(answer)} if isinstance(answer, Exception)
            else {"id": request["id"], "ok": True, "predictions": answer}
            for (request, _), answer in zip(batch, answers, strict=True)]


def _classify_batch(model: LoadedClassifier, batch: list, pace, rows: int) -> list:
    answers: list = []
    inputs: list[str] = []
    for request, _ in batch:
        mine = request.get("inputs") or []
        try:
            model.check(mine, rows)
        except RequestError as exc:  # only this caller's input is at fault
            answers.append(exc)
            continue
        answers.append(len(mine))
        inputs += mine
    predictions = model.predict({"inputs": inputs}, pace, rows, checked=True) if inputs else []
    start = 0
    for i, n in enumerate(answers):
        if isinstance(n, int):
            answers[i] = predictions[start:start + n]
            start += n
    return answers


def release_memory() -> None:
    """Give what a large call freed back to the OS: without this the worker's RSS stays near its peak."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def predict_lane(batcher: Batcher, lock: threading.Lock, ctx: Context) -> None:
    while True:
        with lock:  # one lane takes requests and fills a batch at a time
            item = batcher.next()
            if item is None:
                return
            request, call = item
            cancelled = call.cancel.is_set()
            kind = None if cancelled else _batch_kind(request, ctx.cache)
            batch = batcher.fill(item, _inputs_of, functools.partial(_compatible, kind)) if kind else [item]
        del item, request
        try:
            if cancelled:  # before it started: batch is this call alone
                answers = [{"id": batch[0][0]["id"], "ok": False,
                            "error": {"kind": "cancelled", "message": "cancelled"}}]
            elif kind:
                answers = handle_batch(batch, ctx)
            else:
                answers = run_predict(batch[0][0], call, ctx)
            if sum(c.size for _, c in batch) > LARGE_REQUEST_BYTES:
                for r, _ in batch:  # the inputs are done with: free them too before trimming
                    r.pop("inputs", None)
                    r.pop("conversations", None)
                release_memory()  # before answering, so that a caller sees the worker back at its size
            for answer in answers:
                ctx.out.send(**answer)
        finally:
            for r, _ in batch:
                ctx.calls.pop(r["id"], None)


def stream_slot(streams: queue.Queue, ctx: Context) -> None:
    while (item := streams.get()) is not None:
        request, call = item
        try:
            run_stream(request, call, ctx)
        finally:
            ctx.calls.pop(call.id, None)
    streams.put(None)  # the end of input, for the other slots


def stats(ctx: Context) -> dict:
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = 0
    return {"calls": [c.describe() for c in list(ctx.calls.values())], "rss_bytes": rss}


def evict(message: dict, ctx: Context) -> None:
    n = ctx.cache.evict(str(message.get("model_dir") or ""))
    if n:
        release_memory()
    ctx.out.send(id=message.get("id"), ok=True, evicted=n)


def read_requests(stream, predicts: queue.Queue, streams: queue.Queue, ctx: Context) -> None:
    """Runs on its own thread so that cancels and credits reach the calls in progress."""
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        op = message.get("op", "predict")
        call = ctx.calls.get(message.get("id"))
        if op == "cancel":
            if call is not None:
                call.stop()
        elif op == "credit":
            if call is not None:
                call.add_credit(int(message.get("n") or 0))
        elif op == "stats":
            ctx.out.send(id=message.get("id"), ok=True, stats=stats(ctx))
        elif op == "evict":  # off this thread: it waits for a load in progress, cancels must not
            threading.Thread(target=evict, args=(message, ctx), daemon=True, name="tunewire-evict").start()
        else:
            call = Call(message, len(line))
            ctx.calls[message["id"]] = call  # registered before it is queued: a cancel can always find it
            (streams if op == "generate_stream" else predicts).put((message, call))
    predicts.put(None)
    streams.put(None)


def main() -> int:
    args = parse_args()
    die_with_parent()
    out = MessageWriter(args.message_fd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch  # noqa: F401

    from tunewire_server.worker.runtime import configure_torch

    configure_torch()
    max_tokens = int(os.environ.get("TUNEWIRE_MAX_INPUT_TOKENS", "0") or 0) or None
    max_batch = int(os.environ.get("TUNEWIRE_MAX_BATCH", "32"))
    ctx = Context(cache=ModelCache(int(os.environ.get("TUNEWIRE_CACHE_SIZE", "2")), max_tokens), out=out,
                  turns=Turns(), calls={}, idle_s=float(os.environ.get("TUNEWIRE_STREAM_IDLE_S", "60")),
                  max_batch=max_batch)
    predicts: queue.Queue = queue.Queue()
    streams: queue.Queue = queue.Queue()
    batcher = Batcher(predicts, float(os.environ.get("TUNEWIRE_BATCH_WINDOW_MS", "5")) / 1000, max_batch)
    lock = threading.Lock()
    for i in range(PREDICT_LANES):
        threading.Thread(target=predict_lane, args=(batcher, lock, ctx), daemon=True,
                         name=f"tunewire-predict-{i}").start()
    for i in range(STREAM_SLOTS):
        threading.Thread(target=stream_slot, args=(streams, ctx), daemon=True, name=f"tunewire-stream-{i}").start()
    read_requests(sys.stdin, predicts, streams, ctx)
    # The end of input: the control plane is shutting down. Stop what is running, give it a moment to
    # answer, and leave without waiting for threads that may sit in native code.
    for call in list(ctx.calls.values()):
        call.stop()
    deadline = time.monotonic() + 2
    while ctx.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _inputs_of(item) -> int:
    return len(item[0].get("inputs") or []) + len(item[0].get("conversations") or []) or 1


def _compatible(kind: str, first, other) -> bool:
    """Predict calls that can share a forward pass: the same model and generation parameters (a classifier
    takes no conversations; _batch_kind has checked `first` already)."""
    a, b = first[0], other[0]
    return (b.get("op", "predict") == "predict" and b.get("model_dir") == a.get("model_dir")
            and b.get("generation") == a.get("generation") and _shareable(b)
            and (kind == "generator" or not b.get("conversations")) and not other[1].cancel.is_set())


def _shareable(request: dict) -> bool:
    """A seeded sampling request needs the random generator to itself; everything else can share a batch."""
    generation = request.get("generation") or {}
    return not (generation.get("do_sample") and "seed" in generation)


def _batch_kind(request: dict, cache: ModelCache) -> str | None:
    """"classifier" or "generator" where a Predict call may be merged with others: a classifier's plain
    texts, a generator's texts or conversations (with the same generation parameters); None where it runs
    alone (seeded sampling, and calls that will fail)."""
    if not _shareable(request):
        return None
    try:
        model = cache.get(request["model_dir"])
    except Exception:
        return None  # run_predict reports the error for this one request
    if isinstance(model, LoadedClassifier):
        return None if request.get("conversations") else "classifier"
    return "generator" if hasattr(model, "predict_many") else None


if __name__ == "__main__":
    sys.exit(main())
