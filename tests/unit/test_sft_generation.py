"""Generation for SFT jobs, in process: generation parameters, stop sequences, chat input, streaming,
cancellation, and a LoRA adapter served on its base model. The tiny Llama is pretrained on the tiny
corpus, so it writes words ("the red fox hears the fox.") and keeps counting after "one two three"."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from tests import tiny_lm
from tunewire_server.validation.generation import GenerationRequestError
from tunewire_server.worker.inference.generation import LoadedGenerator, cut_at_stop, releasable


@pytest.fixture(scope="module")
def root(models_root):
    return tiny_lm.ensure_built(models_root)


@pytest.fixture(scope="module")
def gen(root):
    return LoadedGenerator(root / "tiny-llama", {"task": "sft", "model_dtype": "float32"})


def one(gen, text, **params) -> dict:
    return gen.predict({"inputs": [text], "generation": params})[0]["generation"]


def stream(gen, request: dict, cancel: threading.Event | None = None, on_delta=None) -> tuple[list[str], dict]:
    deltas: list[str] = []

    def emit(delta):
        deltas.append(delta)
        if on_delta:
            on_delta(delta)

    final = gen.stream(request, cancel or threading.Event(), emit)
    return deltas, final


def test_stop_text_helpers():
    assert cut_at_stop("abc STOP def END", ["END", "STOP"]) == ("abc ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert releasable("hello wor", ["world!"]) == "hello "  # "wor" may become the stop sequence
    assert releasable("hello world! more", ["world!"]) == "hello "
    assert releasable("caf\ufffd", []) == "caf"  # an incomplete character waits for its other bytes


def test_greedy_generation_ends_at_eos_or_at_max_new_tokens(gen):
    first = one(gen, "the red")
    assert first == one(gen, "the red")  # greedy is repeatable
    assert first["finish_reason"] == "eos" and first["text"].endswith(".") and "</s>" not in first["text"]
    assert first["num_tokens"] == len(gen.tokenizer(first["text"], add_special_tokens=False)["input_ids"]) + 1
    short = one(gen, "one two three", max_new_tokens=5)
    assert short["finish_reason"] == "length" and short["num_tokens"] == 5
    assert one(gen, "one two three", max_new_tokens=30)["text"].startswith(short["text"])


def test_stop_sequences_end_the_text_before_them(gen):
    full = one(gen, "one two three", max_new_tokens=40)["text"]  # " four five six seven ..."
    stopped = one(gen, "one two three", max_new_tokens=40, stop_sequences=["ven ei", "nine"])
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == full[: full.index("ven ei")]  # spans tokens; the earliest stop wins
    assert stopped["num_tokens"] < 40
    assert one(gen, "one two three", max_new_tokens=40, stop_sequences=["zebra"])["finish_reason"] == "length"


def test_sampling_follows_seed_temperature_top_k_and_top_p(gen):
    greedy = one(gen, "the", max_new_tokens=12)["text"]
    hot = {"do_sample": True, "temperature": 2.5, "max_new_tokens": 12}
    assert one(gen, "the", **hot, seed="7") == one(gen, "the", **hot, seed="7")
    assert len({one(gen, "the", **hot, seed=str(s))["text"] for s in range(6)}) > 1
    assert one(gen, "the", **hot, top_k=1, seed="3")["text"] == greedy
    assert one(gen, "the", **hot, top_p=0.001, seed="3")["text"] == greedy
    assert one(gen, "the", do_sample=True, temperature=0.01, max_new_tokens=12, seed="3")["text"] == greedy


def test_a_seeded_call_split_into_chunks_is_one_random_stream(gen):
    """A call with more inputs than one generate() takes is split into chunks; seeding each chunk again would
    give the same prompt at index i and i + max_rows the same sample."""
    hot = {"do_sample": True, "temperature": 2.5, "max_new_tokens": 12, "seed": "11"}
    rows = gen.predict({"inputs": ["the"] * 4, "generation": hot}, max_rows=2)
    texts = [r["generation"]["text"] for r in rows]
    assert texts[:2] != texts[2:]
    assert rows == gen.predict({"inputs": ["the"] * 4, "generation": hot}, max_rows=2)  # still reproducible


def test_batched_inputs_match_one_at_a_time(gen):
    texts = ["the red", "one two three four", "what color"]
    batch = gen.predict({"inputs": texts, "generation": {"max_new_tokens": 10}})
    assert [p["generation"] for p in batch] == [one(gen, t, max_new_tokens=10) for t in texts]


def test_calls_of_several_callers_share_one_generate_and_each_gets_its_own_answer(gen):
    params = {"max_new_tokens": 10}
    chat = {"messages": [{"role": "user", "content": "what color is the cat?"}]}
    calls = [({"inputs": ["the red", "one two three four"], "generation": params}, threading.Event()),
             ({"conversations": [chat], "generation": params}, threading.Event()),
             ({"conversations": [{"messages": [{"role": "wizard", "content": "x"}]}], "generation": params},
              threading.Event()),
             ({"inputs": ["what color"], "generation": params}, threading.Event())]
    answers = gen.predict_many(calls)
    assert answers[0] == gen.predict(calls[0][0]) and answers[1] == gen.predict(calls[1][0])
    assert answers[3] == gen.predict(calls[3][0])
    assert isinstance(answers[2], GenerationRequestError)  # only that caller's input was at fault
    assert answers[2].field == "conversations[0].messages[0].role"


def test_a_cancelled_caller_stops_only_its_own_rows(gen):
    cancelled = threading.Event()
    cancelled.set()
    params = {"max_new_tokens": 20}
    mine, theirs = gen.predict_many([({"inputs": ["one two three"], "generation": params}, cancelled),
                                     ({"inputs": ["one two three"], "generation": params}, threading.Event())])
    assert mine[0]["generation"]["finish_reason"] == "cancelled"
    assert theirs[0]["generation"] == one(gen, "one two three", max_new_tokens=20)


def test_chat_input_goes_through_the_chat_template(gen):
    answer = gen.predict({"conversations": [{"messages": [{"role": "user", "content": "what color is the cat?"}]}]})
    assert answer[0]["generation"]["text"] == "gray"  # the pretrained answer; <|im_end|> ends the turn
    assert answer[0]["generation"]["finish_reason"] == "eos"
    with pytest.raises(GenerationRequestError) as info:
        gen.predict({"inputs": ["x"], "conversations": [{"messages": [{"role": "user", "content": "x"}]}]})
    assert info.value.field == "conversations"
    with pytest.raises(GenerationRequestError) as info:
        gen.predict({"conversations": [{"messages": [{"role": "wizard", "content": "x"}]}]})
    assert info.value.field == "conversations[0].messages[0].role"


def test_a_model_without_chat_template_refuses_conversations(root):
    plain = LoadedGenerator(root / "tiny-gpt2", {"task": "sft"})
    with pytest.raises(GenerationRequestError, match="no chat template"):
        plain.predict({"conversations": [{"messages": [{"role": "user", "content": "x"}]}]})


def test_streamed_deltas_add_up_to_the_final_text(gen):
    params = {"max_new_tokens": 30, "stop_sequences": ["seven"]}
    deltas, final = stream(gen, {"text": "one two three", "generation": params})
    assert len(deltas) > 3 and "".join(deltas) == final["text"]
    assert final == one(gen, "one two three", **params)
    assert "seven" not in "".join(deltas) and "sev" not in "".join(deltas)
    deltas, final = stream(gen, {"conversation": {"messages": [{"role": "user", "content": "what color is the owl?"}]}})
    assert "".join(deltas) == final["text"] and final["finish_reason"] == "eos"


def test_cancel_stops_a_generation_in_progress(gen):
    cancel = threading.Event()
    deltas, final = stream(gen, {"text": "one two three", "generation": {"max_new_tokens": 2000}}, cancel,
                           on_delta=lambda d: cancel.set())
    assert final["finish_reason"] == "cancelled" and final["num_tokens"] < 10
    assert "".join(deltas) == final["text"]


def test_a_lora_adapter_is_served_on_its_base_model_unmerged(root, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(root / "tiny-llama")
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"]))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # an adapter that changes what the model says
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    AutoTokenizer.from_pretrained(root / "tiny-llama").save_pretrained(adapter_dir)
    files = sorted(p.name for p in adapter_dir.iterdir())

    served = LoadedGenerator(adapter_dir, {"task": "sft", "adapter": True, "base_model": str(root / "tiny-llama")})
    assert isinstance(served.model, PeftModel)
    assert sorted(p.name for p in adapter_dir.iterdir()) == files  # nothing merged or written on disk
    text = served.predict({"inputs": ["the red"], "generation": {"max_new_tokens": 12}})[0]["generation"]["text"]
    base_text = LoadedGenerator(root / "tiny-llama", {"task": "sft"}).predict(
        {"inputs": ["the red"], "generation": {"max_new_tokens": 12}})[0]["generation"]["text"]
    assert text != base_text
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "tiny-llama"), adapter_dir)
    ids = served.tokenizer("the red", return_tensors="pt")
    out = reference.eval().generate(**ids, max_new_tokens=12, do_sample=False)
    expected = served.decode(served.until_eos(out[0, ids["input_ids"].shape[1]:].tolist()))
    assert text == expected
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 4


def test_a_numerical_failure_of_sampling_is_a_request_error(gen):
    from tunewire_server.validation.generation import GenerationParams

    # Past the request checks (which now refuse such a temperature): the worker must still answer with
    # an error naming the field, never a torch message.
    hopeless = GenerationParams(do_sample=True, temperature=1e-300, max_new_tokens=5)
    with pytest.raises(GenerationRequestError) as info:
        gen._generate([gen.encode_text("the red")], hopeless, [threading.Event()])
    assert info.value.field == "generation.temperature" and "tensor" not in info.value.message
    assert one(gen, "the red", max_new_tokens=3)["num_tokens"] == 3  # the model serves on


def test_an_input_over_the_token_limit_is_refused_naming_it(root):
    bounded = LoadedGenerator(root / "tiny-llama", {"task": "sft"}, max_input_tokens=8)
    with pytest.raises(GenerationRequestError) as info:
        bounded.predict({"inputs": ["the red", "one two three four five six seven eight nine"]})
    assert info.value.field == "inputs[1]" and "at most 8 tokens" in info.value.message
    with pytest.raises(GenerationRequestError) as info:
        bounded.predict({"conversations": [{"messages": [{"role": "user", "content": "what color is the cat?"}]}]})
    assert info.value.field == "conversations[0].messages"


def test_a_seeded_stream_samples_the_same_while_others_sample_in_between(gen):
    """Generations take turns token by token (worker/turns.py); a seeded one keeps its own RNG state."""
    from tunewire_server.worker.inference.turns import Holder, Turns

    seeded = {"text": "the", "generation": {"do_sample": True, "temperature": 2.5, "max_new_tokens": 24,
                                            "seed": "5"}}
    alone = stream(gen, seeded)[1]
    turns = Turns()
    mine, other = Holder(private_rng=True), Holder()
    results = {}

    def run(name, holder, request):
        with turns.hold(holder):
            results[name] = gen.stream(request, threading.Event(), lambda d: None, lambda: turns.pass_turn(holder))

    noisy = {"text": "one", "generation": {"do_sample": True, "temperature": 2.5, "max_new_tokens": 24}}
    threads = [threading.Thread(target=run, args=("seeded", mine, seeded)),
               threading.Thread(target=run, args=("other", other, noisy))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["seeded"] == alone
