"""Spec validation: every refusal names the field (and the row, for data), before anything is queued."""

import json
import os

import pytest

from tests.support.validation import settings_with_data
from tunewire.spec import spec_from_dict
from tunewire_server.errors import InvalidSpec
from tunewire_server.validation import validate


@pytest.fixture
def settings(tmp_path):
    return settings_with_data(tmp_path / "data", [{"text": f"text {i}", "label": ["neg", "pos"][i % 2]}
                                                  for i in range(10)])


def spec(**overrides):
    base = {
        "base_model": "tiny",
        "classification": {},
        "train_dataset": {"file": {"path": "train.jsonl"}},
    }
    base.update(overrides)
    return spec_from_dict({k: v for k, v in base.items() if v is not None})


def fields_of(exc: InvalidSpec) -> dict[str, str]:
    return {v.field: v.description for v in exc.violations}


def refused(settings, s) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as info:
        validate(s, settings)
    return fields_of(info.value)


def write(settings, name, text: str | bytes):
    path = settings.dataset_root / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return name


def test_valid_spec_gives_a_plan_with_inferred_labels(settings):
    plan = validate(spec(), settings)
    assert plan["task"] == "classification"
    assert plan["label_names"] == ["neg", "pos"]
    assert plan["base_model"] == str(settings.model_root / "tiny")
    assert plan["train_dataset"]["format"] == "jsonl"


@pytest.mark.parametrize("overrides, field", [
    ({"base_model": ""}, "base_model"),
    ({"base_model": "no-such-model"}, "base_model"),
    ({"classification": None}, "task"),
    ({"train_dataset": None}, "train_dataset"),
    ({"train_dataset": {}}, "train_dataset"),
    ({"train_dataset": {"file": {"path": "missing.jsonl"}}}, "train_dataset.file.path"),
    ({"hyperparameters": {"learning_rate": 0}}, "hyperparameters.learning_rate"),
    ({"hyperparameters": {"learning_rate": -1e-5}}, "hyperparameters.learning_rate"),
    ({"hyperparameters": {"learning_rate": "NaN"}}, "hyperparameters.learning_rate"),
    ({"hyperparameters": {"num_train_epochs": 0}}, "hyperparameters.num_train_epochs"),
    ({"hyperparameters": {"num_train_epochs": -2}}, "hyperparameters.num_train_epochs"),
    ({"hyperparameters": {"per_device_train_batch_size": 0}}, "hyperparameters.per_device_train_batch_size"),
    ({"hyperparameters": {"lr_scheduler_type": "zigzag"}}, "hyperparameters.lr_scheduler_type"),
    ({"hyperparameters": {"eval_strategy": "steps"}}, "hyperparameters.eval_steps"),
    ({"hyperparameters": {"eval_on_start": True}}, "hyperparameters.eval_on_start"),
    ({"classification": {"label_names": ["only"]}}, "classification.label_names"),
    ({"classification": {"label_names": ["a", "a"]}}, "classification.label_names"),
    ({"lora": {"r": 8}}, "lora"),
    # bare names are the datasets library's local builders or a folder beside the worker, never the hub
    ({"train_dataset": {"hub": {"name": "text"}}}, "train_dataset.hub.name"),
    ({"train_dataset": {"hub": {"name": "json"}}}, "train_dataset.hub.name"),
    ({"eval_dataset": {"hub": {"name": "imdb"}}}, "eval_dataset.hub.name"),
    ({"train_dataset": {"hub": {"name": "../x/y"}}}, "train_dataset.hub.name"),
])
def test_bad_specs_name_the_field(settings, overrides, field):
    assert field in refused(settings, spec(**overrides))


def test_a_hub_dataset_is_named_owner_slash_name(settings):
    plan = validate(spec(train_dataset={"hub": {"name": "stanfordnlp/imdb"}},
                         classification={"label_names": ["neg", "pos"]}), settings)
    assert plan["train_dataset"] == {"kind": "hub", "name": "stanfordnlp/imdb", "split": "train",
                                     "max_samples": 0}


def test_all_problems_are_reported_at_once(settings):
    fields = refused(settings, spec(base_model="", hyperparameters={"learning_rate": 0, "num_train_epochs": -1}))
    assert {"base_model", "hyperparameters.learning_rate", "hyperparameters.num_train_epochs"} <= set(fields)


