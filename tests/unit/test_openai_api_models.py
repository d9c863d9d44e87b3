"""openai_api.models: fine-tuned model names and their resolution back to a job; base models listed."""

from __future__ import annotations

import pytest

from tunewire_server.errors import NotFound
from tunewire_server.openai_api.models import base_models, fine_tuned_name, job_of_model


def test_a_fine_tuned_name_resolves_back_to_its_job():
    name = fine_tuned_name({"base_model": "org/base", "display_name": "mine"}, "job-abc")
    assert name == "ft:org/base:mine:job-abc" and job_of_model(name) == "job-abc"
    assert job_of_model(fine_tuned_name({"base_model": "b"}, "job-1")) == "job-1"  # no suffix
    assert job_of_model("job-xyz") == "job-xyz"  # a bare job id works too


@pytest.mark.parametrize("model", ["", "gpt-4o mini", "ft:b:s:job-1:ckpt-step-4", "ft:b:s:bad id!"])
def test_other_names_are_not_found(model):
    with pytest.raises(NotFound):
        job_of_model(model)


def test_base_models_are_folders_with_a_config(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text("{}")
    (tmp_path / "b").mkdir()
    assert [name for name, _ in base_models(tmp_path)] == ["a"]
    assert base_models(tmp_path / "missing") == []
