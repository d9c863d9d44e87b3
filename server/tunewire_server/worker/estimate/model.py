"""The model's shape and parameter counts from its config, without loading weights (a meta-device model)."""

from __future__ import annotations

from tunewire_server.estimates.protocol import ModelFacts
from tunewire_server.worker.runtime import checked_config


def _first(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value:
            return value
    return default


def facts(path: str, task: str, num_labels: int, lora: dict | None) -> ModelFacts:
    """Shape and counts of `path` as the job trains it: a classifier with `num_labels` outputs, or a causal
    LM, with LoRA's adapter when `lora` (the plan's resolved entry) is given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = checked_config(path)
    with torch.device("meta"):
        if task == "classification":
            config.num_labels = num_labels
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    trainable = total
    if lora is not None:
        from peft import get_peft_model

        from tunewire_server.worker.training.sft import lora_config

        peft_model = get_peft_model(model, lora_config(lora, getattr(config, "model_type", None)))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in peft_model.parameters())
        model = peft_model
    hidden = int(_first(config, "hidden_size", "n_embd", "d_model", default=0))
    names = [name for name, _ in model.named_modules()]
    return ModelFacts(
        model_type=str(getattr(config, "model_type", "")),
        hidden=hidden,
        layers=int(_first(config, "num_hidden_layers", "n_layer", "num_layers", default=0)),
        heads=int(_first(config, "num_attention_heads", "n_head", default=1)),
        intermediate=int(_first(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
        vocab=int(_first(config, "vocab_size", default=0)),
        total_parameters=int(total),
        trainable_parameters=int(trainable),
        gated_mlp=any(n.endswith("gate_proj") or n.endswith("w1") for n in names),
        num_labels=num_labels if task == "classification" else 0,
    )
