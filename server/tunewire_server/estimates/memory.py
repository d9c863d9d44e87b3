"""Peak memory of a training process, from the model's shape and the job's batch and length.

    breakdown = memory.estimate(model, Shape(batch=8, length=128, ...))

Parts (bytes):
- weights: every parameter in the job's weight dtype;
- gradients: the trainable parameters (all of them, or LoRA's), in their dtype;
- optimizer: AdamW's two moment tensors per trainable parameter (torch keeps them in the parameter's
  dtype: float32 for full float32 training and for LoRA adapters);
- activations: what the backward pass keeps, per transformer layer and token (after Korthikanti et al.,
  "Reducing Activation Recomputation in Large Transformer Models", 2022): the projections' inputs and
  outputs (ACT_HIDDEN x hidden), the MLP's (ACT_MLP x intermediate, twice that for gated MLPs), and the
  attention probabilities (ACT_ATTENTION x heads x length); with gradient checkpointing only each layer's
  input is kept, plus one layer's full set while it is recomputed. A causal LM adds its logits (batch x
  length x vocab, upcast to float32 for the loss, and their gradient);
- overhead: a fixed part (OVERHEAD_FIXED: code imported lazily, the data), AdamW's step temporaries, and on a
  GPU the allocator's share of the rest.

The constants were calibrated on this project's CPU runs (bench/estimates.py; docs/benchmarks.md §9);
the GPU's overhead is not (no GPU was lent to measure one).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewire_server.estimates.protocol import ModelFacts

# Calibrated on this project's CPU runs (bench/estimates.py, 7 jobs; docs/benchmarks.md §9, run 1): a count
# of the tensors autograd keeps (about 12 hidden-, 2 intermediate- and 2 attention-sized ones per layer and
# token, 3 logit copies) came out at about half of the measured growth of the training process; the
# constants below are those counts doubled (the runs' least-squares factor was 1.96), which also covers the
# loss's extra passes over the logits (TRL computes log-probabilities, entropy and top-1 accuracy from them).
ACT_HIDDEN = 24  # hidden-sized values kept per layer and token (norms, q/k/v, rotary, context, projections)
ACT_MLP = 4  # intermediate-sized values kept per layer and token (up projection, activation), x2 when gated
ACT_ATTENTION = 4  # heads x length values kept per layer and token (scores and probabilities)
LOGIT_COPIES = 6  # the logits, their float32 copies for the loss and its by-products, and their gradients
OVERHEAD_FIXED = {"cpu": 35 * 2**20, "cuda": 512 * 2**20}  # lazily imported code, the data; a CUDA context
# An SFT job's process grows by about 30 MiB more before its first step than a classifier's (TRL's lazily
# imported code and its tokenized copies of the data): ~65 against ~35 MiB in bench/estimates.py's runs.
OVERHEAD_SFT = 30 * 2**20
OVERHEAD_FRACTION = {"cpu": 0.0, "cuda": 0.10}  # the CUDA caching allocator's fragmentation (not calibrated)
OPTIMIZER_TEMPORARIES = 0.5  # AdamW's foreach step allocates temporaries: this share of the states' size


@dataclass(frozen=True)
class Shape:
    """The job's training setup, as far as memory goes."""

    batch: int  # rows per device and micro-step
    length: int  # tokens of the longest row in a batch (max_length when padded to it or packed)
    weight_bytes: int = 4  # bytes per weight in the job's dtype
    activation_bytes: int = 4  # bytes per activation value (2 under bf16/fp16 autocast)
    checkpointing: bool = False
    device_kind: str = "cpu"
    causal_lm: bool = True


@dataclass(frozen=True)
class Breakdown:
    """Estimated peak bytes, by part."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    trainable_parameters: int
    total_parameters: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead


def activation_bytes(model: ModelFacts, shape: Shape) -> int:
    """Bytes the backward pass keeps for one micro-batch."""
    tokens = shape.batch * shape.length
    mlp = ACT_MLP * (2 if model.gated_mlp else 1) * model.intermediate
    per_token_layer = ACT_HIDDEN * model.hidden + mlp + ACT_ATTENTION * model.heads * shape.length
    if shape.checkpointing:  # each layer's input, and one layer recomputed at a time
        kept = model.layers * model.hidden + per_token_layer
    else:
        kept = model.layers * per_token_layer
    kept += 2 * model.hidden  # the embeddings' output and the final norm's
    total = tokens * kept * shape.activation_bytes
    if shape.causal_lm:
        total += tokens * model.vocab * (shape.activation_bytes + 4 * (LOGIT_COPIES - 1))
    return int(total)


def estimate(model: ModelFacts, shape: Shape) -> Breakdown:
    """The peak-memory breakdown of training `model` with `shape`."""
    trainable = model.trainable_parameters
    full = trainable >= model.total_parameters
    # LoRA adapters (and a classifier head) train in float32 whatever the base model's dtype
    trainable_bytes = shape.weight_bytes if full else 4
    weights = model.total_parameters * shape.weight_bytes + (0 if full else trainable * 4)
    gradients = trainable * trainable_bytes
    optimizer = 2 * trainable * trainable_bytes
    activations = activation_bytes(model, shape)
    fixed = OVERHEAD_FIXED.get(shape.device_kind, OVERHEAD_FIXED["cpu"]) + (OVERHEAD_SFT if shape.causal_lm else 0)
    fraction = OVERHEAD_FRACTION.get(shape.device_kind, 0.0)
    overhead = int(fixed + fraction * (weights + gradients + optimizer + activations)
                   + OPTIMIZER_TEMPORARIES * gradients)
    return Breakdown(weights=weights, gradients=gradients, optimizer=optimizer, activations=activations,
                     overhead=overhead, trainable_parameters=trainable, total_parameters=model.total_parameters)


def largest(fits, low: int, high: int) -> int:
    """The largest n in [low, high] with fits(n) (fits is monotone: true up to some n), or 0 when none."""
    if high < low or not fits(low):
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def suggestions(model: ModelFacts, shape: Shape, available: int) -> tuple[int, int]:
    """When `shape` does not fit in `available` bytes: the largest batch that would (at its length), and the
    largest length that would (at its batch); 0 where none does."""
    from dataclasses import replace

    batch = largest(lambda b: estimate(model, replace(shape, batch=b)).total <= available, 1, shape.batch - 1)
    length = largest(lambda n: estimate(model, replace(shape, length=n)).total <= available, 1, shape.length - 1)
    return batch, length


def job_shape(model: ModelFacts, batch: int, peak_length: int, weight_bytes: int, mixed_precision: bool,
              checkpointing: bool, device_kind: str) -> Shape:
    """The Shape of a job's training from the estimate worker's facts."""
    return Shape(batch=batch, length=max(peak_length, 1), weight_bytes=weight_bytes,
                 activation_bytes=2 if mixed_precision or weight_bytes == 2 else 4, checkpointing=checkpointing,
                 device_kind=device_kind, causal_lm=model.num_labels == 0)
