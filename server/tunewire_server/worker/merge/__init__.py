"""The merge worker: a LoRA adapter merged into its base model, in a child process."""