@pytest.mark.parametrize("path", [
    "../outside.jsonl", "/etc/passwd", "a/../../x.jsonl", "%2e%2e/x.jsonl", "%252e%252e%252fx.jsonl", "~/x.jsonl",
])
def test_dataset_paths_cannot_leave_the_root(settings, path):
    assert "train_dataset.file.path" in refused(settings, spec(train_dataset={"file": {"path": path}}))


def test_symlink_out_of_the_root_is_refused(settings, tmp_path):
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"text": "x", "label": "a"}\n')
    os.symlink(outside, settings.dataset_root / "link.jsonl")
    assert "outside" in refused(settings, spec(train_dataset={"file": {"path": "link.jsonl"}}))["train_dataset.file.path"]


def test_model_path_cannot_leave_the_root(settings):
    assert "base_model" in refused(settings, spec(base_model="../data"))


def test_model_with_custom_code_is_refused(settings):
    (settings.model_root / "tiny" / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    assert "custom code" in refused(settings, spec())["base_model"]


def test_a_classifier_max_length_beyond_the_models_positions_is_refused(settings):
    (settings.model_root / "tiny" / "config.json").write_text(
        json.dumps({"model_type": "bert", "max_position_embeddings": 64}))
    assert "exceeds the model's 64 positions" in refused(
        settings, spec(classification={"max_length": 128}))["classification.max_length"]
    validate(spec(classification={"max_length": 64}), settings)


@pytest.mark.parametrize("content, needle", [
    ('{"text": "a", "label": "x"}\n{"label": "y"}\n', "row 2: column 'text' is missing"),
    ('{"text": "a", "label": "x"}\n{"text": "  ", "label": "y"}\n', "row 2: column 'text' is empty"),
    ('{"text": "a", "label": "x"}\nnot json\n', "row 2"),
    ('{"text": "a", "label": "x"}\n{"text": "b"}\n', "row 2: column 'label' is missing"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', "at least 2 distinct labels"),
    (b'{"text": "a", "label": "x"}\n{"text": "\xff\xfe", "label": "y"}\n', "UTF-8"),
    ("", "no rows"),
])
def test_data_problems_are_found_before_queueing_and_name_the_row(settings, content, needle):
    name = write(settings, "bad.jsonl", content)
    fields = refused(settings, spec(train_dataset={"file": {"path": name}}))
    assert needle in fields["train_dataset"]


def test_labels_outside_label_names_are_refused_with_the_row(settings):
    name = write(settings, "idx.csv", "text,label\nhello,0\nworld,5\n")
    fields = refused(settings, spec(train_dataset={"file": {"path": name}},
                                    classification={"label_names": ["a", "b"]}))
    assert "row 2" in fields["train_dataset"] and "out of range" in fields["train_dataset"]


def test_eval_labels_must_be_known_from_training(settings):
    name = write(settings, "eval.jsonl", '{"text": "a", "label": "neg"}\n{"text": "b", "label": "maybe"}\n')
    fields = refused(settings, spec(eval_dataset={"file": {"path": name}}))
    assert "row 2" in fields["eval_dataset"] and "maybe" in fields["eval_dataset"]


def test_csv_and_tsv_and_inline_sources(settings):
    csv_name = write(settings, "d.csv", 'text,label\n"hello, world",good\nbye,bad\n')
    assert validate(spec(train_dataset={"file": {"path": csv_name}}), settings)["label_names"] == ["bad", "good"]
    tsv_name = write(settings, "d.tsv", "text\tlabel\nhello\t1\nbye\t0\n")
    assert validate(spec(train_dataset={"file": {"path": tsv_name}}), settings)["label_names"] == ["0", "1"]
    inline = {"inline": {"rows": [{"text": "a", "label": 0}, {"text": "b", "label": 1}]}}
    plan = validate(spec(train_dataset=inline), settings)
    assert plan["train_dataset"]["rows"][1] == {"text": "b", "label": 1.0}


def test_size_and_row_limits(settings):
    settings.max_dataset_bytes = 10
    assert "limit" in refused(settings, spec())["train_dataset.file.path"]
    settings.max_dataset_bytes = 10**9
    settings.max_dataset_rows = 5
    assert "more than the 5 rows" in refused(settings, spec())["train_dataset"]
    settings.max_inline_rows = 1
    inline = {"inline": {"rows": [{"text": "a", "label": 0}, {"text": "b", "label": 1}]}}
    assert "inline" in refused(settings, spec(train_dataset=inline))["train_dataset.inline.rows"]


def test_unknown_format_is_refused(settings):
    name = write(settings, "data.xml", "<rows/>")
    assert "format" in refused(settings, spec(train_dataset={"file": {"path": name}}))["train_dataset.file.format"]
