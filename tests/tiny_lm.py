"""Tiny causal LMs and SFT data built locally, so SFT tests train and generate for real with no network.

The tokenizer is a byte-level BPE trained with `tokenizers` on generated text: it round-trips any string,
as a real LM tokenizer does, so stop sequences and streamed text behave as they would on a real model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "hen", "yak"]
COLORS = ["red", "blue", "green", "gold", "pink", "gray", "teal", "plum"]
VERBS = ["eats", "sees", "likes", "hears", "finds", "chases"]
# A long line that cycles: a model pretrained on it keeps counting, so its generations run to any length.
COUNTING = " ".join(["one two three four five six seven eight nine ten"] * 12)

# ChatML with {% generation %} markers around the assistant turn, end-of-turn token included, so that
# assistant-only loss can mask everything else.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Another family's template (Zephyr-style), with tokens the ChatML tokenizer lacks: the source a job
# clones with `chat_template_source`.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '</s>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# A ChatML template without generation markers that TRL cannot patch: assistant-only loss is refused.
PLAIN_CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def sentence(rng: random.Random) -> str:
    return f"the {rng.choice(COLORS)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} the {rng.choice(ANIMALS)}."


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [sentence(rng) for _ in range(n)]
    lines += [f"Question: what color is the {a}? Answer: {c}" for a, c in zip(ANIMALS, COLORS, strict=True)]
    lines += ["user assistant system hello hi how are you fine thanks ok yes no ### Answer: Question:"] * 5
    lines += [COUNTING] * 5
    return lines


def build_tokenizer(specials: list[str], chat_template: str | None, *, eos: str = "</s>", vocab_size: int = 420):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=eos, pad_token="<pad>",
                                   model_max_length=256)
    extra = [s for s in specials if s not in ("<s>", "</s>", "<pad>")]
    if extra:
        fast.add_special_tokens({"additional_special_tokens": extra})
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def pretrain(model, tokenizer, steps: int, texts: list[str]) -> None:
    """A few hundred steps of plain language modelling, so the model writes words rather than random bytes."""
    import torch

    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        # COUNTING never ends in EOS (and is cut at 96 tokens): the model learns that counting goes on
        batch = tokenizer([t if t == COUNTING else t + tokenizer.eos_token for t in rng.sample(texts, 16)],
                          return_tensors="pt", padding=True, truncation=True, max_length=96)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _save_causal_lm(path: Path, config, tokenizer, end_of_turn: list[str], pretrain_steps: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if pretrain_steps:
        texts = corpus() + [COUNTING] * 40
        if tokenizer.chat_template:
            texts += [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in chat_rows(64, seed=7)]
        pretrain(model, tokenizer, pretrain_steps, texts)
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in [tokenizer.eos_token, *end_of_turn]]
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_llama(path: Path, *, chat_template: str | None = CHATML_TEMPLATE, pretrain_steps: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) with a ChatML chat template whose end of turn is <|im_end|>; with
    pretrain_steps it has learnt to write the generated sentences."""
    from transformers import LlamaConfig

    tokenizer = build_tokenizer(["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"], chat_template)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return _save_causal_lm(path, config, tokenizer, ["<|im_end|>"] if chat_template else [], pretrain_steps)


def build_template_source(path: Path) -> Path:
    """A tokenizer-only folder with a Zephyr-style template and tokens the tiny Llama lacks."""
    tokenizer = build_tokenizer(["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"],
                                ZEPHYR_TEMPLATE)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_gpt2(path: Path) -> Path:
    from transformers import GPT2Config

    tokenizer = build_tokenizer(["<s>", "</s>", "<pad>"], None)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _save_causal_lm(path, config, tokenizer, [])


def build_tiny_opt(path: Path) -> Path:
    """OPT: its attention ignores the position_ids that keep padding-free packed examples apart."""
    from transformers import OPTConfig

    tokenizer = build_tokenizer(["<s>", "</s>", "<pad>"], None)
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=32,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    return _save_causal_lm(path, config, tokenizer, [])


def build_all(root: Path) -> Path:
    build_tiny_llama(root / "tiny-llama", pretrain_steps=150)
    build_tiny_llama(root / "tiny-llama-nochat", chat_template=None)
    build_tiny_llama(root / "tiny-llama-plainchat", chat_template=PLAIN_CHATML_TEMPLATE)
    build_template_source(root / "zephyr-template")
    build_tiny_gpt2(root / "tiny-gpt2")
    build_tiny_opt(root / "tiny-opt")
    return root


# --- data ---------------------------------------------------------------------------------------


def text_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": " ".join(sentence(rng) for _ in range(rng.randint(1, 3)))} for _ in range(n)]


def qa_rows(n: int, seed: int = 0) -> list[dict]:
    """Columns question/answer/animal: a prompt/completion task (the color is a function of the animal)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        i = rng.randrange(len(ANIMALS))
        rows.append({"question": f"what color is the {ANIMALS[i]}?", "answer": COLORS[i], "animal": ANIMALS[i]})
    return rows


def chat_rows(n: int, seed: int = 0, *, field: str = "messages") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        i = rng.randrange(len(ANIMALS))
        messages = []
        if rng.random() < 0.5:
            messages.append({"role": "system", "content": "you are fine"})
        messages += [
            {"role": "user", "content": f"what color is the {ANIMALS[i]}?"},
            {"role": "assistant", "content": COLORS[i]},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "ok"},
        ]
        rows.append({field: messages})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path



def ensure_built(root: Path) -> Path:
    """Build the tiny LMs into `root` (the session's model root) unless they are there already."""
    if not (root / "tiny-opt" / "config.json").is_file():
        build_all(root)
    return root
