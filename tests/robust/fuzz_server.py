"""The fuzzer's server: `tunewire-server` in its own process, so its memory can be measured, with a finished
classifier and a finished SFT model to predict from, an uploaded dataset, and a queue that never starts
the jobs it accepts. UploadDataset is called like a unary method: one message, the header (a client
stream of one).

A real job holds the one training slot with its worker stopped (SIGSTOP) before it imports anything, so
the scheduler waits on it and every job the fuzzer gets accepted stays QUEUED until it is cancelled (at
once, by the fuzzer). A watchdog samples the control plane's RSS; past a hard ceiling it kills the server
rather than let one request take the machine's memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from pathlib import Path

import grpc

from tests import tiny, tiny_lm
from tests.robust.fuzz_protos import Answer, response_types
from tests.support.procs import status_kb
from tests.support.server_process import ServerProcess
from tests.support.waiting import wait_for
from tunewire.v1 import dataset_pb2, job_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

HARD_CEILING = 2 * 1024**3  # bytes of control-plane RSS at which the watchdog kills the server
STREAMING = {"StreamMetrics", "PredictStream", "DownloadModel"}

CLASSIFICATION_SPEC = {
    "base_model": "tiny-bert", "display_name": "fuzz classification",
    "classification": {"text_field": "text", "label_field": "label", "label_names": ["negative", "positive"],
                       "max_length": 32},
    "train_dataset": {"file": {"path": "train.jsonl", "format": "FILE_FORMAT_JSONL"}, "max_samples": 16},
    "eval_dataset": {"file": {"path": "eval.jsonl"}},
    "hyperparameters": {"max_steps": 1, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                        "learning_rate": 0.001, "logging_steps": 1, "save_strategy": "SAVE_STRATEGY_NO",
                        "eval_strategy": "EVAL_STRATEGY_NO", "lr_scheduler_type": "linear", "seed": 1,
                        "precision": "PRECISION_FP32"},
    "max_retries": 0,
}
INLINE_SPEC = {  # class indices 0/1 inline: a row's label is a number
    "base_model": "tiny-bert", "classification": {},
    "train_dataset": {"inline": {"rows": [{"text": r["text"], "label": i % 2}
                                          for i, r in enumerate(tiny.sentiment_rows(8))]}},
    "hyperparameters": {"max_steps": 1, "per_device_train_batch_size": 4, "save_strategy": "SAVE_STRATEGY_NO"},
}
SFT_SPEC = {
    "base_model": "tiny-llama", "display_name": "fuzz sft",
    "sft": {"text_field": "text", "max_length": 32, "model_dtype": "MODEL_DTYPE_FLOAT32", "neftune_noise_alpha": 1.0},
    "train_dataset": {"file": {"path": "text.jsonl"}},
    "hyperparameters": {"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 0.001,
                        "logging_steps": 1, "save_strategy": "SAVE_STRATEGY_NO", "warmup_ratio": 0.1,
                        "weight_decay": 0.01, "num_train_epochs": 1.0},
    "lora": {"r": 2, "alpha": 4.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
             "bias": "LORA_BIAS_NONE"},
}


def spec(d: dict) -> job_pb2.JobSpec:
    from google.protobuf import json_format

    return json_format.ParseDict(d, job_pb2.JobSpec())


def build_models(root: Path) -> Path:
    tiny.build_tiny_bert(root / "tiny-bert")
    tiny_lm.build_tiny_llama(root / "tiny-llama")
    return root


def write_datasets(root: Path) -> None:
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(16))
    tiny.write_jsonl(root / "eval.jsonl", tiny.sentiment_rows(8, seed=1))
    tiny_lm.write_jsonl(root / "text.jsonl", tiny_lm.text_rows(16))


class RssWatch(threading.Thread):
    """Samples a process's RSS every few milliseconds; kills it past `ceiling`."""

    def __init__(self, pid: int, ceiling: int = HARD_CEILING) -> None:
        super().__init__(daemon=True)
        self.pid, self.ceiling = pid, ceiling
        self.peak = 0
        self.killed = False
        self._stop = threading.Event()

    def rss(self) -> int:
        return (status_kb(self.pid, "VmRSS") or 0) * 1024

    def hwm(self) -> int:
        """The kernel's high-water mark of the process's RSS (catches what sampling misses)."""
        return (status_kb(self.pid, "VmHWM") or 0) * 1024

    def run(self) -> None:
        while not self._stop.wait(0.02):
            rss = self.rss()
            self.peak = max(self.peak, rss)
            if rss > self.ceiling:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop.set()


class FuzzServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        models = build_models(root / "models")
        data = root / "data"
        write_datasets(data / "datasets")
        self.process = ServerProcess(data, models, "--warm-worker", "false").start(60)
        self.watch = RssWatch(self.process.proc.pid)
        self.watch.start()
        self._connect()
        self.blocker_pid: int | None = None
        self.jobs: dict[str, str] = {}
        self.dataset: dataset_pb2.UploadedDataset | None = None

    def _connect(self) -> None:
        self.channel = grpc.insecure_channel(self.process.address, options=[
            ("grpc.max_send_message_length", 128 * 1024**2), ("grpc.max_receive_message_length", 128 * 1024**2)])
        self.stub = pb_grpc.TuningServiceStub(self.channel)

    # --- set-up -------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Train the two models predictions come from, warm the inference worker, then block the queue."""
        for kind, d in (("classification", CLASSIFICATION_SPEC), ("sft", {**SFT_SPEC, "lora": None})):
            d = {k: v for k, v in d.items() if v is not None}
            job = self.stub.SubmitJob(pb.SubmitJobRequest(spec=spec(d)), timeout=60).job
            self.jobs[kind] = job.id
        for kind, job_id in self.jobs.items():
            done = wait_for(lambda j=job_id: self._terminal(j), timeout=300, interval=0.2)
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (kind, done.error)
        self.stub.Predict(pb.PredictRequest(job_id=self.jobs["classification"], inputs=["good"]), timeout=120)
        self.stub.Predict(pb.PredictRequest(job_id=self.jobs["sft"], inputs=["the"],
                                            generation=pb.GenerationParams(max_new_tokens=2)), timeout=120)
        self.dataset = self.upload(self.root / "data" / "datasets" / "train.jsonl")
        blocker = dict(CLASSIFICATION_SPEC, hyperparameters={"max_steps": 100000}, display_name="blocker")
        self.jobs["blocker"] = self.stub.SubmitJob(pb.SubmitJobRequest(spec=spec(blocker)), timeout=60).job.id
        self.blocker_pid = wait_for(self.process.training_workers, timeout=30, interval=0.005)[0]
        os.kill(self.blocker_pid, signal.SIGSTOP)
        state = self.stub.GetJob(pb.GetJobRequest(job_id=self.jobs["blocker"]), timeout=60).job.state
        assert state == job_pb2.JOB_STATE_RUNNING, state

    def upload(self, path: Path) -> dataset_pb2.UploadedDataset:
        """Upload a file in one stream (the fuzzer's UploadDataset and StartUpload name its content)."""
        data = path.read_bytes()
        header = dataset_pb2.UploadHeader(upload_id="fuzz-base", name=path.name, size_bytes=len(data),
                                          sha256=hashlib.sha256(data).hexdigest())
        messages = [pb.UploadDatasetRequest(header=header),
                    pb.UploadDatasetRequest(chunk=dataset_pb2.UploadChunk(offset=0, data=data))]
        return self.stub.UploadDataset(iter(messages), timeout=60).dataset

    def download_manifest(self, job_id: str):
        """The manifest of a job's final model (the first message of its download; the rest is not read)."""
        call = self.stub.DownloadModel(pb.DownloadModelRequest(job_id=job_id), timeout=60)
        try:
            return next(call).manifest
        finally:
            call.cancel()

    def _terminal(self, job_id: str):
        job = self.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=60).job
        return job if job.state >= job_pb2.JOB_STATE_SUCCEEDED else None

    # --- calls --------------------------------------------------------------------------------------

    def call(self, method: str, data: bytes, timeout: float = 30) -> Answer:
        """One call with raw request bytes. A call still open well past its deadline (seen against a server
        busy with a huge Predict) is cancelled by closing the channel, and answers CANCELLED."""
        channel, fired = self.channel, []
        guard = threading.Timer(timeout + 15, lambda: (fired.append(True), channel.close()))
        guard.start()
        try:
            answer = self._call(channel, method, data, timeout)
        finally:
            guard.cancel()
        if fired:
            self._connect()
            answer = Answer(grpc.StatusCode.CANCELLED, "the call hung past its deadline")
        return answer

    def _call(self, channel: grpc.Channel, method: str, data: bytes, timeout: float) -> Answer:
        path = f"/tunewire.v1.TuningService/{method}"
        response = response_types()[method].FromString
        try:
            if method in STREAMING:
                call = channel.unary_stream(path, response_deserializer=response)(data, timeout=timeout)
                for _ in call:
                    pass
                return Answer(grpc.StatusCode.OK, call.details() or "", tuple(call.trailing_metadata() or ()))
            result, call = channel.unary_unary(path, response_deserializer=response).with_call(data, timeout=timeout)
            return Answer(grpc.StatusCode.OK, call.details() or "", tuple(call.trailing_metadata() or ()), result)
        except grpc.RpcError as exc:
            return Answer(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
        except ValueError as exc:  # the channel was closed under the call
            return Answer(grpc.StatusCode.CANCELLED, f"the call hung past its deadline: {exc}")

    def cancel_accepted(self, answer: Answer) -> None:
        """A job the fuzzer got accepted never runs: it is cancelled while it waits behind the blocker."""
        if answer.response is not None and isinstance(answer.response, pb.SubmitJobResponse):
            job = answer.response.job
            if job.id not in self.jobs.values():
                self.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=30)

    def queue_is_held(self) -> bool:
        running = self.stub.ListJobs(pb.ListJobsRequest(states=[job_pb2.JOB_STATE_RUNNING]), timeout=30).jobs
        return [j.id for j in running] == [self.jobs["blocker"]]

    def close(self) -> None:
        self.watch.stop()
        if self.blocker_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.blocker_pid, signal.SIGKILL)
        self.channel.close()
        self.process.stop()

    def peak_rss(self) -> int:
        return max(self.watch.peak, self.watch.hwm())

    def alive(self) -> bool:
        return self.process.proc.poll() is None

