"""An SFT job on plain text through the real server: streamed SFT metrics, eval every N steps, then
generation with every parameter, streaming, cancellation, and the same through the async SDK and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tunewire
from tests.e2e.conftest import job_dir, run_job
from tunewire import EvalResult, JobState, TrainLog

SPEC = {
    "display_name": "tiny text sft",
    "base_model": "tiny-llama",
    "sft": {"text_field": "text", "max_length": 32},
    "train_dataset": {"file": {"path": "text.jsonl"}},
    "eval_dataset": {"file": {"path": "text-eval.jsonl"}},
    "hyperparameters": {"max_steps": 4, "learning_rate": 0.001, "per_device_train_batch_size": 8,
                        "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "no"},
}


@pytest.fixture(scope="module")
def text_job(sft_server, sft_client):
    job, events = run_job(sft_client, SPEC)
    assert job.state == JobState.SUCCEEDED, job.error
    return job, events


def test_streamed_metrics_carry_loss_token_accuracy_tokens_and_speed(text_job):
    _, events = text_job
    logs = [e.data for e in events if isinstance(e.data, TrainLog) and e.data.loss is not None]
    assert [x.step for x in logs] == [1, 2, 3, 4]
    for x in logs:
        assert x.mean_token_accuracy is not None and 0 <= x.mean_token_accuracy <= 1
        assert x.num_tokens and x.tokens_per_second and x.tokens_per_second > 0
    assert [x.num_tokens for x in logs] == sorted(x.num_tokens for x in logs)  # tokens seen so far


def test_eval_every_n_steps_reports_loss_and_token_accuracy(text_job):
    job, events = text_job
    evals = [e.data for e in events if isinstance(e.data, EvalResult)]
    assert [x.step for x in evals] == [2, 4]
    assert all({"loss", "mean_token_accuracy"} <= set(x.metrics) for x in evals)
    assert job.metrics["mean_token_accuracy"] == evals[-1].metrics["mean_token_accuracy"]


def test_artifacts_record_the_device_chosen_precision(sft_server, text_job):
    job, _ = text_job
    model = job_dir(sft_server, job.id) / "model"
    meta = json.loads((model / "tunewire.json").read_text())
    assert meta["task"] == "sft" and meta["adapter"] is False and meta["max_length"] == 32
    assert meta["training"]["device"] == "cpu"
    assert meta["training"]["bf16"] is False and meta["training"]["gradient_checkpointing"] is False
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()


def test_predict_generates_with_the_generation_parameters(sft_client, text_job):
    job, _ = text_job
    [greedy] = sft_client.predict(job.id, "one two three", max_new_tokens=20)
    assert greedy.finish_reason == "length" and greedy.num_tokens == 20 and "four" in greedy.text
    [stopped] = sft_client.predict(job.id, "one two three", max_new_tokens=20, stop=["six"])
    assert stopped.finish_reason == "stop" and stopped.text == greedy.text[: greedy.text.index("six")]
    sampled = dict(do_sample=True, temperature=3.0, max_new_tokens=10)
    first = sft_client.predict(job.id, ["the", "the"], seed=11, **sampled)
    assert first == sft_client.predict(job.id, ["the", "the"], seed=11, **sampled)
    assert len({p.text for seed in range(4) for p in sft_client.predict(job.id, "the", seed=seed, **sampled)}) > 1
    [top1] = sft_client.predict(job.id, "one two three", do_sample=True, top_k=1, seed=5, max_new_tokens=20)
    [narrow] = sft_client.predict(job.id, "one two three", do_sample=True, top_p=0.001, seed=5, max_new_tokens=20)
    assert top1.text == narrow.text == greedy.text


def test_bad_generation_parameters_are_invalid_arguments(sft_client, text_job):
    job, _ = text_job
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        sft_client.predict(job.id, "x", temperature=0.5)  # without do_sample
    assert info.value.violations[0].field == "generation.temperature"
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        list(sft_client.predict_stream(job.id, "x", max_new_tokens=0))
    assert info.value.violations[0].field == "generation.max_new_tokens"
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        sft_client.predict(job.id, [[{"role": "user", "content": "hi"}]], generation=None, stop=[""])
    assert info.value.violations[0].field == "generation.stop_sequences[0]"


def test_predict_stream_yields_the_same_text_piece_by_piece(sft_client, text_job):
    job, _ = text_job
    [whole] = sft_client.predict(job.id, "one two three", max_new_tokens=24, stop=["nine"])
    pieces = list(sft_client.predict_stream(job.id, "one two three", max_new_tokens=24, stop=["nine"]))
    assert len(pieces) > 3 and "".join(pieces) == whole.text
    chat = [{"role": "user", "content": "what color is the cat?"}]
    assert "".join(sft_client.predict_stream(job.id, chat)) == sft_client.predict(job.id, [chat])[0].text


def _log_lines(path: Path, needle: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if needle in line] if path.exists() else []


def test_a_client_that_cancels_stops_the_generation(sft_server, sft_client, text_job):
    job, _ = text_job
    log = Path(sft_server.settings.data_dir) / "inference.log"
    before = len(_log_lines(log, "cancelled after"))
    stream = sft_client.predict_stream(job.id, "one two three", max_new_tokens=4000)
    assert next(stream)  # generation is under way...
    stream.close()  # ...and the client goes away
    deadline = time.monotonic() + 20
    while len(_log_lines(log, "cancelled after")) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = _log_lines(log, "cancelled after")
    assert len(lines) == before + 1, "the worker did not report a cancelled stream"
    assert int(lines[-1].rsplit("after ", 1)[1].split()[0]) < 4000
    [after] = sft_client.predict(job.id, "the red", max_new_tokens=5)  # the worker serves the next request
    assert after.num_tokens <= 5


def test_concurrent_predict_calls_are_generated_together_each_with_its_own_answer(sft_server, text_job):
    job, _ = text_job
    log = Path(sft_server.settings.data_dir) / "inference.log"
    before = len(_log_lines(log, "batched"))
    prompts = ["the red", "one two three", "what color", "the fox", "one two", "the cat"] * 2

    async def main():
        async with tunewire.AsyncClient(sft_server.address) as client:
            alone = [(await client.predict(job.id, p, max_new_tokens=12))[0] for p in prompts[:6]]
            together = await asyncio.gather(*(client.predict(job.id, p, max_new_tokens=12) for p in prompts))
            return alone, [answer[0] for answer in together]

    alone, together = asyncio.run(main())
    assert together == alone * 2  # greedy: the same text whether generated alone or beside others
    assert len(_log_lines(log, "batched")) > before, "no two of 12 concurrent calls shared a generate()"


def test_async_client_predicts_and_streams(sft_server, text_job):
    job, _ = text_job

    async def go():
        async with tunewire.AsyncClient(sft_server.address, timeout=60) as c:
            [p] = await c.predict(job.id, "one two three", max_new_tokens=12)
            pieces = [d async for d in c.predict_stream(job.id, "one two three", max_new_tokens=12)]
            return p, pieces

    p, pieces = asyncio.run(go())
    assert "".join(pieces) == p.text and p.num_tokens == 12


def _cli(server, *args):
    env = {**os.environ, "TUNEWIRE_ADDRESS": server.address, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tunewire.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_predict_takes_the_generation_flags(sft_server, sft_client, text_job):
    job, _ = text_job

    def cli_predict(*flags: str) -> dict:
        result = _cli(sft_server, "predict", job.id, *flags, "--json")
        assert result.returncode == 0, result.stderr
        [p] = json.loads(result.stdout)
        return p

    def sdk_predict(text: str, **params) -> dict:
        [p] = sft_client.predict(job.id, text, **params)
        return {"text": p.text, "num_tokens": p.num_tokens, "finish_reason": p.finish_reason}

    # --max-new-tokens bounds the length: 5 tokens, cut for length, what the SDK gets with the same limit
    short = cli_predict("one two three", "--max-new-tokens", "5")
    assert short["num_tokens"] == 5 and short["finish_reason"] == "length"
    assert short == sdk_predict("one two three", max_new_tokens=5)
    # --stop cuts the text where the stop sequence begins (greedy: a prefix of the unstopped text)
    longer = cli_predict("one two three", "--max-new-tokens", "20")
    assert longer["num_tokens"] == 20 and "six" in longer["text"]
    stopped = cli_predict("one two three", "--max-new-tokens", "20", "--stop", "six")
    assert stopped["finish_reason"] == "stop" and stopped["text"] == longer["text"][: longer["text"].index("six")]
    assert stopped == sdk_predict("one two three", max_new_tokens=20, stop=["six"])
    # the sampling flags reach the server: a seeded sample is the SDK's sample with the same settings...
    sampled = ["--do-sample", "--temperature", "3", "--top-k", "50", "--top-p", "0.95", "--max-new-tokens", "10"]
    params = dict(do_sample=True, temperature=3.0, top_k=50, top_p=0.95, max_new_tokens=10)
    by_seed = {seed: cli_predict("the", *sampled, "--seed", str(seed)) for seed in range(4)}
    assert by_seed[3] == sdk_predict("the", seed=3, **params)
    assert by_seed[3] == cli_predict("the", *sampled, "--seed", "3")  # ...reproduced by the same seed...
    assert len({p["text"] for p in by_seed.values()}) > 1  # ...and other seeds sample other texts
    # --top-k 1 leaves one candidate: sampling then gives the greedy text
    assert cli_predict("one two three", "--do-sample", "--temperature", "3", "--top-k", "1", "--seed", "7",
                       "--max-new-tokens", "20")["text"] == longer["text"]
    chat = _cli(sft_server, "predict", job.id, "what color is the cat?", "--chat", "--stream", "--json")
    assert chat.returncode == 0, chat.stderr
    assert json.loads(chat.stdout)["text"] == sft_client.predict(
        job.id, [[{"role": "user", "content": "what color is the cat?"}]])[0].text
