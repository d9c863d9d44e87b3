"""Models out through a real server on 127.0.0.1:0 (issue 14, "Models out", "Deletion and retention", "Bad
input"): ListCheckpoints, DownloadModel (the SDK's download with its sha256 checks and resumes, and raw
streams from an offset), DeleteJob."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest

import tunewire
from tests import tiny
from tests.support.server_thread import ServerThread, make_settings
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import JobState
from tunewire.v1 import model_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

TRAINING_STATE = {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin", "rng_state.pth",
                  "tunewire.json", "tunewire-complete.json"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, models_root):
    """One server for the module, with a succeeded classifier that saved checkpoints at steps 2 and 4 and
    evaluated at each."""
    # every checkpoint kept: retention after success is tested on its own
    server = ServerThread(make_settings(tmp_path_factory.mktemp("models"), models_root, keep_checkpoints=-1)).start()
    root = server.settings.dataset_root
    root.mkdir(parents=True, exist_ok=True)
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(16))
    tiny.write_jsonl(root / "eval.jsonl", tiny.sentiment_rows(8))
    spec = tiny_classification(max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="steps",
                               eval_steps=2, logging_steps=2)
    spec["eval_dataset"] = {"file": {"path": "eval.jsonl"}}
    with tunewire.Client(server.address, timeout=60) as client:
        job = client.wait(client.submit(spec).id)
    server.job_id = job.id
    yield server
    server.stop()


@pytest.fixture
def client(served):
    with tunewire.Client(served.address, timeout=60) as c:
        yield c


@pytest.fixture
def stub(served):
    with grpc.insecure_channel(served.address) as channel:
        yield pb_grpc.TuningServiceStub(channel)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def violation_fields(exc: tunewire.TunewireError) -> set[str]:
    return {v.field for v in exc.violations}


def short_job(client, **hp) -> str:
    return client.wait(client.submit(tiny_classification(max_steps=1, save_strategy="no", **hp)).id).id


# --- ListCheckpoints --------------------------------------------------------------------------------


def test_checkpoints_are_listed_with_their_step_epoch_sizes_and_eval_metrics(served, client):
    listing = client.list_checkpoints(served.job_id)
    assert [c.step for c in listing.checkpoints] == [2, 4]
    for c in listing.checkpoints:
        assert c.epoch is not None and c.epoch > 0 and c.saved is not None
        assert 0 < c.download_bytes < c.size_bytes  # the optimizer state is not sent
        assert {"loss", "accuracy"} <= set(c.eval_metrics) and not c.adapter
    assert listing.final is not None and listing.final.step == 4 and not listing.final.adapter
    assert listing.final.metrics == client.get(served.job_id).metrics


def test_a_job_without_checkpoints_lists_only_its_final_model_and_unknown_jobs_are_not_found(served, client):
    listing = client.list_checkpoints(short_job(client))
    assert listing.checkpoints == [] and listing.final is not None
    with pytest.raises(tunewire.NotFoundError):
        client.list_checkpoints("job-that-never-was")


# --- DownloadModel through the SDK -----------------------------------------------------------------


def test_the_final_model_downloads_into_a_loadable_folder_with_every_sha256_checked(served, client, tmp_path):
    seen: list[tuple[int, int]] = []
    result = client.download(served.job_id, tmp_path / "final", progress=lambda done, total: seen.append((done, total)))
    names = {p.name for p in (tmp_path / "final").iterdir()}
    assert names == {f.path for f in result.files}  # no partial file is left
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names and not names & TRAINING_STATE
    source = served.settings.jobs_dir / served.job_id / "model"
    for f in result.files:
        assert sha256(tmp_path / "final" / f.path) == f.sha256 == sha256(source / f.path)
    assert result.received_bytes == result.total_bytes == sum(f.size_bytes for f in result.files)
    assert seen[-1] == (result.total_bytes, result.total_bytes)
    assert result.checkpoint is None and not result.merged and result.step == 4
    config = json.loads((tmp_path / "final" / "config.json").read_text())
    assert set(config["id2label"].values()) == {"negative", "positive"}


def test_a_checkpoint_downloads_without_its_training_state(served, client, tmp_path):
    result = client.download(served.job_id, tmp_path / "ckpt", checkpoint=2)
    assert result.checkpoint == 2 and result.step == 2
    names = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert "model.safetensors" in names and not names & TRAINING_STATE
    source = served.settings.jobs_dir / served.job_id / "checkpoints" / "checkpoint-2"
    assert sha256(tmp_path / "ckpt" / "model.safetensors") == sha256(source / "model.safetensors")


def test_a_download_resumes_from_the_partial_file_it_holds(served, client, tmp_path):
    dest = tmp_path / "resumed"
    first = client.download(served.job_id, dest)
    weights = next(f for f in first.files if f.path == "model.safetensors")
    data = (dest / "model.safetensors").read_bytes()
    (dest / "model.safetensors").unlink()
    half = len(data) // 2
    (dest / f".model.safetensors.{weights.sha256[:16]}.tunewire-part").write_bytes(data[:half])
    again = client.download(served.job_id, dest)
    assert again.received_bytes == weights.size_bytes - half  # the rest only; the other files are in place
    assert (dest / "model.safetensors").read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.path for f in again.files)


def test_a_partial_file_that_does_not_hash_right_is_refused_and_removed(served, client, tmp_path):
    dest = tmp_path / "corrupt"
    first = client.download(served.job_id, dest)
    weights = next(f for f in first.files if f.path == "model.safetensors")
    data = (dest / "model.safetensors").read_bytes()
    (dest / "model.safetensors").unlink()
    part = dest / f".model.safetensors.{weights.sha256[:16]}.tunewire-part"
    part.write_bytes(bytes(b ^ 0xFF for b in data[:100]))  # 100 wrong bytes the client thinks it holds
    with pytest.raises(tunewire.IntegrityError, match="sha256"):
        client.download(served.job_id, dest)
    assert not part.exists() and not (dest / "model.safetensors").exists()
    client.download(served.job_id, dest)  # the next try starts that file over
    assert (dest / "model.safetensors").read_bytes() == data


class CuttableProxy:
    """A slow TCP proxy on 127.0.0.1 in front of the server whose connections can be cut (a dropped link)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [conn, upstream]
            for a, b, pause in ((conn, upstream, 0.0), (upstream, conn, 0.01)):
                threading.Thread(target=self._pipe, args=(a, b, pause), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, pause: float) -> None:
        """Forward src to dst; towards the client slowly (4 KiB per `pause`), so that a cut finds bytes in
        flight rather than a download already whole in the client's buffers."""
        try:
            while data := src.recv(4096 if pause else 65536):
                dst.sendall(data)
                time.sleep(pause)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cuts += 1
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.sockets = []

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_dropped_connection_is_resumed_from_the_bytes_held(served, tmp_path):
    proxy = CuttableProxy(served.address)
    cut_at: list[int] = []

    def progress(done: int, total: int) -> None:
        if not cut_at and done > total // 3:
            cut_at.append(done)
            proxy.cut()

    try:
        with tunewire.Client(proxy.address, timeout=60) as client:
            result = client.download(served.job_id, tmp_path / "dropped", progress=progress, chunk_size=16 * 1024)
    finally:
        proxy.close()
    assert proxy.cuts >= 1 and result.reconnects >= 1
    # bytes in flight when the link dropped may be lost and sent again, but never the whole download twice
    assert result.received_bytes < result.total_bytes + cut_at[0]
    source = served.settings.jobs_dir / served.job_id / "model"
    for f in result.files:
        assert sha256(tmp_path / "dropped" / f.path) == sha256(source / f.path)


