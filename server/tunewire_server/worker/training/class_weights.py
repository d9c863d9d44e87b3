"""Per-class weights in a classifier's cross-entropy loss, for imbalanced data (ClassificationTask.class_weights).

`balanced` gives each class n_rows / (n_classes * rows_of_class), from the training labels' counts (scikit-learn's
"balanced"); `per_label` names weights by label, every other label weighing 1. The loss goes to the Trainer
through its own hook, `Trainer(compute_loss_func=...)`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from tunewire.v1 import job_pb2


def effective_weights(spec: job_pb2.ClassWeights, label_names: list[str], train_labels) -> list[float] | None:
    """The weight of each class in label order, or None when the spec asks for none (every class weighs 1).

    A class absent from the training labels gets weight 1 under `balanced`: it adds nothing to the loss anyway.
    """
    if spec.balanced:
        labels = np.asarray(train_labels)
        present = np.unique(labels)
        weights = compute_class_weight("balanced", classes=present, y=labels)
        out = [1.0] * len(label_names)
        for index, weight in zip(present.tolist(), weights.tolist(), strict=True):
            out[index] = float(weight)
        return out
    if spec.per_label:
        return [float(spec.per_label.get(name, 1.0)) for name in label_names]
    return None


def weighted_loss(weights: list[float]):
    """A `compute_loss_func` for Trainer: cross-entropy with `weights` per class.

    Trainer hands in the number of labelled rows in the whole accumulated batch and takes the loss as already
    scaled for gradient accumulation: the weighted sum over the micro-batch is divided by that count. (In
    evaluation it passes none: the micro-batch's own row count then.) With balanced weights the rows' mean
    weight over the training data is 1, so the loss stays on the unweighted loss's scale.
    """
    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        weight = torch.tensor(weights, dtype=torch.float32, device=logits.device)
        total = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1), weight=weight,
                                reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else labels.ne(-100).sum()
        return total / count

    return loss
