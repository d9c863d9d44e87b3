"""SFT options: check them before a job is queued, and resolve them into the worker's plan.

Pure Python like the rest of the control plane: no torch, transformers or trl import. Facts about a
local base model come from its files (config.json, the chat template, safetensors headers).

The worker imports the template helpers (`parse_template`, `split_template`, `render`) and the row
checks from here, so the control plane and the worker agree on what a row means.
"""

from __future__ import annotations

import importlib.util
import json
import re
import string
import struct
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from tunewire.v1 import job_pb2
from tunewire_server import hyperparameters as definition
from tunewire_server.config import Settings
from tunewire_server.errors import preview
from tunewire_server.validation import dataset_scan
from tunewire_server.validation.common import CHAT_ROLES, DatasetPlan, Violations
from tunewire_server.validation.dataset_scan import DatasetProblem, columns_of, scan_dataset
from tunewire_server.validation.hyperparameters import check_section
from tunewire_server.validation.model import json_file, local_model, max_positions, read_config
from tunewire_server.validation.paths import (
    UnsafePath,
    is_regular_file,
    open_regular,
    read_text_limited,
    resolve_under,
    special_entry,
)

CAUSAL_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# Architectures whose attention does not keep padding-free ("bfd") packed examples apart: they ignore
# the position_ids that mark where each example starts, so packed examples attend to each other. Found
# by packing two sequences into one row and comparing the second one's logits with those it gets alone
# (the worker runs the same probe on every model before packed training; this list refuses early).
PACKING_LEAKS = frozenset({
    "opt", "bloom", "falcon", "mpt", "xglm", "biogpt", "recurrent_gemma", "mamba", "mamba2", "falcon_mamba",
    "jamba", "falcon_h1", "zamba", "zamba2", "bamba", "rwkv", "gpt_neo",
})
DTYPES = definition.DTYPES  # ModelDtype -> name
PACKING = definition.PACKING  # PackingStrategy -> name

# --- formatting templates ------------------------------------------------------------------------


class TemplateError(ValueError):
    pass


def parse_template(template: str) -> list[str]:
    """The column names a `{column}` template uses, in order. Anything but plain `{name}` placeholders
    (and `{{`/`}}` for literal braces) is refused: no attribute or index access, conversions or formats."""
    names: list[str] = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"is not a valid template ({exc}); write literal braces as {{{{ and }}}}") from None
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise TemplateError("placeholders must name a column, like {question}; {} and {0} are not allowed")
        if any(c in name for c in ".[]"):
            raise TemplateError(f"placeholder {{{name}}} must be a plain column name: no '.', '[' or ']'")
        if conversion or spec:
            raise TemplateError(f"placeholder {{{name}}} must be a plain column name: no !conversion or :format")
        names.append(name)
    return names


def split_template(template: str, response_template: str) -> tuple[str, str]:
    """Cut a template into (prompt, completion) templates just after the first `response_template`."""
    at = template.find(response_template)
    if at < 0:
        raise TemplateError(f"{preview(response_template)} does not occur in sft.formatting_template")
    cut = at + len(response_template)
    prompt, completion = template[:cut], template[cut:]
    try:
        parse_template(prompt)
        parse_template(completion)
    except TemplateError:
        raise TemplateError("must lie in the template's literal text, not inside a {placeholder}") from None
    if not completion.strip():
        raise TemplateError("nothing of sft.formatting_template follows it, so there is no completion to learn")
    return prompt, completion


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render(template: str, row: dict, columns: list[str], row_no: int | None = None) -> str:
    """Fill a parsed template from a row; every column must hold text or a number."""
    values = {}
    for name in columns:
        where = f"row {row_no}: " if row_no is not None else ""
        if name not in row:
            raise DatasetProblem(f"{where}column {preview(name)} is missing (columns: {columns_of(row)})")
        value = row[name]
        if value is None or not isinstance(value, (str, int, float, bool)):
            raise DatasetProblem(f"{where}column {preview(name)} must be text or a number, got {type(value).__name__}")
        values[name] = _scalar(value)
    return template.format_map(values)


# --- what an SFT job trains on ------------------------------------------------------------------


def mode_of(task: job_pb2.SftTask) -> str:
    """messages | prompt_completion | template | template_completion | text."""
    if task.messages_field:
        return "messages"
    if task.prompt_field or task.completion_field:
        return "prompt_completion"
    if task.formatting_template:
        return "template_completion" if task.response_template else "template"
    return "text"