def test_the_asyncio_client_lists_downloads_and_deletes(served, client, tmp_path):
    import asyncio

    job_id = short_job(client)

    async def run():
        async with tunewire.AsyncClient(served.address, timeout=60) as aclient:
            listing = await aclient.list_checkpoints(job_id)
            result = await aclient.download(job_id, tmp_path / "async")
            return listing, result, await aclient.delete_job(job_id), await aclient.delete_job(job_id)

    listing, result, first, second = asyncio.run(run())
    assert listing.final is not None and first is True and second is False
    assert {p.name for p in (tmp_path / "async").iterdir()} == {f.path for f in result.files}


# --- DownloadModel on the wire ---------------------------------------------------------------------


def test_a_raw_download_sends_the_manifest_then_each_file_from_its_offset(served, stub):
    source = served.settings.jobs_dir / served.job_id / "model"
    config = (source / "config.json").read_bytes()
    tokenizer_size = (source / "tokenizer.json").stat().st_size
    responses = list(stub.DownloadModel(pb.DownloadModelRequest(
        job_id=served.job_id, offsets={"config.json": 10, "tokenizer.json": tokenizer_size}, chunk_size=7)))
    manifest = responses[0].manifest
    assert responses[0].WhichOneof("part") == "manifest" and not manifest.HasField("checkpoint_step")
    assert manifest.form == model_pb2.MODEL_FORM_AS_TRAINED
    chunks = [r.chunk for r in responses[1:]]
    assert all(r.WhichOneof("part") == "chunk" for r in responses[1:])
    config_chunks = [c for c in chunks if c.path == "config.json"]
    assert config_chunks[0].offset == 10 and all(len(c.data) <= 7 for c in config_chunks)
    assert b"".join(c.data for c in config_chunks) == config[10:] and config_chunks[-1].last
    assert [(c.data, c.last) for c in chunks if c.path == "tokenizer.json"] == [(b"", True)]  # held whole
    assert [c.path for c in chunks if c.last] == [f.path for f in manifest.files]  # in manifest order


