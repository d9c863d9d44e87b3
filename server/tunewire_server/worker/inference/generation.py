"""Text generation from a finished SFT job, for the inference worker.

A full fine-tune loads from the job's model folder; a LoRA job loads its base model and puts the adapter
on it with PEFT (nothing is merged on disk). Chat inputs go through the model's chat template.

Stop sequences are matched on the decoded text, so a stop string may span tokens; the text returned
ends before it. While streaming, text that could still turn out to be the start of a stop sequence
(or an incomplete UTF-8 character) is held back until it is known to be output.

`pace`, where given, is called between two generated tokens: the inference worker uses it to hand the
model to other callers (worker/turns.py) and to hold a stream whose client is not reading. Each input is
at most `max_input_tokens` tokens; a longer one is refused, naming it. A numerical failure of sampling
(inf/nan probabilities) is the request's fault and comes back as a GenerationRequestError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from tunewire_server.validation.common import CHAT_ROLES
from tunewire_server.validation.generation import GenerationParams, GenerationRequestError
from tunewire_server.worker.runtime import torch_dtype


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def releasable(text: str, stops: list[str]) -> str:
    """The part of a growing text that is final: before any stop sequence, without a trailing piece that
    may be the start of one, and without a trailing incomplete character."""
    text, stopped = cut_at_stop(text, stops)
    if stopped:
        return text
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    text = text[: len(text) - hold]
    return text.rstrip("\ufffd")


class _StopOnText(StoppingCriteria):
    def __init__(self, decode: Callable[[list[int]], str], prompt_len: int, stops: list[str]) -> None:
        self.decode, self.prompt_len, self.stops = decode, prompt_len, stops

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = [cut_at_stop(self.decode(row[self.prompt_len:].tolist()), self.stops)[1] for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StopOnCancel(StoppingCriteria):
    """Row i stops once cancels[i] is set: the rows of a batch may belong to different callers."""

    def __init__(self, cancels: list[threading.Event]) -> None:
        self.cancels = cancels

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.tensor([c.is_set() for c in self.cancels], dtype=torch.bool, device=input_ids.device)


class _Pace(StoppingCriteria):
    """Calls pace() once per generated token (after the streamer saw it); stops nothing itself."""

    def __init__(self, pace: Callable[[], None]) -> None:
        self.pace = pace

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        self.pace()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _numerical_failure(exc: RuntimeError) -> bool:
    message = str(exc)
    return "inf" in message and "nan" in message or "probability tensor" in message


class _DeltaStreamer(BaseStreamer):
    """Called by generate() with each new token: sends the text that became final since the last call."""

    def __init__(self, generator: LoadedGenerator, stops: list[str], emit: Callable[[str], None]) -> None:
        self.generator, self.stops, self.emit = generator, stops, emit
        self.ids: list[int] = []
        self.sent = 0
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt
            self._prompt_seen = True
            return
        self.ids.extend(value.flatten().tolist())
        text = releasable(self.generator.decode(self.generator.until_eos(self.ids)), self.stops)
        if len(text) > self.sent:
            self.emit(text[self.sent:])
            self.sent = len(text)

    def end(self) -> None:
        pass


class LoadedGenerator:
    """A fine-tuned causal LM (or base + LoRA adapter) and its tokenizer, ready to generate."""

    def __init__(self, model_dir: Path, meta: dict, max_input_tokens: int | None = None) -> None:
        self.meta = meta
        self.max_input_tokens = max_input_tokens
        dtype = torch_dtype(meta.get("model_dtype"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if meta.get("adapter"):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(meta["base_model"], dtype=dtype)
            vocab = meta.get("vocab_size")
            if vocab and base.get_input_embeddings().num_embeddings != vocab:
                base.resize_token_embeddings(vocab)  # the job cloned a chat template that added tokens
            self.model = PeftModel.from_pretrained(base, str(model_dir))
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        gc = self.model.generation_config
        eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
        self.eos_ids = {i for i in [*eos, self.tokenizer.eos_token_id] if i is not None}
        self.pad_id = self.tokenizer.pad_token_id

    # --- text <-> tokens ---------------------------------------------------------------------------

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def until_eos(self, ids: list[int]) -> list[int]:
        for i, token in enumerate(ids):
            if token in self.eos_ids:
                return ids[:i]
        return ids

    def encode_text(self, text: str, field: str = "inputs") -> list[int]:
        # with BOS etc., as SFTTrainer tokenized the training text
        return self._bounded(self.tokenizer(text)["input_ids"], field)

    def _bounded(self, ids: list[int], field: str) -> list[int]:
        if self.max_input_tokens is not None and len(ids) > self.max_input_tokens:
            raise GenerationRequestError(f"is {len(ids)} tokens long; at most {self.max_input_tokens} tokens "
                                         "per input", field)
        return ids

    def encode_chat(self, conversation: dict, field: str) -> list[int]:
        if not self.tokenizer.chat_template:
            raise GenerationRequestError("this model has no chat template; send plain text", field)
        messages = (conversation or {}).get("messages") or []
        if not messages:
            raise GenerationRequestError("a conversation needs at least one message", field)
        clean = []
        for i, m in enumerate(messages):
            role, content = m.get("role", ""), m.get("content", "")
            if role not in CHAT_ROLES:
                raise GenerationRequestError(f"role {role!r} is not one of {', '.join(CHAT_ROLES)}",
                                             f"{field}.messages[{i}].role")
            clean.append({"role": role, "content": content})
        out = self.tokenizer.apply_chat_template(clean, add_generation_prompt=True, tokenize=True, return_dict=True)
        return self._bounded(list(out["input_ids"]), f"{field}.messages")

    def prompts(self, request: dict) -> list[list[int]]:
        inputs, conversations = request.get("inputs") or [], request.get("conversations") or []
        if inputs and conversations:
            raise GenerationRequestError("send either inputs or conversations, not both", "conversations")
        if conversations:
            return [self.encode_chat(c, f"conversations[{i}]") for i, c in enumerate(conversations)]
        return [self.encode_text(t, f"inputs[{i}]") for i, t in enumerate(inputs)]

    # --- generation --------------------------------------------------------------------------------

    def _config(self, p: GenerationParams) -> GenerationConfig:
        # A fresh config: sampling settings the checkpoint ships must not leak into greedy requests.
        kwargs = {}
        if p.do_sample:
            kwargs = {k: v for k, v in (("temperature", p.temperature), ("top_p", p.top_p), ("top_k", p.top_k))
                      if v is not None}
            kwargs.setdefault("top_k", 0)
        return GenerationConfig(max_new_tokens=p.max_new_tokens, do_sample=p.do_sample, eos_token_id=sorted(self.eos_ids),
                                pad_token_id=self.pad_id, **kwargs)

    def _generate(self, prompts: list[list[int]], p: GenerationParams, cancels: list[threading.Event],
                  streamer: BaseStreamer | None = None, pace: Callable[[], None] | None = None) -> list[dict]:
        width = max(len(x) for x in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, x in enumerate(prompts):  # left padding: every row's continuation starts at `width`
            ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
        criteria = [_Pace(pace)] if pace else []
        criteria.append(_StopOnCancel(cancels))  # after pace: a cancel while held back is seen at once
        if p.stop:
            criteria.append(_StopOnText(self.decode, width, p.stop))
        try:
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          generation_config=self._config(p),
                                          stopping_criteria=StoppingCriteriaList(criteria), streamer=streamer)
        except RuntimeError as exc:
            if not _numerical_failure(exc):
                raise
            field = "generation.temperature" if p.do_sample and p.temperature is not None else "generation"
            raise GenerationRequestError("sampling failed: the probabilities became inf or nan; use a larger "
                                         "temperature", field) from None
        # prompt_tokens: the usage counts of the OpenAI face (openai_api/chat.py)
        return [{**self._finish(row, p.stop, cancel), "prompt_tokens": len(x)}
                for row, cancel, x in zip(out[:, width:].tolist(), cancels, prompts, strict=True)]

    def _finish(self, row: list[int], stops: list[str], cancel: threading.Event) -> dict:
        kept = self.until_eos(row)
        text, stopped = cut_at_stop(self.decode(kept), stops)
        if stopped:
            # tokens up to the one that completed the stop sequence
            n = next(k for k in range(1, len(kept) + 1) if cut_at_stop(self.decode(kept[:k]), stops)[1])
            return {"text": text, "num_tokens": n, "finish_reason": "stop"}
        if len(kept) < len(row):
            return {"text": text, "num_tokens": len(kept) + 1, "finish_reason": "eos"}
        return {"text": text, "num_tokens": len(row), "finish_reason": "cancelled" if cancel.is_set() else "length"}

    def predict(self, request: dict, cancel: threading.Event | None = None,
                pace: Callable[[], None] | None = None, max_rows: int = 32) -> list[dict]:
        answer = self.predict_many([(request, cancel or threading.Event())], pace, max_rows)[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def predict_many(self, calls: list[tuple[dict, threading.Event]], pace: Callable[[], None] | None = None,
                     max_rows: int = 32) -> list[list[dict] | Exception]:
        """Several Predict calls with the same generation parameters in one generate() (micro-batching
        across callers): each call's answer, or the exception that failed that call alone. At most
        `max_rows` prompts go into one generate(), so one call with many inputs does not size memory."""
        p = GenerationParams.from_request(calls[0][0].get("generation"))
        answers: list[list[dict] | Exception] = []
        counts: list[int] = []
        prompts: list[list[int]] = []
        cancels: list[threading.Event] = []
        for request, cancel in calls:
            try:
                mine = self.prompts(request)
            except GenerationRequestError as exc:
                answers.append(exc)
                counts.append(0)
                continue
            answers.append([])
            counts.append(len(mine))
            prompts += mine
            cancels += [cancel] * len(mine)
        generated: list[dict] = []
        _seed(p)  # once for all chunks: a seeded call's rows are one random stream, not one per chunk
        for start in range(0, len(prompts), max_rows):
            generated += self._generate(prompts[start:start + max_rows], p, cancels[start:start + max_rows],
                                        pace=pace)
        start = 0
        for answer, n in zip(answers, counts, strict=True):
            if isinstance(answer, list):
                answer.extend({"generation": g} for g in generated[start:start + n])
                start += n
        return answers

    def stream(self, request: dict, cancel: threading.Event, emit: Callable[[str], None],
               pace: Callable[[], None] | None = None) -> dict:
        """Generate for one text or conversation, calling emit(delta) as text becomes final."""
        p = GenerationParams.from_request(request.get("generation"))
        if request.get("conversation"):
            prompt = self.encode_chat(request["conversation"], "conversation")
        else:
            prompt = self.encode_text(request.get("text") or "", "text")
        streamer = _DeltaStreamer(self, p.stop, emit)
        _seed(p)
        final = self._generate([prompt], p, [cancel], streamer, pace)[0]
        if len(final["text"]) > streamer.sent:
            emit(final["text"][streamer.sent:])
        return final


def _seed(p: GenerationParams) -> None:
    if p.seed is not None:
        torch.manual_seed(p.seed)
