"""Bounds on every value a request carries (issue 12, items 1-5, 9a): refused with the field named, quickly,
and without quoting more than a short prefix of what was sent."""

from __future__ import annotations

import json
import os
import threading

import pytest
from google.protobuf import json_format

from tests.support.validation import settings_with_data
from tunewire.spec import spec_from_dict
from tunewire.v1 import job_pb2
from tunewire_server.errors import FieldViolation, InvalidSpec, preview
from tunewire_server.validation import (
    MAX_LABELS,
    check_request_id,
    dataset_scan,
    paths,
    spec_to_json,
    validate,
)
from tunewire_server.validation.dataset_scan import DatasetProblem
from tunewire_server.validation.generation import MIN_TEMPERATURE, GenerationParams, GenerationRequestError

ROWS = [{"text": f"text {i}", "label": i % 2} for i in range(6)]


@pytest.fixture
def settings(tmp_path):
    return settings_with_data(tmp_path / "data", ROWS)


def spec(**overrides) -> job_pb2.JobSpec:
    base = {"base_model": "tiny", "classification": {}, "train_dataset": {"file": {"path": "train.jsonl"}}}
    base.update(overrides)
    return spec_from_dict({k: v for k, v in base.items() if v is not None})


def inline(*rows) -> dict:
    return {"inline": {"rows": list(rows)}}


def refused(settings, s) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as info:
        validate(s, settings)
    return {v.field: v.description for v in info.value.violations}


# --- item 1: labels are checked against the label limit before anything is sized by them ---------


@pytest.mark.parametrize("label, needle", [
    (1e300, "out of range for 10000 labels"),
    (2e6, "out of range for 10000 labels"),
    (MAX_LABELS, "out of range for 10000 labels"),
    (1.5, "is not a class index"),
    (-1, "is negative"),
    (True, "got bool"),
    ([1], "got list"),
])
def test_an_inline_numeric_label_beyond_the_limit_is_refused_by_row(settings, label, needle):
    problems = refused(settings, spec(train_dataset=inline(*ROWS[:2], {"text": "x", "label": label})))
    assert needle in problems["train_dataset"]
    assert problems["train_dataset"].startswith("row 3: column 'label'")


def test_a_digit_string_label_beyond_the_limit_is_refused_before_names_are_built(settings):
    (settings.dataset_root / "big.jsonl").write_text('{"text": "a", "label": "0"}\n{"text": "b", "label": "999999999"}\n')
    problems = refused(settings, spec(train_dataset={"file": {"path": "big.jsonl"}}))
    assert "row 2" in problems["train_dataset"] and "label_names" in problems["train_dataset"]


def test_more_distinct_labels_than_the_limit_stop_the_scan(settings):
    rows = "".join(json.dumps({"text": "t", "label": f"name{i}"}) + "\n" for i in range(MAX_LABELS + 5))
    (settings.dataset_root / "many.jsonl").write_text(rows)
    problems = refused(settings, spec(train_dataset={"file": {"path": "many.jsonl"}}))
    assert f"row {MAX_LABELS + 1}: has more than {MAX_LABELS} distinct labels" in problems["train_dataset"]


def test_non_finite_numbers_in_a_jsonl_file_are_refused_by_row(settings):
    (settings.dataset_root / "nan.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": NaN}\n')
    problems = refused(settings, spec(train_dataset={"file": {"path": "nan.jsonl"}}))
    assert "row 2 (line 2): NaN" in problems["train_dataset"]


def test_label_index_never_trusts_a_label():
    assert dataset_scan.label_index("1", ["a", "b"]) == 1
    assert dataset_scan.label_index(1.0, ["a", "b"]) == 1
    for value in (float("nan"), 1e300, "9" * 5000, -1, "²", True):
        with pytest.raises(DatasetProblem) as info:
            dataset_scan.label_index(value, ["a", "b"])
        assert len(str(info.value)) < 200