def _refusal(stub, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.DownloadModel(pb.DownloadModelRequest(**fields)))
    return info.value


def test_downloads_that_cannot_be_are_refused_naming_what_is_wrong(served, client, stub):
    from tunewire.errors import field_violations

    def fields(exc):
        return {v.field for v in field_violations(exc.trailing_metadata())}

    job_id = served.job_id
    exc = _refusal(stub, job_id=job_id, checkpoint_step=3)
    assert exc.code() == grpc.StatusCode.NOT_FOUND and "checkpoint" in exc.details()
    exc = _refusal(stub, job_id=job_id, form=model_pb2.MODEL_FORM_MERGED)
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(exc) == {"form"}
    assert "LoRA" in exc.details()
    assert fields(_refusal(stub, job_id=job_id, form=7)) == {"form"}
    assert fields(_refusal(stub, job_id=job_id, offsets={"../../etc/passwd": 0})) == {"offsets"}
    assert fields(_refusal(stub, job_id=job_id, offsets={"config.json": 10**9})) == {"offsets"}
    assert fields(_refusal(stub, job_id=job_id, offsets={f"f{i}": 0 for i in range(1000)})) == {"offsets"}
    assert fields(_refusal(stub, job_id=job_id, chunk_size=64 << 20)) == {"chunk_size"}
    assert _refusal(stub, job_id="nope").code() == grpc.StatusCode.NOT_FOUND
    assert _refusal(stub, job_id="x" * 500).code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(tunewire.NotFoundError):
        client.download(job_id, Path("/nonexistent-never-written"), checkpoint=99)


# --- DeleteJob ------------------------------------------------------------------------------------


def test_a_running_job_is_refused_then_deleted_once_cancelled(served, client):
    job = client.submit(tiny_classification(max_steps=100_000, save_strategy="no"))
    wait_for(lambda: client.get(job.id).state == JobState.RUNNING, timeout=60)
    with pytest.raises(tunewire.FailedPreconditionError, match="cancel it first"):
        client.delete_job(job.id)
    assert client.get(job.id).state == JobState.RUNNING  # nothing was touched
    client.cancel(job.id)
    assert client.wait(job.id, raise_on_failure=False).state == JobState.CANCELLED
    assert client.delete_job(job.id) is True


def test_a_deleted_job_is_gone_everywhere_and_deleting_twice_is_not_an_error(served, client, tmp_path):
    job = client.submit(tiny_classification(max_steps=1, save_strategy="no"), request_id="req-delete-me")
    client.wait(job.id)
    client.predict(job.id, ["a fine day"])  # its model is loaded in the inference worker
    assert client.delete_job(job.id) is True
    assert not (served.settings.jobs_dir / job.id).exists()
    with pytest.raises(tunewire.NotFoundError):
        client.get(job.id)
    with pytest.raises(tunewire.NotFoundError):
        client.list_checkpoints(job.id)
    with pytest.raises(tunewire.NotFoundError):
        client.download(job.id, tmp_path / "never")
    with pytest.raises(tunewire.NotFoundError):
        client.predict(job.id, ["a fine day"])
    assert served.server.store.events_after(job.id, 0) == []
    assert job.id not in {j.id for j in client.list_jobs()}
    assert client.delete_job(job.id) is False
    assert client.delete_job("job-that-never-was") is False
    again = client.submit(tiny_classification(max_steps=1, save_strategy="no"), request_id="req-delete-me")
    assert again.id != job.id  # the request id went with the deleted job
    client.wait(again.id)
    assert client.delete_job(again.id) is True


