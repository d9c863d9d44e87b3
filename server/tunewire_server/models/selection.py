"""Which of a model folder's files a download sends: what a plain `from_pretrained` needs, nothing else.

Sent: every top-level file of the folder (weights and their index, config.json, generation_config.json,
adapter_config.json, tokenizer files of any kind, chat_template.jinja, a model card) but these:

- optimizer.pt, scheduler.pt, scaler.pt, rng_state*.pth, trainer_state.json: the state Trainer needs to
  resume training, not to load the model; usually twice the weights' size (Adam's two moments).
- training_args.bin: pickled TrainingArguments; loading it runs pickle (arbitrary code) and no loader reads it.
- tunewire-complete.json (and its .tmp): this server's signed completeness marker, meaningless elsewhere;
  the download carries each file's sha256 instead.
- tunewire.json: this server's own metadata (server paths such as the base model's; a classifier's labels
  are in config.json's id2label anyway).
- sub-folders: a final model's merged/ is the merged form, sent only when that form is asked for; Trainer
  puts nothing else a loader reads in one (DeepSpeed's global_step*/ is optimizer state).
"""

from __future__ import annotations

import fnmatch

from tunewire_server.checkpoints import MARKER
from tunewire_server.models.layout import META_FILE

EXCLUDED = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state*.pth", "trainer_state.json",
            "training_args.bin", MARKER, MARKER + ".tmp", META_FILE)


def is_sent(relative: str) -> bool:
    """Whether a file (its path relative to the model folder, POSIX form) belongs in a download."""
    if "/" in relative or relative.startswith("."):
        return False
    return not any(fnmatch.fnmatchcase(relative, pattern) for pattern in EXCLUDED)


def is_adapter(names) -> bool:
    """Whether a folder holding these files is a LoRA (PEFT) adapter rather than a whole model."""
    return "adapter_config.json" in set(names)