def row_check(task: job_pb2.SftTask) -> Callable[[int, dict], None]:
    """The check every training/eval row must pass (raises DatasetProblem naming the row)."""
    mode = mode_of(task)
    if mode == "messages":
        return lambda row_no, row: check_messages(row_no, row, task.messages_field, task.assistant_only_loss)
    if mode == "prompt_completion":
        def check_pc(row_no: int, row: dict) -> None:
            dataset_scan.require_text(row_no, row, task.prompt_field)
            dataset_scan.require_text(row_no, row, task.completion_field)
        return check_pc
    if mode in ("template", "template_completion"):
        columns = parse_template(task.formatting_template)
        if mode == "template":
            def check_template(row_no: int, row: dict) -> None:
                if not render(task.formatting_template, row, columns, row_no).strip():
                    raise DatasetProblem(f"row {row_no}: sft.formatting_template renders empty text")
            return check_template
        prompt, completion = split_template(task.formatting_template, task.response_template)
        prompt_cols, completion_cols = parse_template(prompt), parse_template(completion)

        def check_split(row_no: int, row: dict) -> None:
            render(prompt, row, prompt_cols, row_no)
            if not render(completion, row, completion_cols, row_no).strip():
                raise DatasetProblem(f"row {row_no}: the completion (after sft.response_template) is empty")
        return check_split
    text_field = task.text_field or "text"
    return lambda row_no, row: dataset_scan.require_text(row_no, row, text_field) and None


def check_messages(row_no: int, row: dict, field: str, assistant_only: bool) -> None:
    if field not in row:
        raise DatasetProblem(f"row {row_no}: column {preview(field)} is missing (columns: {columns_of(row)})")
    messages = row[field]
    if not isinstance(messages, list):
        hint = " (CSV/TSV cells cannot hold message lists; use JSONL or Parquet)" if isinstance(messages, str) else ""
        raise DatasetProblem(f"row {row_no}: column {preview(field)} must be a list of {{role, content}} messages, "
                             f"got {type(messages).__name__}{hint}")
    if not messages:
        raise DatasetProblem(f"row {row_no}: column {preview(field)} has no messages")
    has_answer = False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DatasetProblem(f"row {row_no}: message {i} must be an object with role and content, "
                                 f"got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise DatasetProblem(f"row {row_no}: message {i} has role {preview(role)}; "
                                 f"one of {', '.join(sorted(CHAT_ROLES))}")
        if not isinstance(content, str):
            raise DatasetProblem(f"row {row_no}: message {i} content must be text, got {type(content).__name__}")
        if role == "assistant" and content.strip():
            has_answer = True
    if assistant_only and not has_answer:
        raise DatasetProblem(f"row {row_no}: has no assistant message with content, so assistant-only loss "
                             "has nothing to learn from")


# --- local model facts --------------------------------------------------------------------------


def read_chat_template(folder: Path) -> str | None:
    """The chat template a tokenizer folder carries (chat_template.jinja or tokenizer_config.json)."""
    jinja = folder / "chat_template.jinja"
    if is_regular_file(jinja):
        try:
            return read_text_limited(jinja)
        except (OSError, ValueError):
            return None
    for name in ("tokenizer_config.json", "chat_template.json"):
        data = json_file(folder / name)
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, list):  # named variants: the default one
            template = next((t.get("template") for t in template if isinstance(t, dict)
                             and t.get("name") == "default"), None)
        if isinstance(template, str) and template.strip():
            return template
    return None


def has_generation_markers(template: str) -> bool:
    return re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


