"""Bounds on every value a request carries: string lengths and characters, enum values, numbers, rows.

Checked generically from the message descriptors, so a field added to JobSpec later is covered too: a
string field not listed in STRING_LIMITS gets DEFAULT_STRING_LIMIT characters and the "line" rule, an
enum field any of its enum's defined values, a float field finite values. These checks run before
anything else looks at a spec, so no later check quotes (or sizes anything by) an unbounded value.
Nothing here imports grpc or torch.
"""

from __future__ import annotations

import math
import re
import unicodedata

from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor

from tunewire.v1 import job_pb2
from tunewire_server.config import Settings
from tunewire_server.errors import FieldViolation, InvalidSpec, preview
from tunewire_server.validation.common import MAX_LABELS
from tunewire_server.validation.paths import MAX_PATH

# Character rules. Every rule refuses NUL and other C0/C1 control characters and lone surrogates.
#   name: identifiers, column names, paths and hub ids: also no format characters (bidi overrides,
#         zero-width marks) and no line or paragraph separators, which would make two names look alike.
#   line: one line of free text (display_name, a label name): no line breaks.
#   text: multi-line text (templates): tab, newline and carriage return allowed.
NAME, LINE, TEXT = "name", "line", "text"
_REFUSED = {NAME: {"Cc", "Cf", "Cs", "Zl", "Zp"}, LINE: {"Cc", "Cs", "Zl", "Zp"}, TEXT: {"Cc", "Cs"}}
_TEXT_CONTROLS = frozenset("\t\n\r")

DEFAULT_STRING_LIMIT = 1024  # characters, for a string field not listed below
COLUMN = (256, NAME)  # a dataset column name
STRING_LIMITS: dict[str, tuple[int, str]] = {  # field full name -> (most characters, rule)
    "tunewire.v1.JobSpec.base_model": (MAX_PATH, NAME),
    "tunewire.v1.JobSpec.display_name": (256, LINE),
    "tunewire.v1.HubDataset.name": (256, NAME),
    "tunewire.v1.HubDataset.config": (256, NAME),
    "tunewire.v1.HubDataset.split": (256, NAME),
    "tunewire.v1.FileDataset.path": (MAX_PATH, NAME),
    "tunewire.v1.ClassificationTask.text_field": COLUMN,
    "tunewire.v1.ClassificationTask.text_pair_field": COLUMN,
    "tunewire.v1.ClassificationTask.label_field": COLUMN,
    "tunewire.v1.ClassificationTask.label_names": (256, LINE),
    "tunewire.v1.SftTask.text_field": COLUMN,
    "tunewire.v1.SftTask.prompt_field": COLUMN,
    "tunewire.v1.SftTask.completion_field": COLUMN,
    "tunewire.v1.SftTask.messages_field": COLUMN,
    "tunewire.v1.SftTask.formatting_template": (16_384, TEXT),
    "tunewire.v1.SftTask.response_template": (1024, TEXT),
    "tunewire.v1.SftTask.chat_template_source": (MAX_PATH, NAME),
    "tunewire.v1.Hyperparameters.lr_scheduler_type": (64, NAME),
    # a per-class metric is named by its label ("f1_" + a label name)
    "tunewire.v1.Hyperparameters.metric_for_best_model": (300, LINE),
    "tunewire.v1.LoraConfig.target_modules": (256, NAME),
}
DEFAULT_REPEATED_LIMIT = 1024  # elements of a repeated scalar field not listed below
REPEATED_LIMITS = {
    "tunewire.v1.ClassificationTask.label_names": MAX_LABELS,
    "tunewire.v1.LoraConfig.target_modules": 256,
}
MAX_ROW_DEPTH = 32  # nesting of lists/objects in one inline row

MAX_REQUEST_ID = 128
MAX_JOB_ID = 64
MAX_PAGE_TOKEN = 128
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")


def string_problem(value: str, limit: int, rule: str) -> str | None:
    """Why `value` breaks (limit, rule), or None."""
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit}"
    refused = _REFUSED[rule]
    for i, ch in enumerate(value):
        if ch.isprintable() and ch.isascii():
            continue
        if rule == TEXT and ch in _TEXT_CONTROLS:
            continue
        if unicodedata.category(ch) in refused:
            return f"has a control or invisible character (U+{ord(ch):04X}) at position {i}"
    return None


def check_spec(spec: job_pb2.JobSpec, settings: Settings, add) -> None:
    """Check every field of `spec` against its bounds; `add(field, description)` records a problem."""
    _walk(spec, "", add)
    # field path -> (lowest, highest, why). Hyperparameters and LoRA options have their bounds in their
    # definition (tunewire_server/hyperparameters.py), checked by validation/hyperparameters.py.
    ints = {
        "max_retries": (0, settings.max_job_retries, "the server's max_job_retries"),
        "train_dataset.max_samples": (0, settings.max_dataset_rows, "the rows a dataset may hold"),
        "eval_dataset.max_samples": (0, settings.max_dataset_rows, "the rows a dataset may hold"),
    }
    for path, (low, high, why) in ints.items():
        value = _get(spec, path)
        if value is not None and not low <= value <= high:
            add(path, f"must be between {low} and {high} ({why}), got {value}")


