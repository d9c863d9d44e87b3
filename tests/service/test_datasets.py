"""Dataset uploads through a real server on 127.0.0.1:0: the SDK, and raw streams for what a client must
not send (issue 14, "Datasets in" and "Bad input")."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import grpc
import pytest

import tunewire
from tests import tiny
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import JobState
from tunewire.v1 import dataset_pb2, job_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.TuningServiceStub(channel)


def stored(server) -> list[str]:
    """The files of stored datasets and of uploads in progress, relative to the upload dir."""
    root = server.settings.upload_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def header(data: bytes, upload_id: str = "up-1", name: str = "train.jsonl", **kw) -> dataset_pb2.UploadHeader:
    fields = {"upload_id": upload_id, "name": name, "size_bytes": len(data),
              "sha256": hashlib.sha256(data).hexdigest(), **kw}
    return dataset_pb2.UploadHeader(**fields)


def chunk(offset: int, data: bytes) -> pb.UploadDatasetRequest:
    return pb.UploadDatasetRequest(chunk=dataset_pb2.UploadChunk(offset=offset, data=data))


def violation_fields(exc: grpc.RpcError) -> set[str]:
    from tunewire.errors import field_violations

    return {v.field for v in field_violations(exc.trailing_metadata())}


def sentiment_file(tmp_path: Path, n: int = 16, name: str = "sentiment.jsonl") -> Path:
    return tiny.write_jsonl(tmp_path / name, tiny.sentiment_rows(n))


def test_an_upload_is_validated_stored_by_its_sha256_and_listed(server, client, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"text": "good film", "label": "pos"}\n'
                     b'{"text": "", "label": null}\n'
                     b'\n'
                     b'{"text": "caf\xe9 bad", "label": "neg"}\n'
                     b'{"text": "fine", "label": "pos", "score": 1.5}\n')
    seen = []
    dataset = client.upload_dataset(path, label_column="label", progress=lambda done, total: seen.append((done, total)))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (dataset.id, dataset.name, dataset.format, dataset.size_bytes, dataset.sha256) == \
        (f"ds-{digest}", "mixed.jsonl", "JSONL", path.stat().st_size, digest)
    report = dataset.report
    assert report.num_rows == 4  # the blank line is not a row, as a job's checks count them
    assert [(c.name, c.type, c.missing) for c in report.columns] == \
        [("text", "string", 0), ("label", "string", 1), ("score", "number", 3)]
    assert [(p.row, p.kind) for p in report.problem_rows] == [(2, "EMPTY"), (3, "NOT_UTF8")]
    assert report.problem_rows[1].column == "text" and report.problem_row_count == 2
    assert [(c.value, c.count, c.missing) for c in report.label_counts] == \
        [("pos", 2, False), ("neg", 1, False), ("", 1, True)]
    assert seen[-1] == (path.stat().st_size,) * 2
    assert stored(server) == [f"datasets/{digest}.jsonl"]  # nothing left in partial/
    assert [d.id for d in client.list_datasets()] == [dataset.id]
    assert client.get_dataset(dataset.id) == dataset
    recount = client.get_dataset(dataset.id, label_column="score").report
    assert [(c.value, c.count) for c in recount.label_counts] == [("", 3), ("1.5", 1)]


def test_a_large_upload_checked_as_it_arrives_gets_the_one_shot_report(server, client, tmp_path):
    # Past MIN_STREAMED_BYTES the report is built by a process reading the file as it grows; problem rows
    # sit across the 1 MiB chunks the SDK sends (a row every ~1000 bytes, a bad byte every 97 rows, an empty text every 101).
    from tunewire_server.datasets import arrival
    from tunewire_server.datasets.report import build_report

    rows = []
    for i in range(arrival.MIN_STREAMED_BYTES // 850):
        text = b"" if i % 101 == 5 else b"caf\xe9" if i % 97 == 3 else b"word " * (150 + i % 50)
        rows.append(b'{"id": %d, "text": "%s", "label": "%s"}\n' % (i, text, b"pos" if i % 3 else b"neg"))
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(rows))
    assert path.stat().st_size >= arrival.MIN_STREAMED_BYTES
    dataset = client.upload_dataset(path, label_column="label")
    expected = build_report(path, "jsonl", "label")
    report = dataset.report
    assert report.num_rows == expected.num_rows == len(rows)
    assert [(p.row, p.kind, p.column) for p in report.problem_rows] == \
        [(p.row, p.kind, p.column) for p in expected.problem_rows]
    assert report.problem_row_count == expected.problem_row_count > 100
    assert [(c.name, c.type, c.missing) for c in report.columns] == \
        [(c.name, c.type, c.missing) for c in expected.columns]
    assert [(c.value, c.count) for c in report.label_counts] == [(c.value, c.count) for c in expected.label_counts]


def test_the_same_bytes_uploaded_again_are_stored_once_and_not_sent_again(server, client, tmp_path):
    path = sentiment_file(tmp_path)
    first = client.upload_dataset(path)
    copy = tmp_path / "copy.csv.jsonl"
    copy.write_bytes(path.read_bytes())
    seen = []
    again = client.upload_dataset(copy, progress=lambda done, total: seen.append(done))
    assert again.id == first.id and again.name == "sentiment.jsonl"  # the first upload's name stays
    assert seen == [path.stat().st_size]  # StartUpload found it: no chunk was sent
    assert stored(server) == [f"datasets/{first.sha256}.jsonl"]
    assert len(list(client.list_datasets())) == 1


def test_a_cut_stream_resumes_from_the_held_offset_sending_only_the_rest(server, client, stub, tmp_path):
    path = sentiment_file(tmp_path, 64)
    data = path.read_bytes()
    half, piece = len(data) // 2, 100
    head = header(data, upload_id="resume-me", name=path.name)

    def cut_at_half():
        yield pb.UploadDatasetRequest(header=head)
        for offset in range(0, half, piece):
            yield chunk(offset, data[offset:min(offset + piece, half)])
        wait_for(lambda: stub.StartUpload(pb.StartUploadRequest(header=head)).offset == half, timeout=10)
        raise ConnectionAbortedError("the link drops")

    with pytest.raises(grpc.RpcError):
        stub.UploadDataset(cut_at_half())
    assert stub.StartUpload(pb.StartUploadRequest(header=head)).offset == half
    assert "partial/resume-me.part" in stored(server)
    seen = []
    dataset = client.upload_dataset(path, upload_id="resume-me", chunk_size=piece,
                                    progress=lambda done, total: seen.append(done))
    assert seen[0] == half and seen[-1] == len(data)
    assert [b - a for a, b in itertools.pairwise(seen)] == [len(data[o:o + piece]) for o in range(half, len(data), piece)]
    assert dataset.size_bytes == len(data) and dataset.report.num_rows == 64
    assert (server.settings.upload_dir / "datasets" / f"{dataset.sha256}.jsonl").read_bytes() == data
    assert stored(server) == [f"datasets/{dataset.sha256}.jsonl"]


def test_a_stream_that_ends_early_keeps_its_bytes_and_says_where_to_go_on(server, stub, tmp_path):
    data = sentiment_file(tmp_path).read_bytes()
    head = header(data)
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadDataset(iter([pb.UploadDatasetRequest(header=head), chunk(0, data[:10])]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "offset 10" in info.value.details()
    assert stub.StartUpload(pb.StartUploadRequest(header=head)).offset == 10
    done = stub.UploadDataset(iter([pb.UploadDatasetRequest(header=head), chunk(10, data[10:])]))
    assert done.dataset.size_bytes == len(data)


def test_a_wrong_sha256_keeps_nothing(server, client, stub, tmp_path):
    data = sentiment_file(tmp_path).read_bytes()
    head = header(data, sha256=hashlib.sha256(b"other bytes").hexdigest())
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadDataset(iter([pb.UploadDatasetRequest(header=head), chunk(0, data)]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(info.value) == {"header.sha256"} and "nothing was kept" in info.value.details()
    assert stored(server) == [] and list(client.list_datasets()) == []
    assert stub.StartUpload(pb.StartUploadRequest(header=head)).offset == 0  # the upload is gone, not resumable


@pytest.mark.parametrize("extra, field", [
    (lambda data: [chunk(0, data + b"x")], "chunk.data"),  # more bytes than declared
    (lambda data: [chunk(0, data), chunk(len(data), b"x")], "chunk.offset"),  # a chunk after the end
])
def test_bytes_past_the_declared_size_keep_nothing(server, client, stub, tmp_path, extra, field):
    data = sentiment_file(tmp_path).read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadDataset(iter([pb.UploadDatasetRequest(header=header(data)), *extra(data)]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(info.value) == {field} and "removed" in info.value.details()
    assert stored(server) == [] and list(client.list_datasets()) == []


def test_a_chunk_at_the_wrong_offset_is_refused_and_the_upload_kept(server, stub, tmp_path):
    data = sentiment_file(tmp_path).read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadDataset(iter([pb.UploadDatasetRequest(header=header(data)), chunk(0, data[:5]), chunk(7, b"x")]))
    assert violation_fields(info.value) == {"chunk.offset"} and "holds 5 bytes" in info.value.details()
    assert stub.StartUpload(pb.StartUploadRequest(header=header(data))).offset == 5


@pytest.mark.parametrize("name", ["../train.jsonl", "a/b.jsonl", "a\\b.jsonl", "a\x00b.jsonl", "..", ""])
def test_a_name_that_is_not_a_file_name_is_refused_before_any_byte(server, stub, name):
    for call in (lambda h: stub.StartUpload(pb.StartUploadRequest(header=h)),
                 lambda h: stub.UploadDataset(iter([pb.UploadDatasetRequest(header=h), chunk(0, b"{}\n")]))):
        with pytest.raises(grpc.RpcError) as info:
            call(header(b"{}\n", name=name))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation_fields(info.value) == {"header.name"}
    assert stored(server) == []


@pytest.mark.parametrize("name, fmt", [("train.jsonl", 99), ("train.txt", job_pb2.FILE_FORMAT_UNSPECIFIED)])
def test_an_unknown_format_is_refused(server, stub, name, fmt):
    with pytest.raises(grpc.RpcError) as info:
        stub.StartUpload(pb.StartUploadRequest(header=header(b"{}\n", name=name, format=fmt)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(info.value) == {"header.format"}


def test_a_file_that_does_not_parse_in_its_format_keeps_nothing(server, client, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.upload_dataset(path)
    assert info.value.violations[0].field == "header.format" and "row 2" in info.value.message
    assert stored(server) == []


def test_past_the_size_cap_or_the_disk_floor_is_resource_exhausted(server_factory, tmp_path):
    path = sentiment_file(tmp_path)
    for settings in ({"max_upload_bytes": 100}, {"min_free_disk_mb": 1 << 40}):
        st = server_factory(tmp_path / json.dumps(settings).strip("{}").replace('"', "").replace(": ", "-"),
                            **settings)
        with tunewire.Client(st.address, timeout=30) as client, pytest.raises(tunewire.ResourceExhaustedError):
            client.upload_dataset(path)
        assert stored(st) == []


def test_a_job_trains_on_an_uploaded_dataset_which_cannot_be_deleted_while_it_is_queued(client, tmp_path):
    dataset = client.upload_dataset(sentiment_file(tmp_path))
    spec = tiny_classification(max_steps=2, save_strategy="no")
    spec["train_dataset"] = {"uploaded": {"dataset_id": dataset.id}}
    spec["eval_dataset"] = {"uploaded": {"dataset_id": dataset.id}}
    job = client.submit(spec)
    with pytest.raises(tunewire.FailedPreconditionError) as info:
        client.delete_dataset(dataset.id)
    assert job.id in info.value.message
    done = client.wait(job.id)
    assert done.state == JobState.SUCCEEDED and "loss" in done.metrics
    assert client.delete_dataset(dataset.id) is True
    assert client.delete_dataset(dataset.id) is False  # deleting twice is not an error
    with pytest.raises(tunewire.NotFoundError):
        client.get_dataset(dataset.id)
    with pytest.raises(tunewire.InvalidArgumentError) as info:  # a deleted dataset is no job's data any more
        client.submit(spec)
    assert {v.field for v in info.value.violations} >= {"train_dataset.uploaded.dataset_id"}


def test_dataset_ids_that_cannot_be_are_invalid_and_unknown_ones_not_found(client):
    for call in (client.get_dataset, client.delete_dataset):
        with pytest.raises(tunewire.InvalidArgumentError) as info:
            call("../../etc/passwd")
        assert info.value.violations[0].field == "dataset_id"
    with pytest.raises(tunewire.NotFoundError):
        client.get_dataset("ds-" + "0" * 64)
    spec = tiny_classification()
    spec["train_dataset"] = {"uploaded": {"dataset_id": "ds-" + "0" * 64}}
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.submit(spec)
    assert [v.field for v in info.value.violations] == ["train_dataset.uploaded.dataset_id"]


def test_datasets_list_newest_first_in_pages(client, tmp_path):
    ids = [client.upload_dataset(tiny.write_jsonl(tmp_path / f"d{i}.jsonl", tiny.sentiment_rows(2, seed=i))).id
           for i in range(5)]
    assert [d.id for d in client.list_datasets(page_size=2)] == ids[::-1]
    assert [d.id for d in client.list_datasets(page_size=2, limit=3)] == ids[::-1][:3]


def test_the_cli_uploads_lists_and_removes(server, tmp_path, capsys):
    from tunewire import cli

    path = sentiment_file(tmp_path)
    address = ["--address", server.address]
    assert cli.main([*address, "datasets", "upload", str(path), "--label-column", "label", "--json"]) == cli.EXIT_OK
    uploaded = json.loads(capsys.readouterr().out)
    assert uploaded["report"]["num_rows"] == 16 and uploaded["report"]["label_column"] == "label"
    assert cli.main([*address, "datasets", "ls", "--json"]) == cli.EXIT_OK
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == [uploaded["id"]]
    assert cli.main([*address, "datasets", "upload", str(path)]) == cli.EXIT_OK  # the readable answer
    assert uploaded["id"] in capsys.readouterr().out
    assert cli.main([*address, "datasets", "rm", uploaded["id"]]) == cli.EXIT_OK
    assert "deleted" in capsys.readouterr().out
    assert cli.main([*address, "datasets", "ls", "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out) == []


def test_an_upload_resumes_on_a_restarted_server(server_factory, tmp_path):
    data = sentiment_file(tmp_path, 32).read_bytes()
    head = header(data, upload_id="across-restart")
    first = server_factory(tmp_path / "data")
    with grpc.insecure_channel(first.address) as channel:
        with pytest.raises(grpc.RpcError) as info:  # ends early: the bytes held stay
            pb_grpc.TuningServiceStub(channel).UploadDataset(
                iter([pb.UploadDatasetRequest(header=head), chunk(0, data[:700])]))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    first.stop()
    second = server_factory(tmp_path / "data")
    with grpc.insecure_channel(second.address) as channel:
        stub = pb_grpc.TuningServiceStub(channel)
        assert stub.StartUpload(pb.StartUploadRequest(header=head)).offset == 700
        done = stub.UploadDataset(iter([pb.UploadDatasetRequest(header=head), chunk(700, data[700:])]))
    assert done.dataset.sha256 == hashlib.sha256(data).hexdigest() and done.dataset.report.num_rows == 32
    assert stored(second) == [f"datasets/{done.dataset.sha256}.jsonl"]
