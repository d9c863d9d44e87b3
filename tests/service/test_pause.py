"""PauseJob and ResumeJob through a real server on 127.0.0.1:0, the real SDK (sync and asyncio) and the CLI:
what a queued job does, the idempotent calls, and the status codes of the refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

import tunewire
from tests import tiny
from tests.support.specs import tiny_classification
from tunewire import JobState


@pytest.fixture
def data(server):
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))


def cli(server, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNEWIRE_ADDRESS": server.address}
    return subprocess.run([sys.executable, "-m", "tunewire.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_pause_and_resume_of_queued_jobs_and_the_refusals(server, client, data):
    running = client.submit(tiny_classification(max_steps=100000, logging_steps=1, save_strategy="no"))
    waiting = client.submit(tiny_classification(max_steps=2, save_strategy="no"))
    held = client.submit(tiny_classification(max_steps=2, save_strategy="no", seed=3))
    assert waiting.state == held.state == JobState.QUEUED

    assert client.pause(waiting.id).state == JobState.PAUSED
    assert client.pause(waiting.id).state == JobState.PAUSED  # again: not an error
    assert client.resume(waiting.id).state == JobState.QUEUED
    assert client.resume(waiting.id).state == JobState.QUEUED  # again: not an error

    paused = cli(server, "pause", held.id)
    assert paused.returncode == 0 and f"{held.id}: PAUSED" in paused.stdout, paused.stderr
    resumed = cli(server, "resume", held.id)
    assert resumed.returncode == 0 and f"{held.id}: QUEUED" in resumed.stdout, resumed.stderr
    assert client.pause(held.id).state == JobState.PAUSED

    async def through_asyncio():
        async with tunewire.AsyncClient(server.address) as aio:
            assert (await aio.resume(held.id)).state == JobState.QUEUED
            assert (await aio.pause(held.id)).state == JobState.PAUSED

    asyncio.run(through_asyncio())
    assert client.cancel(held.id).state == JobState.CANCELLED  # a paused job is cancelled at once
    with pytest.raises(tunewire.FailedPreconditionError, match="CANCELLED"):
        client.pause(held.id)
    with pytest.raises(tunewire.FailedPreconditionError, match="CANCELLED"):
        client.resume(held.id)
    for call in (client.pause, client.resume):
        with pytest.raises(tunewire.NotFoundError):
            call("job-nope")
        with pytest.raises(tunewire.InvalidArgumentError):
            call("")
    refused = cli(server, "resume", held.id)
    assert refused.returncode != 0 and "CANCELLED" in refused.stderr

    client.cancel(running.id)
    assert client.wait(waiting.id).state == JobState.SUCCEEDED  # the resumed job ran
    states = [e.data.state for e in client.stream_metrics(waiting.id) if isinstance(e.data, tunewire.StateChange)]
    assert states == [JobState.QUEUED, JobState.PAUSED, JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
