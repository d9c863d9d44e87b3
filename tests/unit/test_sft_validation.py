"""SFT options are checked in the control plane, against the data and the base model's files, before a
job is queued. Each refusal names the JobSpec field (and the row, for data). No torch here."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny_lm
from tunewire.spec import load_spec, spec_from_dict
from tunewire_server.config import Settings
from tunewire_server.errors import InvalidSpec
from tunewire_server.validation import generation, validate
from tunewire_server.validation import sft as validation_sft
from tunewire_server.validation.dataset_scan import DatasetProblem
from tunewire_server.validation.generation import GenerationParams, GenerationRequestError
from tunewire_server.validation.sft import TemplateError, parse_template, render, split_template

LLAMA_WEIGHTS = [f"model.layers.{i}.{m}.weight" for i in range(2) for m in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
    "mlp.up_proj", "mlp.down_proj", "input_layernorm")] + ["model.embed_tokens.weight", "lm_head.weight"]


def fake_model(folder: Path, model_type: str, arch: str, *, template: str | None = None, positions: int = 256,
               weights: list[str] | None = None) -> None:
    """A model folder as the control plane sees it: config.json, tokenizer files, safetensors header."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": [arch],
                                                    "max_position_embeddings": positions}))
    (folder / "tokenizer_config.json").write_text("{}")
    if template is not None:
        (folder / "chat_template.jinja").write_text(template)
    header = json.dumps({n: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]} for n in weights or []}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)


@pytest.fixture
def settings(tmp_path):
    s = Settings(data_dir=tmp_path / "data")
    root = s.model_root
    fake_model(root / "llama", "llama", "LlamaForCausalLM", template=tiny_lm.CHATML_TEMPLATE, weights=LLAMA_WEIGHTS)
    fake_model(root / "llama-nochat", "llama", "LlamaForCausalLM", weights=LLAMA_WEIGHTS)
    fake_model(root / "llama-plain", "llama", "LlamaForCausalLM", template=tiny_lm.PLAIN_CHATML_TEMPLATE)
    fake_model(root / "opt", "opt", "OPTForCausalLM")
    fake_model(root / "gpt2", "gpt2", "GPT2LMHeadModel", positions=128)
    fake_model(root / "bert", "bert", "BertModel")
    source = root / "zephyr"
    source.mkdir()
    (source / "tokenizer_config.json").write_text("{}")
    (source / "chat_template.jinja").write_text(tiny_lm.ZEPHYR_TEMPLATE)
    data = s.dataset_root
    tiny_lm.write_jsonl(data / "text.jsonl", tiny_lm.text_rows(6))
    tiny_lm.write_jsonl(data / "qa.jsonl", tiny_lm.qa_rows(6))
    tiny_lm.write_jsonl(data / "chat.jsonl", tiny_lm.chat_rows(6))
    return s


def spec(sft: dict, model: str = "llama", data: str = "text.jsonl", **more):
    return spec_from_dict({"base_model": model, "sft": sft, "train_dataset": {"file": {"path": data}}, **more})


def refused(settings, s) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as info:
        validate(s, settings)
    problems: dict[str, str] = {}
    for v in info.value.violations:
        problems[v.field] = f"{problems[v.field]}; {v.description}" if v.field in problems else v.description
    return problems


def rows(settings, name: str, data: list[dict]) -> str:
    tiny_lm.write_jsonl(settings.dataset_root / name, data)
    return name


# --- templates ----------------------------------------------------------------------------------


def test_template_placeholders_are_plain_column_names():
    assert parse_template("### Q: {question}\n### A: {answer} {{literal}}") == ["question", "answer"]
    assert render("Q: {q} ({n}) {{x}}", {"q": "why?", "n": 3.0, "other": [1]}, ["q", "n"]) == "Q: why? (3) {x}"
    for bad in ("{}", "{0}", "{a.__class__}", "{a[0]}", "{a!r}", "{a:>10}", "{unclosed", "stray }"):
        with pytest.raises(TemplateError):
            parse_template(bad)


