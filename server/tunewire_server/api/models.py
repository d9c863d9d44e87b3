"""Protobuf <-> the models package: which model and form a download asks for, its offsets and chunk size in;
checkpoint listings, manifests and chunks out."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from tunewire.v1 import model_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire_server.errors import FieldViolation, InvalidSpec, preview
from tunewire_server.models.layout import Form, Which
from tunewire_server.models.listing import CheckpointListing
from tunewire_server.models.manifest import Manifest
from tunewire_server.models.reader import DEFAULT_CHUNK, MAX_CHUNK, DownloadChunk

FORMS = {model_pb2.MODEL_FORM_UNSPECIFIED: Form.AS_TRAINED, model_pb2.MODEL_FORM_AS_TRAINED: Form.AS_TRAINED,
         model_pb2.MODEL_FORM_MERGED: Form.MERGED}
FORM_VALUES = {Form.AS_TRAINED: model_pb2.MODEL_FORM_AS_TRAINED, Form.MERGED: model_pb2.MODEL_FORM_MERGED}


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def which_from_proto(request: pb.DownloadModelRequest) -> Which:
    """The final model, or the checkpoint the request names."""
    return Which(request.checkpoint_step if request.HasField("checkpoint_step") else None)


def form_from_proto(value: int) -> Form:
    form = FORMS.get(value)
    if form is None:
        raise InvalidSpec(FieldViolation("form", f"unknown form {value}; use MODEL_FORM_AS_TRAINED or "
                                                 "MODEL_FORM_MERGED"))
    return form


def chunk_size(value: int) -> int:
    """The request's chunk size: 0 for the default, else 1 byte to MAX_CHUNK."""
    if value > MAX_CHUNK:
        raise InvalidSpec(FieldViolation("chunk_size", f"at most {MAX_CHUNK} bytes, not {value}"))
    return value or DEFAULT_CHUNK


def offsets_for(manifest: Manifest, offsets: Mapping[str, int]) -> dict[str, int]:
    """The request's offsets, checked against the manifest before anything is sent: each names a file of it
    and lies within its size (INVALID_ARGUMENT on `offsets` otherwise)."""
    if len(offsets) > len(manifest.files):
        raise InvalidSpec(FieldViolation("offsets", f"{len(offsets)} offsets for a download of "
                                                    f"{len(manifest.files)} files"))
    for path, offset in offsets.items():
        entry = manifest.entry(path)
        if entry is None:
            raise InvalidSpec(FieldViolation("offsets", f"{preview(path)} is not a file of this download"))
        if offset > entry.size:
            raise InvalidSpec(FieldViolation("offsets", f"{entry.path}: {offset} is past the file's size "
                                                        f"({entry.size} bytes)"))
    return dict(offsets)


def listing_to_proto(listing: CheckpointListing) -> pb.ListCheckpointsResponse:
    response = pb.ListCheckpointsResponse(checkpoints=[
        model_pb2.Checkpoint(step=c.step, epoch=c.epoch, save_time=_timestamp(c.time), size_bytes=c.size_bytes,
                             download_bytes=c.download_bytes, eval_metrics=c.metrics, adapter=c.adapter)
        for c in listing.checkpoints])
    final = listing.final
    if final is not None:
        response.final_model.CopyFrom(model_pb2.FinalModel(
            step=final.step, save_time=_timestamp(final.time), size_bytes=final.size_bytes,
            download_bytes=final.download_bytes, metrics=final.metrics, adapter=final.adapter,
            merged_ready=final.merged_ready))
    return response


def manifest_to_proto(manifest: Manifest) -> pb.DownloadModelResponse:
    return pb.DownloadModelResponse(manifest=model_pb2.DownloadManifest(
        job_id=manifest.job_id, checkpoint_step=manifest.which.checkpoint_step, form=FORM_VALUES[manifest.form],
        step=manifest.step, total_bytes=manifest.total_bytes,
        files=[model_pb2.ModelFile(path=f.path, size_bytes=f.size, sha256=f.sha256) for f in manifest.files]))


def chunk_to_proto(chunk: DownloadChunk) -> pb.DownloadModelResponse:
    return pb.DownloadModelResponse(chunk=model_pb2.ModelChunk(path=chunk.path, offset=chunk.offset,
                                                              data=chunk.data, last=chunk.last))
