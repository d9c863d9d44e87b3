"""Steps and seconds of a job: the Trainer's own step arithmetic, and time from a measured throughput.

Throughput is tokens per second of training (padding included, as the model computes it), measured either
on this server's earlier jobs of the same model (history.py) or by a short probe in the estimate worker.
Evaluation runs forward passes only: EVAL_SPEEDUP times the training throughput.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EVAL_SPEEDUP = 3.0  # a forward pass costs about a third of a training step (forward + backward + update)


@dataclass(frozen=True)
class Steps:
    per_epoch: int
    total: int
    epochs: float  # epochs actually run (max_steps may stop early or go round again)


def steps(sequences: int, batch: int, accumulation: int, epochs: float, max_steps: int, world: int = 1) -> Steps:
    """transformers.Trainer's count: batches of `batch` per device, `accumulation` batches per optimizer
    step (a last, partial group still makes a step), `max_steps` > 0 overriding `epochs`."""
    batches = math.ceil(sequences / (batch * world))
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    total = max_steps if max_steps > 0 else math.ceil(epochs * per_epoch)
    return Steps(per_epoch=per_epoch, total=total, epochs=total / per_epoch)


@dataclass(frozen=True)
class Workload:
    """The tokens a job computes on, for its whole run."""

    train_tokens: float  # tokens through forward+backward (all steps, padding included)
    eval_tokens: float  # tokens through forward-only evaluation (all evaluations)
    micro_batches: int = 0  # batches through the trainer's loop (each costs its Python overhead too)
    unpadded_train_tokens: float = 0.0  # train_tokens less the padding: what TRL's num_tokens counts

    def counted_as_trl_does(self) -> Workload:
        """The same work in the tokens an earlier job's logs counted (padding left out): a throughput read
        from those logs applies to these."""
        return Workload(self.unpadded_train_tokens or self.train_tokens, self.eval_tokens, self.micro_batches,
                        self.unpadded_train_tokens)


def workload(total_steps: int, batch: int, accumulation: int, mean_padded_length: float, sequences: int,
             eval_rows: int, mean_eval_length: float, evaluations: int, mean_unpadded_length: float = 0.0) -> Workload:
    """Tokens of `total_steps` optimizer steps (a step past the data's end wraps round to the next epoch)
    and of `evaluations` passes over the eval rows."""
    micro_batches = total_steps * accumulation
    rows = min(micro_batches * batch, max(sequences, 1) * math.ceil(micro_batches * batch / max(sequences, 1)))
    return Workload(train_tokens=rows * mean_padded_length, eval_tokens=evaluations * eval_rows * mean_eval_length,
                    micro_batches=micro_batches, unpadded_train_tokens=rows * mean_unpadded_length)


def evaluations(strategy: str, total_steps: int, per_epoch: int, eval_steps: int | None, on_start: bool) -> int:
    """How many times the trainer evaluates: each epoch, every eval_steps steps, or never (plus at start)."""
    count = int(on_start)
    if strategy == "epoch":
        count += math.ceil(total_steps / per_epoch)
    elif strategy == "steps" and eval_steps:
        count += total_steps // eval_steps
    return count


def seconds(work: Workload, tokens_per_second: float, setup_seconds: float = 0.0,
            batch_overhead_s: float = 0.0) -> float:
    """Wall seconds for `work` at a training throughput, plus the job's setup (model load, data, save) and
    the trainer loop's own cost per micro-batch (collating, logging, callbacks) that a bare probe lacks."""
    if tokens_per_second <= 0:
        return 0.0
    return setup_seconds + work.train_tokens / tokens_per_second \
        + work.eval_tokens / (EVAL_SPEEDUP * tokens_per_second) + work.micro_batches * batch_overhead_s