def test_response_template_cuts_the_template_into_prompt_and_completion():
    assert split_template("Q: {q}\n### Answer: {a}", "### Answer:") == ("Q: {q}\n### Answer:", " {a}")
    with pytest.raises(TemplateError, match="does not occur"):
        split_template("Q: {q} A: {a}", "### Answer:")
    with pytest.raises(TemplateError, match="placeholder"):
        split_template("Q: {question} A: {a}", "uest")
    with pytest.raises(TemplateError, match="no completion"):
        split_template("Q: {q} A:", "A:")


def test_rendering_refuses_missing_or_structured_values():
    with pytest.raises(DatasetProblem, match="row 4: column 'b' is missing"):
        render("{a}{b}", {"a": "x"}, ["a", "b"], 4)
    with pytest.raises(DatasetProblem, match="must be text or a number, got list"):
        render("{a}", {"a": ["x"]}, ["a"], 1)


# --- a valid spec's plan -------------------------------------------------------------------------


def test_plan_resolves_the_sft_options(settings):
    plan = validate(spec({"text_field": "text", "packing": True, "model_dtype": "bfloat16"}), settings)
    assert plan["sft"] == {"mode": "text", "max_length": 256, "chat_template_source": None, "model_type": "llama",
                           "model_dtype": "bfloat16", "packing": True, "packing_strategy": "bfd",
                           "neftune_noise_alpha": 0.0, "completion_only_loss": None, "assistant_only_loss": False}
    plan = validate(spec({"messages_field": "messages", "chat_template_source": "zephyr", "max_length": 64},
                         data="chat.jsonl"), settings)
    assert plan["sft"]["mode"] == "messages" and plan["sft"]["max_length"] == 64
    assert plan["sft"]["chat_template_source"] == str(settings.model_root / "zephyr")
    plan = validate(spec({"formatting_template": "Q: {question} A: {answer}", "response_template": "A:",
                          "packing": True, "packing_strategy": "wrapped"}, data="qa.jsonl"), settings)
    assert plan["sft"]["mode"] == "template_completion" and plan["sft"]["packing_strategy"] == "wrapped"


def test_every_mode_and_option_is_accepted_when_it_fits(settings):
    ok = [
        spec({"prompt_field": "question", "completion_field": "answer", "completion_only_loss": False},
             data="qa.jsonl"),
        spec({"formatting_template": "{question} => {answer}"}, data="qa.jsonl"),
        spec({"messages_field": "messages", "assistant_only_loss": True}, data="chat.jsonl"),
        spec({"text_field": "text", "neftune_noise_alpha": 5, "save_merged_model": True, "model_dtype": "float16"},
             lora={"r": 4, "target_modules": ["q_proj", "mlp.down_proj", "all-linear"]}),
        spec({"packing": True}, model="gpt2"),
        spec({"packing": True, "packing_strategy": "wrapped"}, model="opt"),
    ]
    for s in ok:
        validate(s, settings)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sft, field, words", [
    ({"messages_field": "messages", "prompt_field": "q"}, "sft.prompt_field", "messages_field"),
    ({"prompt_field": "question"}, "sft.completion_field", "both"),
    ({"prompt_field": "question", "completion_field": "question"}, "sft.completion_field", "another column"),
    ({"prompt_field": "question", "completion_field": "answer", "formatting_template": "{question}"},
     "sft.formatting_template", "prompt_field"),
    ({"response_template": "A:"}, "sft.response_template", "formatting_template"),
    ({"formatting_template": "no placeholders"}, "sft.formatting_template", "no {column}"),
    ({"formatting_template": "{question.upper}"}, "sft.formatting_template", "plain column name"),
    ({"formatting_template": "{question} {answer}", "response_template": "### A:"}, "sft.response_template",
     "does not occur"),
    ({"text_field": "text", "completion_only_loss": True}, "sft.completion_only_loss", "prompt/completion"),
    ({"text_field": "text", "assistant_only_loss": True}, "sft.assistant_only_loss", "messages_field"),
    ({"text_field": "text", "chat_template_source": "zephyr"}, "sft.chat_template_source", "conversational"),
    ({"packing_strategy": "wrapped"}, "sft.packing_strategy", "packing is off"),
    ({"neftune_noise_alpha": -1}, "sft.neftune_noise_alpha", "between"),
    ({"max_length": 512}, "sft.max_length", "256 positions"),
    ({"max_length": 10_000_000}, "sft.max_length", "server limit"),
    ({"save_merged_model": True}, "sft.save_merged_model", "lora"),
    ({"model_dtype": "float16"}, "sft.model_dtype", "AdamW"),
])
def test_bad_options_are_refused_with_their_field(settings, sft, field, words):
    problems = refused(settings, spec(sft, data="qa.jsonl" if "question" in json.dumps(sft) else "text.jsonl"))
    assert field in problems and words in problems[field], problems