def _get(message, path: str):
    """The value at a dotted path, or None where a message or an optional field on it is unset."""
    *parents, name = path.split(".")
    for part in parents:
        if not message.HasField(part):
            return None
        message = getattr(message, part)
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.has_presence and not message.HasField(name):
        return None
    return getattr(message, name)


def _walk(message, prefix: str, add) -> None:
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct":
            continue  # rows: see check_rows
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # no map in JobSpec today; a map would need bounds of its own
        repeated = field.is_repeated
        values = list(value) if repeated else [value]
        if repeated and field.message_type is None:
            limit = REPEATED_LIMITS.get(field.full_name, DEFAULT_REPEATED_LIMIT)
            if len(values) > limit:
                add(path, f"has {len(values)} elements; at most {limit}")
                continue
        for i, item in enumerate(values):
            where = f"{path}[{i}]" if repeated else path
            if field.message_type is not None:
                _walk(item, where + ".", add)
            elif field.type == FieldDescriptor.TYPE_STRING:
                limit, rule = STRING_LIMITS.get(field.full_name, (DEFAULT_STRING_LIMIT, LINE))
                problem = string_problem(item, limit, rule)
                if problem:
                    add(where, problem)
            elif field.type == FieldDescriptor.TYPE_ENUM:
                if item not in field.enum_type.values_by_number:
                    known = ", ".join(v.name for v in field.enum_type.values)
                    add(where, f"unknown value {item}; one of {known}")
            elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT) \
                    and not math.isfinite(item):
                add(where, f"must be a finite number, got {item}")


# --- inline rows ---------------------------------------------------------------------------------


class RowProblem(ValueError):
    pass


def rows_of(dataset: job_pb2.Dataset, field: str, add) -> list[dict] | None:
    """An inline dataset's rows as plain dicts (numbers as floats, like json_format.MessageToDict), or None
    after `add`ing a violation per bad row: a non-finite number (JSON has none, so the spec could not even
    be stored) or nesting deeper than MAX_ROW_DEPTH."""
    rows, bad = [], 0
    for i, row in enumerate(dataset.inline.rows):
        try:
            rows.append(_struct(row, 0))
        except RowProblem as exc:
            bad += 1
            if bad <= 10:
                add(f"{field}.inline.rows[{i}]", str(exc))
    return None if bad else rows


def _struct(struct: struct_pb2.Struct, depth: int) -> dict:
    if depth > MAX_ROW_DEPTH:
        raise RowProblem(f"nests lists and objects deeper than {MAX_ROW_DEPTH} levels")
    out = {}
    for key, value in struct.fields.items():
        try:
            out[key] = _value(value, depth + 1)
        except RowProblem as exc:
            raise RowProblem(f"column {preview(key)}: {exc}") from None
    return out


def _value(value: struct_pb2.Value, depth: int):
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise RowProblem(f"must be a finite number, got {number}")
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct(value.struct_value, depth)
    if kind == "list_value":
        if depth > MAX_ROW_DEPTH:
            raise RowProblem(f"nests lists and objects deeper than {MAX_ROW_DEPTH} levels")
        return [_value(v, depth + 1) for v in value.list_value.values]
    return None  # null_value, or unset


def check_rows(spec: job_pb2.JobSpec) -> list[FieldViolation]:
    """Problems of the spec's inline rows alone (for callers that serialize a spec before validating it)."""
    found: list[FieldViolation] = []
    for name in ("train_dataset", "eval_dataset"):
        if spec.HasField(name) and getattr(spec, name).WhichOneof("source") == "inline":
            rows_of(getattr(spec, name), name, lambda f, d: found.append(FieldViolation(f, d)))
    return found


# --- request fields outside JobSpec -------------------------------------------------------------


def check_request_id(request_id: str) -> None:
    """An idempotency key: at most MAX_REQUEST_ID printable ASCII characters, no spaces or controls."""
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidSpec(FieldViolation("request_id", f"is {len(request_id)} characters long; "
                                                       f"at most {MAX_REQUEST_ID}"))
    if not _PRINTABLE_ASCII.fullmatch(request_id):
        raise InvalidSpec(FieldViolation("request_id", "may hold printable ASCII characters only "
                                                       "(no spaces, NUL or other control characters)"))


def check_job_id(job_id: str, field: str = "job_id") -> str:
    """A job id as this server issues them: at most MAX_JOB_ID letters, digits, '-', '_' and '.'.

    Anything else cannot name a job, so it is refused as INVALID_ARGUMENT before a lookup (and before
    any message could quote it)."""
    if not job_id:
        raise InvalidSpec(FieldViolation(field, "is required"))
    if len(job_id) > MAX_JOB_ID:
        raise InvalidSpec(FieldViolation(field, f"is {len(job_id)} characters long; a job id has at most "
                                                f"{MAX_JOB_ID}"))
    if not _JOB_ID.fullmatch(job_id) or not job_id.isascii():
        raise InvalidSpec(FieldViolation(field, f"is not a job id (letters, digits, '-', '_', '.'): "
                                                f"{preview(job_id)}"))
    return job_id


def check_page_token(token: str) -> None:
    if len(token) > MAX_PAGE_TOKEN or not _PRINTABLE_ASCII.fullmatch(token):
        raise InvalidSpec(FieldViolation("page_token", "is not a token this server issued"))
