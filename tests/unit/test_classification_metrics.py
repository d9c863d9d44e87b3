"""A classifier's eval metrics: accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix."""

import numpy as np
import pytest

from tunewire_server.worker.training.classification_metrics import classification_metrics, metric_names


def logits_for(predictions, n):
    return np.eye(n)[predictions] * 3.0 - 1.0


def test_per_class_metrics_and_confusion_matrix():
    names = ["negative", "neutral", "positive"]
    references = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    predictions = [0, 0, 2, 2, 1, 2, 2, 2, 2, 0]
    m = classification_metrics(logits_for(predictions, 3), references, names)
    assert m["accuracy"] == pytest.approx(7 / 10)
    # negative: 2 of 3 predicted right, 2 of 3 predictions right
    assert m["precision_negative"] == pytest.approx(2 / 3) and m["recall_negative"] == pytest.approx(2 / 3)
    assert m["precision_neutral"] == pytest.approx(1.0) and m["recall_neutral"] == pytest.approx(1 / 2)
    assert m["precision_positive"] == pytest.approx(4 / 6) and m["recall_positive"] == pytest.approx(4 / 5)
    f1s = [m[f"f1_{n}"] for n in names]
    assert f1s[1] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert m["f1"] == pytest.approx(sum(f1s) / 3)  # macro F1, as before
    cm = [[m[f"cm_{i}_{j}"] for j in range(3)] for i in range(3)]  # rows: true class; columns: predicted
    assert cm == [[2, 0, 1], [0, 1, 1], [1, 0, 4]]
    assert all(isinstance(v, float) for v in m.values())


def test_a_class_never_predicted_scores_zero_and_counts_in_macro_f1():
    m = classification_metrics(logits_for([1, 1, 1, 1], 2), [0, 1, 1, 1], ["a", "b"])
    assert m["precision_a"] == 0.0 and m["recall_a"] == 0.0 and m["f1_a"] == 0.0
    assert m["f1"] == pytest.approx((0.0 + 2 * 0.75 / 1.75) / 2)
    assert m["cm_0_1"] == 1.0 and m["cm_0_0"] == 0.0


def test_a_class_absent_from_the_eval_data_still_has_its_keys():
    m = classification_metrics(logits_for([0, 0], 3), [0, 0], ["a", "b", "c"])
    assert m["recall_c"] == 0.0 and m["cm_2_2"] == 0.0 and m["cm_0_0"] == 2.0


def test_label_names_are_sanitised_and_stay_distinct():
    assert metric_names(["very good", "bad!", "ok-ish_1", "very_good", "😀"]) == [
        "very_good", "bad_", "ok-ish_1", "very_good_3", "_"]
    m = classification_metrics(logits_for([0, 1], 2), [0, 1], ["très bien", "très bien!"])
    assert {"f1_tr_s_bien", "f1_tr_s_bien_", "recall_tr_s_bien_"} <= set(m)