@lru_cache(maxsize=1)
def _trl_patchable_templates() -> frozenset[str]:
    """Chat templates TRL swaps for a training version with {% generation %} markers.

    Read from trl's package data without importing trl (the control plane stays torch-free)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "chat_templates"
    found = set()
    for training in folder.glob("*_training.jinja"):
        base = folder / (training.name.removesuffix("_training.jinja") + ".jinja")
        if base.is_file():
            found.add(read_text_limited(base))
    return frozenset(found)


def assistant_masking_supported(template: str) -> bool:
    return has_generation_markers(template) or template in _trl_patchable_templates()


def weight_names(folder: Path) -> list[str] | None:
    """Tensor names from safetensors headers (the 8-byte length, then JSON); None when unreadable."""
    index = folder / "model.safetensors.index.json"
    try:
        if index.exists():
            return list(json.loads(read_text_limited(index))["weight_map"])
        single = folder / "model.safetensors"
        if single.exists():
            with open(open_regular(single), "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                if size > 100 * 1024 * 1024:
                    return None
                header = json.loads(f.read(size))
            return [k for k in header if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError):
        return None
    return None


# --- checks -------------------------------------------------------------------------------------


def _template_source(task: job_pb2.SftTask, settings: Settings, v) -> Path | None:
    field = "sft.chat_template_source"
    try:
        path = resolve_under(settings.model_root, task.chat_template_source)
    except UnsafePath as exc:
        v.add(field, str(exc))
        return None
    shown = preview(task.chat_template_source)
    if not path.is_dir():
        v.add(field, f"no folder {shown} under the model root")
        return None
    special = special_entry(path)
    if special:
        v.add(field, f"folder {shown} holds {preview(special)}, which is not a regular file; the server reads "
              "regular files only")
        return None
    if not any(is_regular_file(path / n) for n in ("tokenizer.json", "tokenizer_config.json")):
        v.add(field, f"folder {shown} has no tokenizer to clone the template from")
        return None
    if read_chat_template(path) is None:
        v.add(field, f"folder {shown} has no chat template")
        return None
    return path


def check_options(spec: job_pb2.JobSpec, settings: Settings, v) -> None:
    """Structural checks of spec.sft and of how it fits the base model."""
    task = spec.sft
    mode = mode_of(task)
    f = "sft."

    # Which kind of data: one at a time.
    if task.messages_field:
        for name in ("prompt_field", "completion_field", "formatting_template", "text_field"):
            if getattr(task, name):
                v.add(f + name, "cannot be combined with messages_field: a job trains on one kind of data")
    elif mode == "prompt_completion":
        if not (task.prompt_field and task.completion_field):
            missing = "completion_field" if task.prompt_field else "prompt_field"
            v.add(f + missing, "prompt/completion data needs both prompt_field and completion_field")
        elif task.prompt_field == task.completion_field:
            v.add(f + "completion_field", "must name another column than prompt_field")
        for name in ("formatting_template", "text_field"):
            if getattr(task, name):
                v.add(f + name, "cannot be combined with prompt_field/completion_field")
    elif mode.startswith("template") and task.text_field:
        v.add(f + "text_field", "cannot be combined with formatting_template, which builds the text")
    if task.response_template and not task.formatting_template:
        v.add(f + "response_template", "needs a formatting_template to mark the prompt in "
              "(for prompt/completion columns, set prompt_field and completion_field)")
    if task.formatting_template:
        try:
            if not parse_template(task.formatting_template):
                v.add(f + "formatting_template", "has no {column} placeholder")
        except TemplateError as exc:
            v.add(f + "formatting_template", str(exc))
        else:
            if task.response_template:
                try:
                    split_template(task.formatting_template, task.response_template)
                except TemplateError as exc:
                    v.add(f + "response_template", str(exc))
    if task.HasField("completion_only_loss") and task.completion_only_loss \
            and mode not in ("prompt_completion", "template_completion"):
        v.add(f + "completion_only_loss", "needs prompt/completion data: set prompt_field and completion_field, "
              "or formatting_template with response_template")
    if task.assistant_only_loss and mode != "messages":
        v.add(f + "assistant_only_loss", "needs conversational data: set messages_field")
    if task.chat_template_source and mode != "messages":
        v.add(f + "chat_template_source", "is used with conversational data only: set messages_field")

    check_section(task, definition.SftOptions, f, settings, v)  # max_length, neftune_noise_alpha
    if task.packing_strategy not in PACKING:
        v.add(f + "packing_strategy", f"unknown value {task.packing_strategy}")
    elif task.packing_strategy != job_pb2.PACKING_STRATEGY_UNSPECIFIED and not task.packing:
        v.add(f + "packing_strategy", "is set but packing is off; set packing: true")
    if task.model_dtype not in DTYPES:
        v.add(f + "model_dtype", f"unknown value {task.model_dtype}")
    if task.model_dtype == job_pb2.MODEL_DTYPE_FLOAT16 and not spec.HasField("lora"):
        v.add(f + "model_dtype", "FLOAT16 weights train only under a LoRA adapter (which trains in float32): a "
              "full fine-tune in float16 breaks AdamW, whose epsilon underflows to 0. Set lora, or use BFLOAT16")
    if task.save_merged_model and not spec.HasField("lora"):
        v.add(f + "save_merged_model", "merges a LoRA adapter; set lora too")
    if spec.HasField("lora"):
        for i, name in enumerate(spec.lora.target_modules):
            if name == "lm_head" or name.endswith(".lm_head"):
                v.add(f"lora.target_modules[{i}]", "lm_head cannot carry an adapter in SFT: TRL computes the "
                      "log-probabilities from lm_head.weight directly, so it would never train")

    model = local_model(spec.base_model, settings)
    if model is not None:
        _check_against_model(spec, model, settings, v)
    elif task.chat_template_source:
        _template_source(task, settings, v)


def _check_against_model(spec: job_pb2.JobSpec, model: Path, settings: Settings, v) -> None:
    task = spec.sft
    cfg = read_config(model)
    model_type = str(cfg.get("model_type", ""))
    archs = cfg.get("architectures") or []
    if isinstance(archs, list) and archs and not any(str(a).endswith(CAUSAL_ARCH_SUFFIXES) for a in archs):
        v.add("base_model", f"SFT needs a causal language model; {preview(spec.base_model)} is a {model_type[:40] or 'model'} "
              f"({', '.join(map(str, archs))[:80]})")
        return
    limit = max_positions(cfg)
    if limit is not None and task.max_length > limit:
        v.add("sft.max_length", f"{task.max_length} exceeds the model's {limit} positions")
    if task.packing and PACKING.get(task.packing_strategy) == "bfd" and model_type in PACKING_LEAKS:
        v.add("sft.packing", f"{model_type} models let padding-free packed examples attend to each other (their "
              "attention ignores the position_ids that separate them). Turn packing off, or set packing_strategy "
              "to WRAPPED if examples that share a row may see each other")
    if task.messages_field:
        if task.chat_template_source:
            source = _template_source(task, settings, v)
            template = read_chat_template(source) if source else None
            origin = f"the template of {preview(task.chat_template_source)}"
        else:
            template = read_chat_template(model)
            origin = f"the chat template of {preview(spec.base_model)}"
            if template is None:
                v.add("sft.messages_field", f"{preview(spec.base_model)} has no chat template to render messages with; "
                      "set sft.chat_template_source to a model folder whose template to clone")
        if template is not None and task.assistant_only_loss and not assistant_masking_supported(template):
            v.add("sft.assistant_only_loss", f"{origin} has no {{% generation %}} markers and TRL has no training "
                  "version of it, so assistant tokens cannot be told apart; use a chat_template_source whose "
                  "template marks assistant turns with {% generation %} ... {% endgeneration %}")
    if spec.HasField("lora") and spec.lora.target_modules:
        names = weight_names(model)
        if names is not None:
            modules = {n.rsplit(".", 1)[0] for n in names if "." in n}
            for i, target in enumerate(spec.lora.target_modules):
                if target == "all-linear" or target == "lm_head":
                    continue
                if not any(m == target or m.endswith("." + target) for m in modules):
                    leaves = sorted({m.rsplit(".", 1)[-1] for m in modules if not m.rsplit(".", 1)[-1].isdigit()})
                    v.add(f"lora.target_modules[{i}]", f"{preview(spec.base_model)} has no module {preview(target)}; its modules "
                          f"include {', '.join(leaves[:24])}")


# --- the plan -----------------------------------------------------------------------------------


def scan(spec: job_pb2.JobSpec, train: DatasetPlan | None, evals: DatasetPlan | None, settings: Settings,
         v: Violations) -> dict:
    """Check every row of local data, and return the plan's "sft" entry: what the data is and where the
    chat template comes from, and the training options with every default filled (max_length at most the
    local model's positions)."""
    task = spec.sft
    check = row_check(task)
    scan_dataset(train, "train_dataset", settings, v, check)
    scan_dataset(evals, "eval_dataset", settings, v, check)

    model = local_model(spec.base_model, settings)
    cfg = read_config(model) if model else {}
    source = None
    if task.chat_template_source:
        try:
            source = str(resolve_under(settings.model_root, task.chat_template_source))
        except UnsafePath:
            source = None
    return {"sft": {
        "mode": mode_of(task),
        "chat_template_source": source,
        "model_type": cfg.get("model_type"),
        **definition.as_dict(definition.sft_options(spec, max_positions(cfg))),
    }}
