"""openai_api.chat: OpenAI sampling parameters as GenerationParams, messages and prompts, usage."""

from __future__ import annotations

import pytest

from tunewire_server.errors import InvalidSpec
from tunewire_server.openai_api.chat import conversation, generation, prompt_of, usage
from tunewire_server.validation.generation import GenerationParams


def test_temperature_zero_is_greedy_and_the_default_samples():
    assert generation({"temperature": 0, "top_p": 0.5, "max_tokens": 7}) == {"max_new_tokens": 7}
    assert generation({}) == {"do_sample": True, "temperature": 1.0}
    sampled = generation({"temperature": 0.7, "top_p": 0.9, "stop": "\n", "seed": 3, "max_completion_tokens": 4})
    assert sampled == {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "stop_sequences": ["\n"], "seed": 3,
                       "max_new_tokens": 4}
    GenerationParams.from_request(sampled)  # what the inference worker accepts


@pytest.mark.parametrize(("body", "param"), [({"n": 2}, "n"), ({"temperature": -1}, "temperature"),
                                             ({"max_tokens": "5"}, "max_tokens"), ({"stop": [1]}, "stop"),
                                             ({"seed": 1.5}, "seed"), ({"logprobs": True}, "logprobs")])
def test_unsupported_or_bad_parameters_are_refused(body, param):
    with pytest.raises(InvalidSpec) as refused:
        generation(body)
    assert refused.value.violations[0].field == param


def test_messages_take_text_parts_and_developer_is_system():
    convo = conversation({"messages": [{"role": "developer", "content": "be brief"},
                                       {"role": "user", "content": [{"type": "text", "text": "hi "},
                                                                    {"type": "text", "text": "there"}]}]})
    assert convo == {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]}
    with pytest.raises(InvalidSpec):
        conversation({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
    with pytest.raises(InvalidSpec):
        conversation({"messages": []})


def test_prompts_and_usage():
    assert prompt_of({"prompt": ["one"]}) == "one"
    with pytest.raises(InvalidSpec):
        prompt_of({"prompt": ["one", "two"]})
    assert usage({"prompt_tokens": 5, "num_tokens": 3}) == {"prompt_tokens": 5, "completion_tokens": 3,
                                                            "total_tokens": 8}