# --- item 2: NaN and infinities in inline rows -----------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_in_inline_rows_are_refused_naming_row_and_column(settings, value):
    s = spec(train_dataset=inline(*ROWS[:2], {"text": "x", "label": 0, "score": {"deep": [1, value]}}))
    problems = refused(settings, s)
    assert "column 'score'" in problems["train_dataset.inline.rows[2]"]
    assert "finite" in problems["train_dataset.inline.rows[2]"]
    with pytest.raises(InvalidSpec) as info:  # nor can it be stored without validation first
        spec_to_json(s)
    assert info.value.violations[0].field == "train_dataset.inline.rows[2]"


def test_deeply_nested_inline_rows_are_refused(settings):
    nested: dict = {"v": 1}
    for _ in range(40):
        nested = {"v": nested}
    problems = refused(settings, spec(train_dataset=inline(*ROWS[:2], {"text": "x", "label": 0, "n": nested})))
    assert "deeper than" in problems["train_dataset.inline.rows[2]"]


@pytest.mark.parametrize("params", [
    {"do_sample": True, "temperature": 1e-300},
    {"do_sample": True, "temperature": MIN_TEMPERATURE / 2},
    {"do_sample": True, "temperature": "NaN"},
    {"do_sample": True, "temperature": "Infinity"},
    {"do_sample": True, "top_k": -1},
    {"do_sample": True, "top_k": 10**9},
    {"do_sample": True, "top_p": "NaN"},
    {"max_new_tokens": 1.5},
    {"max_new_tokens": "inf"},
    {"seed": str(2**64)},
    {"seed": "1" * 5000},
    {"stop_sequences": ["x" * 10_000]},
    {"stop_sequences": "abc"},
])
def test_extreme_generation_numbers_are_refused(params):
    field = "generation." + next(k for k in params if k != "do_sample")
    with pytest.raises(GenerationRequestError) as info:
        GenerationParams.from_request(params)
    assert info.value.field.startswith(field)


def test_the_smallest_safe_temperature_is_accepted():
    assert GenerationParams.from_request({"do_sample": True, "temperature": MIN_TEMPERATURE}).temperature == MIN_TEMPERATURE


# --- item 3: strings are bounded, checked for characters, and never echoed whole -----------------


@pytest.mark.parametrize("overrides, field", [
    ({"hyperparameters": {"lr_scheduler_type": "x" * 100_000}}, "hyperparameters.lr_scheduler_type"),
    ({"classification": {"text_field": "t" * 1_000_000}}, "classification.text_field"),
    ({"display_name": "d" * 5_000_000}, "display_name"),
    ({"display_name": "two\nlines"}, "display_name"),
    ({"base_model": "tiny\x00"}, "base_model"),
    ({"base_model": "b" * 2000}, "base_model"),
    ({"classification": {"label_names": ["a", "b\x07"]}}, "classification.label_names[1]"),
    ({"classification": {"label_field": "label\u202e"}}, "classification.label_field"),
    ({"train_dataset": {"file": {"path": "p" * 5000}}}, "train_dataset.file.path"),
    ({"train_dataset": {"hub": {"name": "a/b", "split": "s" * 1000}}}, "train_dataset.hub.split"),
    ({"classification": None, "sft": {"formatting_template": "{text}" * 10_000}}, "sft.formatting_template"),
    ({"lora": {"r": 4, "target_modules": ["q"] * 1000}}, "lora.target_modules"),
])
def test_long_or_odd_strings_are_refused_without_being_echoed(settings, overrides, field):
    problems = refused(settings, spec(**overrides))
    assert field in problems
    assert all(len(d) < 300 for d in problems.values())


def test_templates_may_span_lines(settings):
    problems = refused(settings, spec(classification=None, sft={"formatting_template": "Q: {q}\n\tA: {a}\x00"}))
    assert "U+0000" in problems["sft.formatting_template"]
    s = spec(classification=None, sft={"formatting_template": "Q: {q}\n\tA: {a}"},
             train_dataset=inline({"q": "1", "a": "2"}))
    validate(s, settings)


