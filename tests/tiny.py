"""Tiny models and data built locally, so tests train for real with no network."""

from __future__ import annotations

import json
import random
from pathlib import Path

POSITIVE = ["great", "good", "helpful", "wonderful", "relief", "better", "excellent", "works", "happy", "calm"]
NEGATIVE = ["awful", "bad", "worse", "pain", "terrible", "nausea", "useless", "headache", "sick", "angry"]
FILLER = ["the", "pill", "i", "took", "it", "for", "a", "week", "and", "felt", "doctor", "said", "my", "was"]


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Reviews whose label follows from their words: learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["negative", "positive"][i % 2]
        words = rng.choices(FILLER, k=6) + rng.choices(POSITIVE if label == "positive" else NEGATIVE, k=3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_tokenizer(vocab_words: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(vocab_words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def build_tiny_bert(path: Path) -> Path:
    """A 2-layer BERT encoder (no classification head) saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = build_tokenizer(POSITIVE + NEGATIVE + FILLER)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
