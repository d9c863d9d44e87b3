"""A classifier's eval metrics: accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix.

Every value is a float under a flat key, so it travels in an EvalResult's metrics map as it is:
`precision_<label>`, `recall_<label>`, `f1_<label>` (the label name sanitised to [A-Za-z0-9_-]) and
`cm_<i>_<j>`, the count of eval rows of true class i predicted as class j (class indices in label order).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tunewire_server.metric_keys import metric_names

__all__ = ["classification_metrics", "metric_names"]


def classification_metrics(logits, references, label_names: list[str]) -> dict[str, float]:
    """Metrics of `logits` (rows x classes) against `references` (class indices), for `label_names`."""
    predictions = np.asarray(logits).argmax(axis=-1)
    references = np.asarray(references)
    labels = list(range(len(label_names)))
    # zero_division=0: a class never predicted (or absent from the eval data) scores 0, without a warning
    precision, recall, f1, _ = precision_recall_fscore_support(
        references, predictions, labels=labels, average=None, zero_division=0)
    out = {"accuracy": float(accuracy_score(references, predictions)), "f1": float(np.mean(f1))}
    for name, p, r, f in zip(metric_names(label_names), precision, recall, f1, strict=True):
        out[f"precision_{name}"] = float(p)
        out[f"recall_{name}"] = float(r)
        out[f"f1_{name}"] = float(f)
    matrix = confusion_matrix(references, predictions, labels=labels)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            out[f"cm_{i}_{j}"] = float(count)
    return out
