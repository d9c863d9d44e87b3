"""metric_keys: the per-class metric names the worker reports and the validation accepts."""

from __future__ import annotations

from tunewire_server.metric_keys import metric_names, per_class_keys


def test_labels_are_written_safely_and_stay_distinct():
    assert metric_names(["pos", "very bad", "very_bad", ""]) == ["pos", "very_bad", "very_bad_2", "class3"]


def test_per_class_keys_cover_precision_recall_and_f1_of_every_label():
    assert per_class_keys(["a b", "c"]) == ["precision_a_b", "recall_a_b", "f1_a_b", "precision_c", "recall_c",
                                            "f1_c"]
