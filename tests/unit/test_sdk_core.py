"""The logic both SDK clients share (tunewire._core), driven directly: no server, no channel."""

from __future__ import annotations

import hashlib

import grpc
import pytest

import tunewire
from tunewire import _core as core
from tunewire import _requests as req
from tunewire.v1 import job_pb2, model_pb2
from tunewire.v1 import tuning_service_pb2 as pb


def event(seq: int, state: int | None = None) -> job_pb2.JobEvent:
    msg = job_pb2.JobEvent(job_id="job-1", seq=seq)
    msg.time.FromSeconds(seq)
    if state is None:
        msg.train_log.step = seq
    else:
        msg.state_change.state = state
    return msg


def batched(*seqs: int) -> pb.StreamMetricsResponse:
    return pb.StreamMetricsResponse(events=[event(s) for s in seqs])


def single(seq: int) -> pb.StreamMetricsResponse:
    return pb.StreamMetricsResponse(event=event(seq))


def job(job_id: str, state: int = job_pb2.JOB_STATE_SUCCEEDED) -> job_pb2.Job:
    return job_pb2.Job(id=job_id, state=state)


# --- StreamResumer ---------------------------------------------------------------------------------------

def test_the_resumer_reconnects_after_the_last_delivered_seq_across_a_disconnect():
    resumer = core.StreamResumer("job-1", after_seq=2)
    first = resumer.request()
    assert (first.job_id, first.after_seq, first.max_batch) == ("job-1", 2, req.STREAM_BATCH)
    delivered = [e.seq for e in resumer.events(batched(3, 4))] + [e.seq for e in resumer.events(single(5))]
    assert delivered == [3, 4, 5]
    # the connection drops: wait the first delay, then ask for what comes after seq 5
    assert resumer.retry_delay(grpc.StatusCode.UNAVAILABLE) == req.RECONNECT_DELAYS[0]
    assert resumer.request().after_seq == 5
    assert [e.seq for e in resumer.events(batched(6))] == [6]
    assert resumer.request().after_seq == 6


def test_an_event_counts_as_delivered_only_when_handed_out():
    resumer = core.StreamResumer("job-1")
    events = resumer.events(batched(1, 2, 3))
    next(events)
    assert resumer.request().after_seq == 1  # 2 and 3 were received but never handed out
    assert [e.seq for e in resumer.events(pb.StreamMetricsResponse())] == []  # a response without events


def test_the_resumer_gives_up_after_every_delay_in_a_row_and_a_delivered_event_resets_the_count():
    resumer = core.StreamResumer("job-1", delays=(0.1, 0.2))
    assert [resumer.retry_delay(grpc.StatusCode.UNAVAILABLE) for _ in range(3)] == [0.1, 0.2, None]
    list(resumer.events(single(1)))
    assert resumer.retry_delay(grpc.StatusCode.UNAVAILABLE) == 0.1


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.CANCELLED, grpc.StatusCode.PERMISSION_DENIED, None])
def test_only_unavailable_is_retried(code):
    assert core.StreamResumer("job-1").retry_delay(code) is None


def test_without_reconnect_the_resumer_never_retries():
    assert core.StreamResumer("job-1", reconnect=False).retry_delay(grpc.StatusCode.UNAVAILABLE) is None


# --- Pager -----------------------------------------------------------------------------------------------

def walk(pager: core.Pager, pages: dict[str, pb.ListJobsResponse]) -> tuple[list[str], list[str]]:
    """Drive the pager as a client does; return the job ids handed out and the page tokens asked for."""
    ids, asked = [], []
    while (call := pager.next_call()) is not None:
        assert call.method == "ListJobs" and call.convert(pages["x"]) is pages["x"]
        asked.append(call.request.page_token)
        ids += [j.id for j in pager.take(pages[call.request.page_token])]
    return ids, asked


PAGES = {
    "": pb.ListJobsResponse(jobs=[job("j5"), job("j4")], next_page_token="t2"),
    "t2": pb.ListJobsResponse(jobs=[job("j3"), job("j2")], next_page_token="t3"),
    "t3": pb.ListJobsResponse(jobs=[job("j1")]),
    "x": pb.ListJobsResponse(),
}


def test_the_pager_follows_page_tokens_until_a_page_has_none():
    assert walk(core.Pager(None, 2, None), PAGES) == (["j5", "j4", "j3", "j2", "j1"], ["", "t2", "t3"])


