"""Fixtures for the SFT end-to-end tests: tiny causal LMs under the model root and one shared server."""

from __future__ import annotations

from pathlib import Path

import pytest

import tunewire
from tests import tiny_lm
from tests.support.server_thread import ServerThread, make_settings


@pytest.fixture(scope="session")
def lm_root(models_root) -> Path:
    """The session's model root, with the tiny Llama/GPT-2/OPT models and a chat-template source added."""
    return tiny_lm.ensure_built(models_root)


@pytest.fixture(scope="session")
def sft_server(tmp_path_factory, lm_root):
    """One server for all SFT e2e tests: its warm training worker and inference worker are shared."""
    server = ServerThread(make_settings(tmp_path_factory.mktemp("sft-e2e"), lm_root)).start()
    root = server.settings.dataset_root
    root.mkdir(parents=True, exist_ok=True)
    tiny_lm.write_jsonl(root / "text.jsonl", tiny_lm.text_rows(48))
    tiny_lm.write_jsonl(root / "text-eval.jsonl", tiny_lm.text_rows(12, seed=1))
    tiny_lm.write_jsonl(root / "qa.jsonl", tiny_lm.qa_rows(48))
    tiny_lm.write_jsonl(root / "chat.jsonl", tiny_lm.chat_rows(32))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sft_client(sft_server):
    with tunewire.Client(sft_server.address, timeout=120) as c:
        yield c


def run_job(client: tunewire.Client, spec: dict) -> tuple[tunewire.Job, list[tunewire.JobEvent]]:
    """Submit, follow to the end, and return the final job with every event."""
    job = client.submit(spec)
    events = list(client.stream_metrics(job.id))
    return client.get(job.id), events


def job_dir(server, job_id: str) -> Path:
    return Path(server.settings.jobs_dir) / job_id
