"""Multi-process training (DDP through `accelerate launch`) on the CPU: two ranks over gloo, one tiny BERT.

tests/conftest.py sets TUNEWIRE_TORCH_THREADS=1, so the two ranks share a 2-core machine without thrashing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.support.waiting import wait_for
from tunewire import EvalResult, JobState, TrainLog

SPEC = {
    "base_model": "tiny-bert",
    "classification": {"max_length": 32},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "eval_dataset": {"file": {"path": "eval.jsonl"}},
    "hyperparameters": {
        "max_steps": 12, "learning_rate": 0.005, "per_device_train_batch_size": 4, "lr_scheduler_type": "constant",
        "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 6, "save_strategy": "no",
    },
}


def long_spec() -> dict:
    spec = {**SPEC, "hyperparameters": {**SPEC["hyperparameters"], "max_steps": 100000, "logging_steps": 5}}
    del spec["eval_dataset"]
    spec["hyperparameters"].pop("eval_strategy")
    spec["hyperparameters"].pop("eval_steps")
    return spec


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """The CPU launch (gloo) even on a machine with GPUs: the worker inherits this environment."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def start(server_factory):
    st = server_factory(train_processes=2, warm_worker=False)
    root = st.settings.dataset_root
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(64))
    tiny.write_jsonl(root / "eval.jsonl", tiny.sentiment_rows(16, seed=1))
    return st


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (the worker's launcher and ranks, which leave its process group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_two_cpu_processes_train_once_and_report_once(server_factory):
    st = start(server_factory)
    with tunewire.Client(st.address, timeout=60) as client:
        job = client.submit(SPEC)
        events = list(client.stream_metrics(job.id))
        done = client.get(job.id)
        assert done.state == JobState.SUCCEEDED, done.error

        # Every event once, and each step's metrics once: only rank 0 reports.
        assert [e.seq for e in events] == list(range(1, done.last_seq + 1))
        logs = [e.data for e in events if isinstance(e.data, TrainLog)]
        assert [x.step for x in logs if x.loss is not None] == list(range(1, 13))
        assert [x.step for x in logs if "train_runtime" in x.extra] == [12]  # the run's summary, once
        assert len(logs) == 13 and all(x.max_steps == 12 for x in logs)
        assert all(0.3 < x.loss < 1.2 for x in logs if x.loss is not None)  # a 2-label loss, not scaled by 2
        assert [e.data.step for e in events if isinstance(e.data, EvalResult)] == [6, 12]

        job_dir = Path(st.settings.jobs_dir) / job.id
        log = (job_dir / "worker.log").read_text()
        assert "2 training processes" in log
        for rank in (0, 1):
            assert f"rank {rank} of 2 finished: torch.distributed backend gloo, world size 2" in log
        assert not (job_dir / "ranks").exists()  # the request file (it holds the checkpoint key) is gone
        assert (job_dir / "model" / "tunewire.json").is_file() and not (job_dir / "model.partial").exists()

        predictions = client.predict(job.id, ["great relief works happy", "awful pain terrible nausea"])
        assert len(predictions) == 2
        for p in predictions:
            assert set(p.scores) == {"negative", "positive"} and abs(sum(p.scores.values()) - 1) < 1e-4


def test_cancel_stops_every_rank(server_factory):
    st = start(server_factory)
    with tunewire.Client(st.address, timeout=60) as client:
        job = client.submit(long_spec())
        next(e for e in client.stream_metrics(job.id) if isinstance(e.data, TrainLog))
        job_dir = Path(st.settings.jobs_dir) / job.id
        worker = int((job_dir / "worker.pid").read_text())
        tree = descendants(worker)
        ranks = {int(p.read_text().split()[0]) for p in (job_dir / "ranks").glob("pid.*")}
        assert len(ranks) == 2 and ranks <= tree  # the ranks, and the launcher above them
        t0 = time.monotonic()
        client.cancel(job.id)
        done = client.wait(job.id, raise_on_failure=False)
        assert done.state == JobState.CANCELLED and time.monotonic() - t0 < 10
        wait_for(lambda: not any(alive(pid) for pid in tree | {worker}), timeout=5)
        assert not (job_dir / "model").exists() and not (job_dir / "ranks").exists()
        log = (job_dir / "worker.log").read_text()
        for rank in (0, 1):  # each stopped at a step's end and returned, rather than being killed
            assert f"rank {rank} of 2 finished" in log
        assert "did not stop" not in log
        with pytest.raises(tunewire.FailedPreconditionError):
            client.predict(job.id, ["x"])
