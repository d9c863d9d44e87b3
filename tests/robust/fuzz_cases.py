"""The valid requests the fuzzer mutates, the in-range values each must accept, and one example's run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from google.protobuf.message import Message
from hypothesis import strategies as st

from tests.robust.fuzz_protos import Mutation, apply, check, expectation
from tests.robust.fuzz_server import CLASSIFICATION_SPEC, INLINE_SPEC, SFT_SPEC, FuzzServer, spec
from tunewire.v1 import dataset_pb2, job_pb2
from tunewire.v1 import tuning_service_pb2 as pb

RSS_BOUND = 400 * 1024**2  # the control plane's peak RSS across the whole fuzz run, in bytes
NAMES = "abcdefXYZ0123456789-_. é"

SUBMIT_HARMLESS = {
    "request_id": st.text(alphabet="abcdef0123456789-", min_size=1, max_size=64),
    "spec.display_name": st.text(alphabet=NAMES, max_size=64),
    "spec.max_retries": st.integers(0, 3),
    "spec.train_dataset.max_samples": st.integers(0, 16),
    "spec.hyperparameters.seed": st.integers(0, 2**31 - 1),
    "spec.hyperparameters.learning_rate": st.floats(1e-6, 1e-2),
    "spec.hyperparameters.warmup_ratio": st.floats(0, 0.5),
    "spec.hyperparameters.weight_decay": st.floats(0, 0.1),
    "spec.hyperparameters.logging_steps": st.integers(1, 100),
    "spec.hyperparameters.max_steps": st.integers(1, 10),
    "spec.hyperparameters.per_device_train_batch_size": st.integers(1, 16),
    "spec.hyperparameters.lr_scheduler_type": st.sampled_from(["linear", "cosine", "constant"]),
    "spec.hyperparameters.precision": st.sampled_from([job_pb2.PRECISION_UNSPECIFIED, job_pb2.PRECISION_FP32]),
    "spec.classification.max_length": st.integers(8, 64),
    "spec.sft.max_length": st.integers(8, 64),
    "spec.sft.neftune_noise_alpha": st.floats(0, 10),
    "spec.lora.r": st.integers(1, 8),
    "spec.lora.alpha": st.floats(0.5, 32),
    "spec.lora.dropout": st.floats(0, 0.5),
}
WORDS = st.text(alphabet="abcdefghij ", min_size=1, max_size=20).filter(str.strip)
PREDICT_HARMLESS = {
    "inputs": st.lists(WORDS, min_size=1, max_size=4),
    "text": WORDS,
    "generation.max_new_tokens": st.integers(1, 8),
    "generation.stop_sequences": st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=5), max_size=3),
}


@dataclass
class Case:
    """One valid request of one method, and how answers to its mutations are judged."""

    method: str
    base: Message
    prefix: str = ""  # left out of violation names: SubmitJob's violations name JobSpec fields
    harmless: dict = field(default_factory=dict)
    undeterminable: tuple[str, ...] = ()  # slot paths whose right answer depends on more than the field
    focus: tuple[str, ...] = ()  # slot paths that get half of the examples

    def determinable(self, mutation: Mutation) -> bool:
        return not mutation.slot.path.startswith(self.undeterminable) if self.undeterminable else True


def cases(server: FuzzServer) -> dict[str, Case]:
    cls, sft = server.jobs["classification"], server.jobs["sft"]
    generation = pb.GenerationParams(max_new_tokens=4)
    stored = server.dataset  # a header of content the server stores: the answer is that dataset, OK
    header = dataset_pb2.UploadHeader(upload_id="fuzz-1", name=stored.name, size_bytes=stored.size_bytes,
                                      sha256=stored.sha256)
    upload_harmless = {"header.upload_id": st.text(alphabet="abcXYZ019-_.", min_size=1, max_size=128).filter(
                           lambda s: s.strip(".")),
                       "header.name": st.text(alphabet=NAMES.replace(" ", ""), min_size=1, max_size=64).map(
                           lambda s: "x" + s + ".jsonl")}
    # a download of the classifier's config.json alone: every other file is named as held whole
    files = server.download_manifest(cls).files
    held = {f.path: f.size_bytes for f in files if f.path != "config.json"}
    return {
        "ListCheckpoints": Case("ListCheckpoints", pb.ListCheckpointsRequest(job_id=cls)),
        "DownloadModel": Case("DownloadModel", pb.DownloadModelRequest(job_id=cls, offsets=held, chunk_size=4096), "",
                              {"chunk_size": st.integers(256, 4 << 20)}),
        "DeleteJob": Case("DeleteJob", pb.DeleteJobRequest(job_id="job-00000000fuzz0000")),
        "StartUpload": Case("StartUpload", pb.StartUploadRequest(header=header), "", upload_harmless),
        "UploadDataset": Case("UploadDataset", pb.UploadDatasetRequest(header=header), "", upload_harmless),
        "ListDatasets": Case("ListDatasets", pb.ListDatasetsRequest(page_size=10), "",
                             {"page_size": st.integers(1, 500)}),
        "GetDataset": Case("GetDataset", pb.GetDatasetRequest(dataset_id=stored.id), ""),
        "DeleteDataset": Case("DeleteDataset", pb.DeleteDatasetRequest(dataset_id="ds-" + "0" * 64), ""),
        "SubmitJob/classification": Case("SubmitJob", pb.SubmitJobRequest(spec=spec(CLASSIFICATION_SPEC)), "spec.",
                                         SUBMIT_HARMLESS),
        "SubmitJob/inline": Case("SubmitJob", pb.SubmitJobRequest(spec=spec(INLINE_SPEC)), "spec.", SUBMIT_HARMLESS,
                                 focus=("spec.train_dataset.inline",)),
        "SubmitJob/sft": Case("SubmitJob", pb.SubmitJobRequest(spec=spec(SFT_SPEC)), "spec.", SUBMIT_HARMLESS),
        "GetJob": Case("GetJob", pb.GetJobRequest(job_id=cls)),
        "ListJobs": Case("ListJobs", pb.ListJobsRequest(states=[job_pb2.JOB_STATE_SUCCEEDED], page_size=10), "",
                         {"page_size": st.integers(1, 500),
                          "states": st.lists(st.integers(1, 6), min_size=1, max_size=6)}),
        "CancelJob": Case("CancelJob", pb.CancelJobRequest(job_id=cls)),
        "StreamMetrics": Case("StreamMetrics", pb.StreamMetricsRequest(job_id=cls, max_batch=4), "",
                              {"after_seq": st.integers(0, 1000), "max_batch": st.integers(0, 2**32 - 1)}),
        # a classifier has no use for generation settings: whether it refuses them is not determinable
        "Predict/classification": Case("Predict", pb.PredictRequest(job_id=cls, inputs=["good"]), "",
                                       {"inputs": PREDICT_HARMLESS["inputs"]}, ("generation",)),
        "Predict/sft": Case("Predict", pb.PredictRequest(job_id=sft, inputs=["the"], generation=generation), "",
                            PREDICT_HARMLESS),
        "PredictStream/sft": Case("PredictStream", pb.PredictStreamRequest(job_id=sft, text="the",
                                                                           generation=generation), "",
                                  PREDICT_HARMLESS),
    }


@dataclass
class Outcome:
    problems: list[str]
    code: str
    seconds: float
    rss: int  # the control plane's peak RSS so far
    rss_now: int


def run_example(server: FuzzServer, case: Case, mutation: Mutation) -> Outcome:
    """Send one mutated request; return what is wrong with the answer (and the server's state after it)."""
    data = apply(case.base, mutation)
    t0 = time.monotonic()
    answer = server.call(case.method, data)
    seconds = time.monotonic() - t0
    expected = expectation(mutation, case.prefix, case.determinable(mutation))
    problems = check(answer, mutation, expected, case.prefix)
    if answer.code.name == "OK":
        server.cancel_accepted(answer)
    if not server.alive():
        problems.append("the server died" + (" (RSS over the watchdog's ceiling)" if server.watch.killed else ""))
    elif server.peak_rss() >= RSS_BOUND:
        problems.append(f"control-plane peak RSS {server.peak_rss() >> 20} MiB")
    return Outcome(problems, answer.code.name, seconds, server.peak_rss(), server.watch.rss())