def test_packing_is_refused_for_architectures_whose_packed_examples_see_each_other(settings):
    problems = refused(settings, spec({"packing": True}, model="opt"))
    assert "attend to each other" in problems["sft.packing"] and "WRAPPED" in problems["sft.packing"]
    assert "opt" in validation_sft.PACKING_LEAKS
    assert not {"llama", "gpt2", "mistral", "qwen2"} & validation_sft.PACKING_LEAKS


def test_a_non_causal_model_is_refused(settings):
    assert "causal language model" in refused(settings, spec({}, model="bert"))["base_model"]


def test_chat_needs_a_template_and_assistant_only_loss_needs_generation_markers(settings):
    problems = refused(settings, spec({"messages_field": "messages"}, model="llama-nochat", data="chat.jsonl"))
    assert "no chat template" in problems["sft.messages_field"]
    # a template cloned from another folder fixes it
    validate(spec({"messages_field": "messages", "chat_template_source": "zephyr", "assistant_only_loss": True},
                  model="llama-nochat", data="chat.jsonl"), settings)
    problems = refused(settings, spec({"messages_field": "messages", "assistant_only_loss": True},
                                      model="llama-plain", data="chat.jsonl"))
    assert "{% generation %}" in problems["sft.assistant_only_loss"]
    problems = refused(settings, spec({"messages_field": "messages", "chat_template_source": "nope"},
                                      data="chat.jsonl"))
    assert "no folder" in problems["sft.chat_template_source"]
    problems = refused(settings, spec({"messages_field": "messages", "chat_template_source": "../etc"},
                                      data="chat.jsonl"))
    assert "sft.chat_template_source" in problems


def test_assistant_only_loss_accepts_templates_trl_can_patch(settings):
    trl_templates = validation_sft._trl_patchable_templates()
    assert trl_templates, "trl's chat templates were not found"
    template = sorted(trl_templates)[0]
    assert not validation_sft.has_generation_markers(template)
    fake_model(settings.model_root / "known", "qwen2", "Qwen2ForCausalLM", template=template)
    validate(spec({"messages_field": "messages", "assistant_only_loss": True}, model="known", data="chat.jsonl"),
             settings)


def test_lora_target_modules_must_exist_in_the_model(settings):
    problems = refused(settings, spec({}, lora={"r": 4, "target_modules": ["q_proj", "c_attn", "lm_head"]}))
    assert "no module 'c_attn'" in problems["lora.target_modules[1]"]
    assert "q_proj" in problems["lora.target_modules[1]"]  # it lists the modules there are
    assert "lm_head" in problems["lora.target_modules[2]"]
    assert "lora.target_modules[0]" not in problems


@pytest.mark.parametrize("sft, data, message", [
    ({"text_field": "body"}, [{"text": "x"}], "row 1: column 'body' is missing"),
    ({"text_field": "text"}, [{"text": "ok"}, {"text": ""}], "row 2: column 'text' is empty"),
    ({"formatting_template": "{question} {answer}"}, [{"question": "q", "answer": "a"}, {"question": "q"}],
     "row 2: column 'answer' is missing"),
    ({"formatting_template": "Q: {question} A: {answer}", "response_template": "A:"},
     [{"question": "q", "answer": " "}], "row 1: the completion"),
    ({"prompt_field": "question", "completion_field": "answer"}, [{"question": "q", "answer": 3}],
     "row 1: column 'answer' must be text"),
    ({"messages_field": "messages"}, [{"messages": "hello"}], "must be a list of {role, content} messages"),
    ({"messages_field": "messages"}, [{"messages": []}], "has no messages"),
    ({"messages_field": "messages"}, [{"messages": [{"role": "robot", "content": "x"}]}], "has role 'robot'"),
    ({"messages_field": "messages"}, [{"messages": [{"role": "user", "content": None}]}], "content must be text"),
    ({"messages_field": "messages"}, [{"messages": [{"content": "x"}]}], "has role None"),
    ({"messages_field": "messages", "assistant_only_loss": True},
     [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}],
     "no assistant message"),
])
def test_rows_that_do_not_fit_the_options_are_refused_by_row(settings, sft, data, message):
    problems = refused(settings, spec(sft, data=rows(settings, "bad.jsonl", data)))
    assert message in problems["train_dataset"], problems


