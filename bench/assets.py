"""The benchmarks' models and datasets: tiny-bert, small-bert and tiny-llama under bench/.cache/models, built
once in a child process (the drivers never import torch), and the JSONL files the jobs train on.

`python bench/assets.py build-models` builds the models alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from environment import BENCH, MODELS, PYTHON, bench_env, log

# The sentence every generator request starts from: the tiny Llama was pretrained to keep counting,
# so greedy generation runs to max_new_tokens rather than stopping at a random EOS.
COUNTING_PROMPT = "one two three four five six seven eight nine ten one two three"


def _build_models(root: Path) -> None:
    """Runs in a child process (it imports torch)."""
    from tests import tiny, tiny_lm

    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tiny-bert" / "config.json").is_file():
        tiny.build_tiny_bert(root / "tiny-bert")
    if not (root / "tiny-llama" / "config.json").is_file():
        tiny_lm.build_tiny_llama(root / "tiny-llama", pretrain_steps=150)
    if not (root / "small-bert" / "config.json").is_file():
        build_small_bert(root / "small-bert")


def build_small_bert(path: Path) -> Path:
    """A 4-layer BERT, hidden 256 (about 3M parameters, random weights): a classifier whose forward pass,
    not the RPC around it, dominates a Predict call, as it does for a real model."""
    import torch
    from transformers import BertConfig, BertModel

    from tests import tiny

    torch.manual_seed(0)
    tokenizer = tiny.build_tokenizer(tiny.POSITIVE + tiny.NEGATIVE + tiny.FILLER)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ensure_models(threads: int = 1) -> Path:
    """tiny-bert (2-layer BERT, hidden 32), small-bert (4 layers, hidden 256) and tiny-llama (2-layer Llama,
    hidden 32, pretrained to count) under bench/.cache/models, built once."""
    if not all((MODELS / name / "config.json").is_file() for name in ("tiny-bert", "tiny-llama", "small-bert")):
        log("building the tiny models into", MODELS)
        subprocess.run([PYTHON, str(BENCH / "assets.py"), "build-models"], check=True, env=bench_env(threads),
                       timeout=900)
    return MODELS


def write_datasets(dataset_root: Path) -> Path:
    """sentiment.jsonl (text, label) and text.jsonl (text) under `dataset_root`."""
    from tests import tiny, tiny_lm

    dataset_root.mkdir(parents=True, exist_ok=True)
    tiny.write_jsonl(dataset_root / "sentiment.jsonl", tiny.sentiment_rows(256))
    tiny_lm.write_jsonl(dataset_root / "text.jsonl", tiny_lm.text_rows(256))
    return dataset_root


if __name__ == "__main__":
    if sys.argv[1:] == ["build-models"]:
        _build_models(MODELS)
    else:
        sys.exit("usage: python bench/assets.py build-models")