@pytest.mark.parametrize("request_id", ["x" * 129, "a\x00b", "with space", "tab\t", "é"])
def test_request_ids_are_short_printable_ascii(request_id):
    with pytest.raises(InvalidSpec) as info:
        check_request_id(request_id)
    assert info.value.violations[0].field == "request_id"
    assert request_id not in info.value.message or len(request_id) < 10


def test_a_good_request_id_passes():
    check_request_id("")
    check_request_id("retry-2026-11-29T10:00:00Z_7f3a")


def test_preview_quotes_a_short_prefix_only():
    assert preview("short") == "'short'"
    long = preview("x" * 1_000_000)
    assert len(long) < 80 and "1000000 characters" in long
    assert preview("\x00bell\x07") == "'\\x00bell\\x07'"


def test_status_messages_and_violations_are_cut_to_fit_grpc_metadata():
    from tunewire_server.api import status

    big = InvalidSpec([FieldViolation("f" * 10_000, "d" * 100_000) for _ in range(1000)])
    st = status.to_status(big)
    assert len(st.details) < 4096
    details = dict(st.trailing_metadata)["grpc-status-details-bin"]
    assert len(details) <= status.MAX_DETAILS_BYTES + status.MAX_MESSAGE_BYTES + 512
    from google.rpc import error_details_pb2, status_pb2

    parsed = status_pb2.Status.FromString(details)
    bad = error_details_pb2.BadRequest()
    parsed.details[0].Unpack(bad)
    assert bad.field_violations[-1].description.endswith("more problems not shown")
    assert all(len(v.description.encode()) <= status.MAX_DESCRIPTION_BYTES for v in bad.field_violations)
    assert len(status.to_status(InvalidSpec(FieldViolation("f", "é" * 10_000))).details.encode()) <= 512


# --- item 4: enums, and numbers at their type's edges ---------------------------------------------


@pytest.mark.parametrize("overrides, field", [
    ({"hyperparameters": {"eval_strategy": 99}}, "hyperparameters.eval_strategy"),
    ({"hyperparameters": {"save_strategy": -5}}, "hyperparameters.save_strategy"),
    ({"hyperparameters": {"precision": 7}}, "hyperparameters.precision"),
    ({"train_dataset": {"file": {"path": "train.jsonl", "format": 42}}}, "train_dataset.file.format"),
    ({"lora": {"r": 4, "bias": 99}}, "lora.bias"),
    ({"max_retries": 2**32 - 1}, "max_retries"),
    ({"hyperparameters": {"seed": -(2**63)}}, "hyperparameters.seed"),
    ({"hyperparameters": {"seed": 2**63 - 1}}, "hyperparameters.seed"),
    ({"hyperparameters": {"seed": 2**32}}, "hyperparameters.seed"),
    ({"hyperparameters": {"save_steps": 2**32 - 1, "save_strategy": "steps"}}, "hyperparameters.save_steps"),
    ({"hyperparameters": {"save_total_limit": 2**32 - 1}}, "hyperparameters.save_total_limit"),
    ({"train_dataset": {"file": {"path": "train.jsonl"}, "max_samples": 2**32 - 1}}, "train_dataset.max_samples"),
    ({"lora": {"r": 4, "alpha": 1e300}}, "lora.alpha"),
])
def test_out_of_range_enums_and_numbers_are_refused(settings, overrides, field):
    assert field in refused(settings, spec(**overrides))