# --- the CLI ----------------------------------------------------------------------------------------


def printed_json(capsys) -> dict:
    """The CLI's JSON line (the in-process server logs to the same stdout)."""
    return json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("{")))


def test_the_cli_lists_checkpoints_downloads_and_removes(served, client, tmp_path, capsys):
    from tunewire import cli

    address = ["--address", served.address]
    job_id = short_job(client)
    assert cli.main([*address, "checkpoints", served.job_id, "--json"]) == cli.EXIT_OK
    listing = printed_json(capsys)
    assert [c["step"] for c in listing["checkpoints"]] == [2, 4] and listing["final"]["step"] == 4
    assert cli.main([*address, "checkpoints", served.job_id]) == cli.EXIT_OK  # the table
    assert "final" in capsys.readouterr().out
    assert cli.main([*address, "download", served.job_id, str(tmp_path / "ckpt"), "--checkpoint", "2",
                     "--json"]) == cli.EXIT_OK
    result = printed_json(capsys)
    assert result["checkpoint"] == 2 and {f["path"] for f in result["files"]} == {
        p.name for p in (tmp_path / "ckpt").iterdir()}
    assert cli.main([*address, "download", served.job_id, str(tmp_path / "m"), "--merged"]) == cli.EXIT_ERROR
    assert "form" in capsys.readouterr().err
    assert cli.main([*address, "rm", job_id, job_id]) == cli.EXIT_OK
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith(job_id)]
    assert said == [f"{job_id}: deleted", f"{job_id}: not there"]


# --- retention ----------------------------------------------------------------------------------------


def test_with_a_ttl_a_terminal_jobs_artifacts_are_swept_and_its_record_stays(tmp_path, models_root):
    server = ServerThread(make_settings(tmp_path / "data", models_root, artifact_ttl_s=0.5,
                                        retention_interval_s=0.2)).start()
    try:
        tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
        with tunewire.Client(server.address, timeout=60) as client:
            job_id = short_job(client)
            wait_for(lambda: not (server.settings.jobs_dir / job_id).exists(), timeout=30)
            assert client.get(job_id).state == JobState.SUCCEEDED  # the record, events and metrics stay
            assert client.list_checkpoints(job_id).final is None
            with pytest.raises(tunewire.FailedPreconditionError):
                client.download(job_id, tmp_path / "gone")
            assert client.delete_job(job_id) is True
    finally:
        server.stop()


def test_a_job_that_succeeds_keeps_its_final_model_and_its_newest_checkpoints(tmp_path, models_root):
    server = ServerThread(make_settings(tmp_path / "data", models_root)).start()  # keep_checkpoints=1
    try:
        tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
        checkpoints = server.settings.jobs_dir
        with tunewire.Client(server.address, timeout=60) as client:
            job_id = client.wait(client.submit(tiny_classification(max_steps=6, save_strategy="steps",
                                                                   save_steps=2)).id).id
            folder = checkpoints / job_id / "checkpoints"
            wait_for(lambda: sorted(p.name for p in folder.iterdir()) == ["checkpoint-6"], timeout=30)
            listing = client.list_checkpoints(job_id)
            assert [c.step for c in listing.checkpoints] == [6] and listing.final is not None
            client.download(job_id, tmp_path / "final")  # the final model is kept whole
            failed = client.submit(tiny_classification(max_steps=100_000, save_strategy="steps", save_steps=2))
            wait_for(lambda: len(client.list_checkpoints(failed.id).checkpoints) >= 2, timeout=60)
            client.cancel(failed.id)
            client.wait(failed.id, raise_on_failure=False)
            assert len(client.list_checkpoints(failed.id).checkpoints) >= 2  # only a SUCCEEDED job is pruned
    finally:
        server.stop()
