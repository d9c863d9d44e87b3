"""api/models.py: DownloadModel requests in (which, form, chunk size, offsets checked against the manifest),
checkpoint listings, manifests and chunks out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewire.v1 import model_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire_server.api import models as models_api
from tunewire_server.errors import InvalidSpec
from tunewire_server.models.layout import Form, Which
from tunewire_server.models.listing import CheckpointInfo, CheckpointListing, FinalModelInfo
from tunewire_server.models.manifest import FileEntry, Manifest
from tunewire_server.models.reader import DEFAULT_CHUNK, MAX_CHUNK, DownloadChunk

MANIFEST = Manifest("job-1", Which(), Form.AS_TRAINED, 6, Path("/nowhere"),
                    (FileEntry("config.json", 10, "a" * 64), FileEntry("model.safetensors", 100, "b" * 64)))


def field_of(exc: pytest.ExceptionInfo) -> set[str]:
    return {v.field for v in exc.value.violations}


def test_which_and_form_come_from_the_request():
    assert models_api.which_from_proto(pb.DownloadModelRequest()) == Which(None)
    assert models_api.which_from_proto(pb.DownloadModelRequest(checkpoint_step=0)) == Which(0)  # step 0 is a step
    assert models_api.form_from_proto(model_pb2.MODEL_FORM_UNSPECIFIED) == Form.AS_TRAINED
    assert models_api.form_from_proto(model_pb2.MODEL_FORM_MERGED) == Form.MERGED
    with pytest.raises(InvalidSpec) as exc:
        models_api.form_from_proto(7)
    assert field_of(exc) == {"form"}


def test_the_chunk_size_defaults_and_is_bounded():
    assert models_api.chunk_size(0) == DEFAULT_CHUNK and models_api.chunk_size(1) == 1
    assert models_api.chunk_size(MAX_CHUNK) == MAX_CHUNK
    with pytest.raises(InvalidSpec) as exc:
        models_api.chunk_size(MAX_CHUNK + 1)
    assert field_of(exc) == {"chunk_size"}


@pytest.mark.parametrize("offsets", [{"other.bin": 0}, {"config.json": 11}, {f"f{i}": 0 for i in range(3)}])
def test_offsets_must_name_files_of_the_download_within_their_size(offsets):
    with pytest.raises(InvalidSpec) as exc:
        models_api.offsets_for(MANIFEST, offsets)
    assert field_of(exc) == {"offsets"}


def test_offsets_up_to_a_files_size_are_taken():
    assert models_api.offsets_for(MANIFEST, {"config.json": 10, "model.safetensors": 0}) == {
        "config.json": 10, "model.safetensors": 0}


def test_a_listing_converts_with_unknown_values_left_unset():
    listing = CheckpointListing("job-1", [
        CheckpointInfo(step=2, epoch=None, time=1.5, size_bytes=30, download_bytes=10, metrics={"accuracy": 0.5}),
        CheckpointInfo(step=4, epoch=1.0, time=2.0, size_bytes=30, download_bytes=10, adapter=True)], None)
    response = models_api.listing_to_proto(listing)
    first, second = response.checkpoints
    assert first.step == 2 and not first.HasField("epoch") and dict(first.eval_metrics) == {"accuracy": 0.5}
    assert first.save_time.ToNanoseconds() == 1_500_000_000 and second.epoch == 1.0 and second.adapter
    assert not response.HasField("final_model")
    final = FinalModelInfo(step=None, time=3.0, size_bytes=40, download_bytes=20, metrics={"f1": 0.9},
                           adapter=True, merged_ready=True)
    response = models_api.listing_to_proto(CheckpointListing("job-1", [], final))
    assert not response.final_model.HasField("step") and response.final_model.merged_ready
    assert dict(response.final_model.metrics) == {"f1": 0.9}


def test_a_manifest_and_its_chunks_convert_without_the_servers_folder():
    message = models_api.manifest_to_proto(MANIFEST).manifest
    assert not message.HasField("checkpoint_step") and message.step == 6
    assert message.form == model_pb2.MODEL_FORM_AS_TRAINED and message.total_bytes == 110
    assert [(f.path, f.size_bytes, f.sha256) for f in message.files] == [
        ("config.json", 10, "a" * 64), ("model.safetensors", 100, "b" * 64)]
    assert "nowhere" not in str(message)
    merged = Manifest("job-1", Which(2), Form.MERGED, None, Path("/x"), ())
    message = models_api.manifest_to_proto(merged).manifest
    assert message.checkpoint_step == 2 and message.form == model_pb2.MODEL_FORM_MERGED
    assert not message.HasField("step")
    chunk = models_api.chunk_to_proto(DownloadChunk("config.json", 4, b"abc", 10, "a" * 64, False)).chunk
    assert (chunk.path, chunk.offset, chunk.data, chunk.last) == ("config.json", 4, b"abc", False)