def test_every_enum_field_of_a_jobspec_is_checked(settings):
    """Generic: any enum field anywhere in JobSpec (a new one too) gets its values checked."""
    found = []

    def enum_fields(descriptor, prefix=""):
        for f in descriptor.fields:
            if f.enum_type is not None:
                found.append(prefix + f.name)
            elif f.message_type is not None and f.message_type.full_name.startswith("tunewire."):
                enum_fields(f.message_type, prefix + f.name + ".")

    enum_fields(job_pb2.JobSpec.DESCRIPTOR)
    assert len(found) >= 8
    for path in found:
        s = spec()
        message = s
        *parents, name = path.split(".")
        for part in parents:
            message = getattr(message, part)
        if path.startswith("sft."):
            s.sft.SetInParent()
        setattr(message, name, 999)
        if path.startswith("train_dataset.file"):
            s.train_dataset.file.path = "train.jsonl"
        assert path in refused(settings, s), path


def test_the_largest_accepted_seed_and_retries_pass(settings):
    validate(spec(hyperparameters={"seed": 2**32 - 1}, max_retries=settings.max_job_retries), settings)


# --- item 5: special files are refused without being read -------------------------------------------


def _refused_fast(settings, s) -> dict[str, str]:
    """validate() in a thread that must end: a FIFO opened for reading would block it forever."""
    result: dict = {}

    def run():
        try:
            validate(s, settings)
            result["ok"] = True
        except InvalidSpec as exc:
            result["problems"] = {v.field: v.description for v in exc.violations}

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "validation blocked"
    assert "problems" in result, result
    return result["problems"]


def test_a_fifo_or_directory_as_dataset_file_is_refused(settings):
    os.mkfifo(settings.dataset_root / "fifo.jsonl")
    (settings.dataset_root / "dir.jsonl").mkdir()
    (settings.dataset_root / "zero.jsonl").symlink_to("/dev/zero")  # leaves the root: refused either way
    for name, needle in (("fifo.jsonl", "FIFO"), ("dir.jsonl", "directory"), ("zero.jsonl", "outside")):
        problems = _refused_fast(settings, spec(train_dataset={"file": {"path": name}}))
        assert needle in problems["train_dataset.file.path"], (name, problems)


def test_a_fifo_as_config_json_of_a_model_folder_is_refused(settings):
    folder = settings.model_root / "fifo-model"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    problems = _refused_fast(settings, spec(base_model="fifo-model"))
    assert "config.json" in problems["base_model"] and "not a regular file" in problems["base_model"]


def test_read_limited_refuses_special_and_oversized_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(paths.NotRegularFile):
        paths.read_limited(tmp_path / "fifo")
    with pytest.raises(paths.NotRegularFile):
        paths.read_limited("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(paths.FileTooLarge):
        paths.read_limited(tmp_path / "big", limit=99)
    assert paths.read_limited(tmp_path / "big", limit=100) == b"x" * 100


def test_open_under_refuses_a_symlink_leaving_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret.txt"
    root.mkdir()
    outside.write_text("SECRET")
    (root / "data.jsonl").write_text("{}\n")
    os.close(paths.open_under(root, "data.jsonl"))
    (root / "data.jsonl").unlink()
    (root / "data.jsonl").symlink_to(outside)
    with pytest.raises(paths.UnsafePath):
        paths.open_under(root, "data.jsonl")


def test_inline_rows_convert_like_json_format(settings):
    rows = [{"text": "a", "label": 0, "meta": {"x": [1, "y", None, True]}}, {"text": "b", "label": 1}]
    plan = validate(spec(train_dataset=inline(*rows)), settings)
    struct_rows = spec(train_dataset=inline(*rows)).train_dataset.inline.rows
    assert plan["train_dataset"]["rows"] == [json_format.MessageToDict(r) for r in struct_rows]


def test_inline_data_is_bounded_in_bytes_as_it_is_stored_with_the_job(settings):
    rows = [{"text": "x" * 1000, "label": i % 2} for i in range(20)]
    settings.max_inline_bytes = 10_000
    problems = refused(settings, spec(train_dataset=inline(*rows)))
    assert "at most 10000 may be sent inline" in problems["train_dataset.inline.rows"]
