"""EstimateJob through a real server and the real SDK: counts exact against the data, steps exact, fits on
the CPU; a batch too large for the (capped) device memory gets a batch size that fits; a spec that does not
validate is refused naming the field, before any worker runs."""

from __future__ import annotations

import math

import pytest
from transformers import AutoTokenizer

import tunewire
from tests import tiny, tiny_lm
from tunewire_server.estimates import memory


@pytest.fixture
def lm_root(models_root):
    return tiny_lm.ensure_built(models_root)


@pytest.fixture
def server(server_factory):
    return server_factory(warm_worker=False)  # no job runs here: no training worker to warm


@pytest.fixture
def client(server):
    with tunewire.Client(server.address, timeout=300) as c:
        yield c


def _write_data(root):
    cls_rows = tiny.sentiment_rows(18)
    sft_rows = tiny_lm.text_rows(30)
    tiny.write_jsonl(root / "train.jsonl", cls_rows)
    tiny.write_jsonl(root / "eval.jsonl", tiny.sentiment_rows(5, seed=3))
    tiny_lm.write_jsonl(root / "text.jsonl", sft_rows)
    return cls_rows, sft_rows


def test_estimates_a_classification_and_an_sft_job_with_exact_counts(server, client, lm_root):
    cls_rows, sft_rows = _write_data(server.settings.dataset_root)
    spec = {"base_model": "tiny-bert", "classification": {"max_length": 12},
            "train_dataset": {"file": {"path": "train.jsonl"}}, "eval_dataset": {"file": {"path": "eval.jsonl"}},
            "hyperparameters": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                                "num_train_epochs": 3}}
    est = client.estimate(spec, timeout=300)
    tok = AutoTokenizer.from_pretrained(lm_root / "tiny-bert")
    lengths = sorted(len(tok(r["text"])["input_ids"]) for r in cls_rows)
    assert (est.train_rows, est.eval_rows) == (18, 5)
    assert est.train_tokens == sum(lengths)
    assert est.truncated_rows == sum(n > 12 for n in lengths) and est.max_length == 12
    assert est.token_length_max == lengths[-1] and est.token_length_p50 == lengths[math.ceil(0.5 * 18) - 1]
    assert est.steps_per_epoch == 3 and est.total_steps == 9  # 5 batches of 4 -> 3 steps of 2 batches
    assert est.fits and est.device == "cpu" and est.device_memory_bytes > est.memory.total_bytes > 0
    assert est.memory.trainable_parameters == est.memory.total_parameters > 0
    assert est.estimated_seconds > 0 and est.time_basis.startswith("probe:")
    assert list(client.list_jobs()) == []  # nothing was queued

    sft = {"base_model": "tiny-llama", "sft": {"text_field": "text", "max_length": 16},
           "train_dataset": {"file": {"path": "text.jsonl"}},
           "hyperparameters": {"per_device_train_batch_size": 8, "max_steps": 7},
           "lora": {"r": 4}}
    est = client.estimate(sft, timeout=300)
    lm_tok = AutoTokenizer.from_pretrained(lm_root / "tiny-llama")
    # TRL appends the end-of-sequence token to each text
    lengths = [len(lm_tok(r["text"])["input_ids"]) + 1 for r in sft_rows]
    assert est.train_rows == 30 and est.train_tokens == sum(lengths)
    assert est.truncated_rows == sum(n > 16 for n in lengths) and est.token_length_max == max(lengths)
    assert est.steps_per_epoch == 4 and est.total_steps == 7
    assert 0 < est.memory.trainable_parameters < est.memory.total_parameters  # LoRA trains its adapter only
    assert est.fits and est.estimated_seconds > 0
    assert any("longer than max_length" in n for n in est.notes) == (est.truncated_rows > 0)


def test_a_batch_too_large_for_the_device_gets_a_batch_size_that_fits(server_factory, lm_root):
    cap_mb = ((memory.OVERHEAD_FIXED["cpu"] + memory.OVERHEAD_SFT) >> 20) + 48
    server = server_factory(estimate_memory_mb=cap_mb, warm_worker=False)
    _write_data(server.settings.dataset_root)
    spec = {"base_model": "tiny-llama", "sft": {"text_field": "text", "max_length": 64},
            "train_dataset": {"file": {"path": "text.jsonl"}},
            "hyperparameters": {"per_device_train_batch_size": 1024, "max_steps": 2}}
    with tunewire.Client(server.address, timeout=300) as client:
        est = client.estimate(spec)
        assert not est.fits and est.device_memory_bytes == cap_mb * 2**20
        assert 0 < est.suggested_batch_size < 1024
        assert any("more than" in n for n in est.notes)
        spec["hyperparameters"]["per_device_train_batch_size"] = est.suggested_batch_size
        again = client.estimate(spec)
        assert again.fits and again.memory.total_bytes <= again.device_memory_bytes


def test_a_spec_that_does_not_validate_is_refused_naming_the_field(server, client):
    _write_data(server.settings.dataset_root)
    bad = {"base_model": "tiny-bert", "classification": {}, "train_dataset": {"file": {"path": "missing.jsonl"}},
           "hyperparameters": {"learning_rate": -1}}
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.estimate(bad)
    fields = {v.field for v in info.value.violations}
    assert {"hyperparameters.learning_rate", "train_dataset.file.path"} <= fields


def test_the_cli_prints_an_estimate_and_submit_dry_run_submits_nothing(server, client, tmp_path, capsys):
    import json

    from tunewire import cli

    _write_data(server.settings.dataset_root)
    job = tmp_path / "job.yaml"
    job.write_text("base_model: tiny-bert\nclassification: {max_length: 12}\n"
                   "train_dataset: {file: {path: train.jsonl}}\n"
                   "hyperparameters: {per_device_train_batch_size: 4, max_steps: 5}\n")
    assert cli.main(["--address", server.address, "estimate", str(job)]) == cli.EXIT_OK
    table = capsys.readouterr().out
    assert "18 train, 0 eval" in table and "in all" in table and "fits" in table and "yes" in table
    assert cli.main(["--address", server.address, "submit", "--dry-run", "--json", str(job)]) == cli.EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["total_steps"] == 5 and answer["train_rows"] == 18 and answer["fits"] is True
    assert list(client.list_jobs()) == []  # a dry run submits nothing
    job.write_text(job.read_text().replace("per_device_train_batch_size: 4", "per_device_train_batch_size: 0"))
    assert cli.main(["--address", server.address, "estimate", str(job)]) == cli.EXIT_ERROR
    assert "per_device_train_batch_size" in capsys.readouterr().err