@pytest.mark.parametrize("limit, ids, asked", [
    (3, ["j5", "j4", "j3"], ["", "t2"]),
    (2, ["j5", "j4"], [""]),  # the limit reached at a page's end: no further page is fetched
    (0, [], []),
    (99, ["j5", "j4", "j3", "j2", "j1"], ["", "t2", "t3"]),
])
def test_the_pager_stops_at_the_limit(limit, ids, asked):
    assert walk(core.Pager(None, 2, limit), PAGES) == (ids, asked)


def test_the_pager_request_carries_states_and_page_size():
    pager = core.Pager(iter(["RUNNING", tunewire.JobState.QUEUED]), 7, None)  # an iterator: read once
    first = pager.next_call().request
    assert list(first.states) == [job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_QUEUED] and first.page_size == 7
    pager.take(pb.ListJobsResponse(next_page_token="t"))
    second = pager.next_call().request
    assert list(second.states) == list(first.states) and second.page_token == "t"
    with pytest.raises(ValueError):
        core.Pager(["SLEEPING"], 7, None).next_call()


# --- Waiter ----------------------------------------------------------------------------------------------

def test_the_waiter_stops_at_a_terminal_state_change_only():
    finished = core.Waiter().finished
    assert not finished(tunewire.JobEvent.from_proto(event(1)))
    assert not finished(tunewire.JobEvent.from_proto(event(2, job_pb2.JOB_STATE_RUNNING)))
    for state in (job_pb2.JOB_STATE_PAUSING, job_pb2.JOB_STATE_PAUSED):  # not the end: it may be resumed
        assert not finished(tunewire.JobEvent.from_proto(event(2, state)))
    for state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED):
        assert finished(tunewire.JobEvent.from_proto(event(3, state)))


def test_the_waiter_returns_a_paused_job_only_when_asked_to():
    waiter = core.Waiter(return_when_paused=True)
    assert waiter.finished(tunewire.JobEvent.from_proto(event(2, job_pb2.JOB_STATE_PAUSED)))
    assert not waiter.finished(tunewire.JobEvent.from_proto(event(2, job_pb2.JOB_STATE_PAUSING)))
    paused = tunewire.Job.from_proto(job("j1", job_pb2.JOB_STATE_PAUSED))
    assert waiter.result(paused) is paused  # not a failure
    with pytest.raises(tunewire.JobFailedError):
        core.Waiter().result(paused)  # the stream ended early, and the job had not ended


@pytest.mark.parametrize("state", [job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED])
def test_the_waiter_raises_unless_the_job_succeeded(state):
    ended = tunewire.Job.from_proto(job("j1", state))
    with pytest.raises(tunewire.JobFailedError) as info:
        core.Waiter().result(ended)
    assert info.value.job is ended
    assert core.Waiter(raise_on_failure=False).result(ended) is ended
    succeeded = tunewire.Job.from_proto(job("j2"))
    assert core.Waiter().result(succeeded) is succeeded


# --- unary calls -----------------------------------------------------------------------------------------

def test_unary_calls_build_their_request_and_convert_their_response():
    submit = core.submit({"base_model": "m", "sft": {}}, "key-1")
    assert submit.method == "SubmitJob" and submit.request.spec.base_model == "m"
    assert submit.request.request_id == "key-1"
    assert submit.convert(pb.SubmitJobResponse(job=job("j1"))).id == "j1"
    for call, method in ((core.get("j1"), "GetJob"), (core.cancel("j1"), "CancelJob")):
        assert call.method == method and call.request.job_id == "j1"
    with pytest.raises(tunewire.SpecError):
        core.submit({"base_model": "m", "epochs": 3}, "")


def test_predict_builds_inputs_conversations_and_generation_settings():
    call = core.predict("j1", ["text", [{"role": "user", "content": "hi"}]], None, {"max_new_tokens": 5, "stop": ["."]})
    assert call.method == "Predict" and list(call.request.inputs) == ["text"]
    assert call.request.conversations[0].messages[0].content == "hi"
    assert call.request.generation.max_new_tokens == 5 and list(call.request.generation.stop_sequences) == ["."]
    assert not core.predict("j1", "one", None, {}).request.HasField("generation")
    response = pb.PredictResponse(predictions=[pb.Prediction(generation=pb.Generation(text="ok", num_tokens=1))])
    assert call.convert(response) == [tunewire.Generation("ok", 1, "")]
    assert core.predict_stream_request("j1", "a prompt", {}).text == "a prompt"
    chat = core.predict_stream_request("j1", [{"role": "user", "content": "hi"}], {"seed": 3})
    assert chat.conversation.messages[0].role == "user" and chat.generation.seed == 3


