"""Entry point of the long-lived inference worker.

Requests arrive as JSON lines on stdin ({id, op, model_dir, inputs, ...}); answers go up the message
pipe with the same id. Recently used models stay loaded (an LRU of TUNEWIRE_CACHE_SIZE entries).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections import OrderedDict
from pathlib import Path

from tunewire_server.worker.protocol import MessageWriter, parse_args


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
        else:
            raise RequestError("precondition", f"this server cannot serve {meta['task']} models yet")
        self._models[model_dir] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model


def main() -> int:
    args = parse_args()
    out = MessageWriter(args.message_fd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch  # noqa: F401

    from tunewire_server.worker.runtime import configure_torch

    configure_torch()
    cache = ModelCache(int(os.environ.get("TUNEWIRE_CACHE_SIZE", "2")))
    for line in sys.stdin:
        request = json.loads(line)
        try:
            model = cache.get(request["model_dir"])
            out.send(id=request["id"], ok=True, predictions=model.predict(request))
        except RequestError as exc:
            out.send(id=request["id"], ok=False, error={"kind": exc.kind, "message": exc.message, "field": exc.field})
        except Exception as exc:
            traceback.print_exc()
            out.send(id=request["id"], ok=False, error={"kind": "internal", "message": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