def test_eval_rows_are_checked_too(settings):
    name = rows(settings, "eval.jsonl", [{"text": "fine"}, {"body": "no text"}])
    problems = refused(settings, spec({"text_field": "text"}, eval_dataset={"file": {"path": name}}))
    assert "row 2: column 'text' is missing" in problems["eval_dataset"]


def test_csv_cannot_hold_messages(settings):
    (settings.dataset_root / "chat.csv").write_text('messages\n"[{""role"": ""user""}]"\n')
    problems = refused(settings, spec({"messages_field": "messages"}, data="chat.csv"))
    assert "CSV/TSV cells cannot hold message lists" in problems["train_dataset"]


# --- special files where the model's files are expected (issue 12, item 5) ----------------------


def _refused_in_time(settings, s) -> dict[str, str]:
    """refused() in a thread that must end: reading a FIFO would block it forever."""
    import threading

    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(problems=refused(settings, s)), daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "validation blocked on a special file"
    return result["problems"]


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json", "chat_template.jinja", "config.json"])
def test_a_fifo_among_the_model_files_is_refused_without_blocking(settings, name):
    import os

    folder = settings.model_root / "llama"
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)
    problems = _refused_in_time(settings, spec({"messages_field": "messages"}, data="chat.jsonl"))
    assert name in problems["base_model"] and "not a regular file" in problems["base_model"]


@pytest.mark.parametrize("name", ["tokenizer_config.json", "chat_template.jinja"])
def test_a_fifo_in_the_chat_template_source_is_refused_without_blocking(settings, name):
    import os

    folder = settings.model_root / "zephyr"
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)
    problems = _refused_in_time(settings, spec({"messages_field": "messages", "chat_template_source": "zephyr"},
                                               data="chat.jsonl"))
    assert name in problems["sft.chat_template_source"]


# --- generation parameters -----------------------------------------------------------------------


def test_generation_params_parse_protobuf_json():
    p = GenerationParams.from_request({"max_new_tokens": 5, "do_sample": True, "temperature": 0.5, "top_p": 0.9,
                                       "top_k": 4, "stop_sequences": ["\n"], "seed": "12345678901"})
    assert (p.max_new_tokens, p.do_sample, p.temperature, p.top_p, p.top_k, p.stop, p.seed) == (
        5, True, 0.5, 0.9, 4, ["\n"], 12345678901)
    assert GenerationParams.from_request({}).max_new_tokens == generation.DEFAULT_MAX_NEW_TOKENS


@pytest.mark.parametrize("params, field", [
    ({"max_new_tokens": 0}, "generation.max_new_tokens"),
    ({"max_new_tokens": 10**6}, "generation.max_new_tokens"),
    ({"temperature": 0.7}, "generation.temperature"),  # without do_sample
    ({"do_sample": True, "temperature": 0}, "generation.temperature"),
    ({"do_sample": True, "top_p": 1.5}, "generation.top_p"),
    ({"stop_sequences": ["ok", ""]}, "generation.stop_sequences[1]"),
    ({"seed": "x"}, "generation.seed"),
])
def test_bad_generation_params_name_their_field(params, field):
    with pytest.raises(GenerationRequestError) as info:
        GenerationParams.from_request(params)
    assert info.value.field == field


# --- contract ------------------------------------------------------------------------------------


def test_control_plane_modules_do_not_import_torch():
    code = ("import sys; import tunewire_server.validation.sft, tunewire_server.workers.inference; "
            "bad = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules]; "
            "validation = tunewire_server.validation.sft._trl_patchable_templates(); "
            "bad += [m for m in ('torch', 'trl') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sft_example_specs_parse():
    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("sft-*.yaml"))
    assert examples
    for path in examples:
        s = load_spec(path)
        assert s.WhichOneof("task") == "sft" and s.base_model