# --- uploads ---------------------------------------------------------------------------------------------

def test_an_upload_hashes_the_file_and_sends_it_from_an_offset(tmp_path):
    import hashlib

    from tunewire.v1 import dataset_pb2

    path = tmp_path / "train.csv"
    path.write_bytes(b"x" * 2500)
    seen = []
    upload = core.Upload(path, progress=lambda done, total: seen.append((done, total)), chunk_size=1000,
                         upload_id="up-1", label_column="label")
    head = upload.header
    assert (head.upload_id, head.name, head.format, head.size_bytes, head.sha256, head.label_column) == (
        "up-1", "train.csv", job_pb2.FILE_FORMAT_UNSPECIFIED, 2500, hashlib.sha256(b"x" * 2500).hexdigest(), "label")
    start = upload.start()
    assert start.method == "StartUpload" and start.request.header == head
    assert start.convert(pb.StartUploadResponse(offset=1200)) == (1200, None)
    messages = list(upload.requests(1200))
    assert messages[0].header == head
    assert [(m.chunk.offset, len(m.chunk.data)) for m in messages[1:]] == [(1200, 1000), (2200, 300)]
    assert upload.sent == 1300 and seen == [(1200, 2500), (2200, 2500), (2500, 2500)]
    stored = pb.StartUploadResponse(offset=2500, dataset=dataset_pb2.UploadedDataset(id="ds-1", size_bytes=2500))
    assert start.convert(stored)[1].id == "ds-1" and seen[-1] == (2500, 2500)


@pytest.mark.parametrize("value, expected", [
    (None, job_pb2.FILE_FORMAT_UNSPECIFIED), ("jsonl", job_pb2.FILE_FORMAT_JSONL), ("CSV", job_pb2.FILE_FORMAT_CSV),
    (".tsv", job_pb2.FILE_FORMAT_TSV), ("FILE_FORMAT_PARQUET", job_pb2.FILE_FORMAT_PARQUET), (2, 2)])
def test_formats_are_named_short_or_in_full(value, expected):
    assert core.file_format(value) == expected


def test_an_upload_retries_unavailable_until_it_stops_making_progress(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"{}\n" * 10)
    upload = core.Upload(path, delays=(0.1, 0.2), retries=3)
    assert upload.retry_delay(grpc.StatusCode.INVALID_ARGUMENT) is None
    assert [upload.retry_delay(grpc.StatusCode.UNAVAILABLE) for _ in range(4)] == [0.1, 0.2, 0.2, None]
    upload.start().convert(pb.StartUploadResponse(offset=10))  # the server holds more than before: progress
    assert upload.retry_delay(grpc.StatusCode.UNAVAILABLE) == 0.1


def test_the_dataset_pager_follows_tokens_and_stops_at_the_limit():
    from tunewire.v1 import dataset_pb2

    pager = core.DatasetPager(page_size=2, limit=3)
    first = pager.next_call()
    assert first.method == "ListDatasets" and first.request.page_size == 2 and first.request.page_token == ""
    page = pb.ListDatasetsResponse(datasets=[dataset_pb2.UploadedDataset(id=f"ds-{i}") for i in (1, 2)],
                                   next_page_token="t")
    assert [d.id for d in pager.take(page)] == ["ds-1", "ds-2"]
    assert pager.next_call().request.page_token == "t"
    assert [d.id for d in pager.take(page)] == ["ds-1"] and pager.next_call() is None


# --- downloads ---------------------------------------------------------------------------------------


def manifest(files: dict[str, bytes]) -> pb.DownloadModelResponse:
    entries = [model_pb2.ModelFile(path=p, size_bytes=len(d), sha256=hashlib.sha256(d).hexdigest())
               for p, d in files.items()]
    return pb.DownloadModelResponse(manifest=model_pb2.DownloadManifest(
        job_id="job-1", files=entries, total_bytes=sum(len(d) for d in files.values())))


def piece(path: str, offset: int, data: bytes, last: bool) -> pb.DownloadModelResponse:
    return pb.DownloadModelResponse(chunk=model_pb2.ModelChunk(path=path, offset=offset, data=data, last=last))


def test_a_download_writes_parts_and_renames_each_file_once_whole_and_hashed(tmp_path):
    seen = []
    download = core.Download("job-1", tmp_path / "out", checkpoint=3, merged=True,
                             progress=lambda *p: seen.append(p))
    request = download.request()
    assert request.checkpoint_step == 3 and request.form == model_pb2.MODEL_FORM_MERGED and not request.offsets
    assert download.take(manifest({"a.bin": b"hello world"}))
    assert download.take(piece("a.bin", 0, b"hello ", False))
    assert not (tmp_path / "out" / "a.bin").exists()  # not before it is whole
    assert download.take(piece("a.bin", 6, b"world", True))
    assert (tmp_path / "out" / "a.bin").read_bytes() == b"hello world" and download.complete
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.bin"]
    assert seen == [(0, 11), (6, 11), (11, 11)]


def test_a_broken_download_asks_again_from_the_bytes_held(tmp_path):
    download = core.Download("job-1", tmp_path, delays=(0.25,), retries=2)
    download.take(manifest({"a.bin": b"abcdef", "b.bin": b"xyz"}))
    download.take(piece("a.bin", 0, b"abc", False))
    download.interrupted()
    assert download.retry_delay(grpc.StatusCode.UNAVAILABLE) == 0.25
    assert dict(download.request().offsets) == {"a.bin": 3}
    assert download.take(manifest({"a.bin": b"abcdef", "b.bin": b"xyz"}))  # the same manifest: go on
    download.take(piece("a.bin", 3, b"def", True))
    download.take(piece("b.bin", 0, b"xyz", True))
    assert download.complete and download.result().received_bytes == 9 and download.result().reconnects == 1
    assert download.retry_delay(grpc.StatusCode.INVALID_ARGUMENT) is None  # only UNAVAILABLE is retried


def test_a_new_download_continues_the_partial_files_and_skips_the_whole_files_it_finds(tmp_path):
    files = {"a.bin": b"abcdef", "b.bin": b"xyz"}
    first = core.Download("job-1", tmp_path)
    first.take(manifest(files))
    first.take(piece("a.bin", 0, b"abcd", False))
    first.interrupted()
    (tmp_path / "b.bin").write_bytes(b"xyz")
    second = core.Download("job-1", tmp_path)
    assert second.take(manifest(files)) is False  # bytes held that the call did not skip: reopen it
    assert dict(second.request().offsets) == {"a.bin": 4, "b.bin": 3}
    second.take(manifest(files))
    second.take(piece("a.bin", 4, b"ef", True))
    second.take(piece("b.bin", 3, b"", True))  # held whole: one empty last chunk
    assert second.complete and (tmp_path / "a.bin").read_bytes() == b"abcdef"
    assert second.result().received_bytes == 2


def test_a_file_that_does_not_hash_to_its_sha256_is_refused_and_its_part_removed(tmp_path):
    download = core.Download("job-1", tmp_path)
    download.take(manifest({"a.bin": b"abc"}))
    with pytest.raises(tunewire.IntegrityError, match="sha256"):
        download.take(piece("a.bin", 0, b"abd", True))
    download.interrupted()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".", "", "a\\b", "nul\0"])
def test_a_manifest_naming_a_file_outside_the_folder_is_refused(tmp_path, name):
    download = core.Download("job-1", tmp_path / "out")
    with pytest.raises(tunewire.IntegrityError, match="outside"):
        download.take(manifest({name: b"x"}))
    assert not (tmp_path / "out").exists()


def test_chunks_out_of_order_or_unannounced_are_refused(tmp_path):
    download = core.Download("job-1", tmp_path)
    with pytest.raises(tunewire.IntegrityError, match="manifest"):
        download.take(piece("a.bin", 0, b"a", True))  # before the manifest
    download.take(manifest({"a.bin": b"abc"}))
    with pytest.raises(tunewire.IntegrityError, match="expected them from 0"):
        download.take(piece("a.bin", 1, b"bc", True))
    with pytest.raises(tunewire.IntegrityError, match="does not name"):
        download.take(piece("other.bin", 0, b"x", True))
    with pytest.raises(tunewire.IntegrityError, match="changed"):
        download.take(manifest({"a.bin": b"abd"}))
