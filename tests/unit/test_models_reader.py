"""models/reader.py: chunks from offsets, bounded, only manifest files, never through a symlink."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from tests.unit.test_models_support import WEIGHTS, Box
from tunewire_server.errors import FailedPrecondition, InvalidSpec, NotFound
from tunewire_server.models.layout import Form, Which
from tunewire_server.models.reader import MAX_CHUNK, download_chunks, read_chunks
from tunewire_server.models.service import ModelService


@pytest.fixture
def setup(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    model = box.final_model("j1", 3)
    service = ModelService(box.jobs_dir, box.root, box.store, box.root / "cwd")
    return box, model, asyncio.run(service.manifest(job, Which(), Form.AS_TRAINED))


@pytest.mark.parametrize("offset", [0, 1, 999, 1000, 3002, 3003])
def test_a_file_from_any_offset_in_bounded_chunks(setup, offset):
    _, _, m = setup
    chunks = list(read_chunks(m, "model.safetensors", offset, chunk_size=1000))
    assert b"".join(chunks) == WEIGHTS[offset:]
    assert all(len(c) <= 1000 for c in chunks)


def test_the_chunk_size_is_capped(setup):
    _, _, m = setup
    assert [len(c) for c in read_chunks(m, "model.safetensors", 0, chunk_size=1 << 40)] == [len(WEIGHTS)]
    assert MAX_CHUNK <= 4 << 20


def test_a_whole_download_resumed_from_the_clients_offsets(setup, tmp_path):
    _, model, m = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(WEIGHTS[:1234])  # a broken earlier download
    (out / "tokenizer.json").write_bytes((model / "tokenizer.json").read_bytes())  # one file complete
    offsets = {"model.safetensors": 1234, "tokenizer.json": (model / "tokenizer.json").stat().st_size}
    seen = []
    for chunk in download_chunks(m, offsets, chunk_size=500):
        seen.append((chunk.path, chunk.offset, len(chunk.data), chunk.last))
        with open(out / chunk.path, "r+b" if (out / chunk.path).exists() else "wb") as f:
            f.seek(chunk.offset)
            f.write(chunk.data)
    for entry in m.files:
        assert hashlib.sha256((out / entry.path).read_bytes()).hexdigest() == entry.sha256
    assert ("model.safetensors", 1234, 500, False) in seen
    assert ("tokenizer.json", offsets["tokenizer.json"], 0, True) in seen  # whole already: one empty last chunk
    assert sum(n for _, _, n, _ in seen) == m.total_bytes - 1234 - offsets["tokenizer.json"]


@pytest.mark.parametrize("path", ["../model/model.safetensors", "/etc/passwd", "optimizer.pt", "tunewire.json",
                                  "training_args.bin", "tunewire-complete.json", "model.safetensors\0", "", "." * 5000])
def test_paths_outside_the_manifest_are_refused_naming_the_field(setup, path):
    _, _, m = setup
    with pytest.raises(InvalidSpec) as refused:
        list(read_chunks(m, path))
    assert refused.value.violations[0].field == "path"
    assert len(refused.value.message) < 200  # a long path is quoted only in part


@pytest.mark.parametrize("offset", [-1, 3004, 1 << 62])
def test_offsets_outside_the_file_are_refused(setup, offset):
    _, _, m = setup
    with pytest.raises(InvalidSpec) as refused:
        list(read_chunks(m, "model.safetensors", offset))
    assert refused.value.violations[0].field == "offset"
    with pytest.raises(InvalidSpec):
        list(download_chunks(m, {"model.safetensors": offset}))


def test_a_file_swapped_for_a_symlink_after_verification_is_not_followed(setup, tmp_path):
    _, model, m = setup
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * len(WEIGHTS))  # same size, so only the symlink check can refuse it
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").symlink_to(secret)
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        list(read_chunks(m, "model.safetensors"))


def test_a_root_swapped_for_a_symlink_is_not_followed(setup, tmp_path):
    _, model, m = setup
    model.rename(tmp_path / "moved")
    model.symlink_to(tmp_path / "moved")
    with pytest.raises(FailedPrecondition):
        list(read_chunks(m, "model.safetensors"))


def test_a_file_that_changed_size_is_not_sent(setup):
    _, model, m = setup
    (model / "model.safetensors").write_bytes(WEIGHTS + b"more")
    with pytest.raises(FailedPrecondition, match="changed"):
        list(read_chunks(m, "model.safetensors"))


def test_a_deletion_mid_download_finishes_the_open_file_then_ends_with_not_found(setup, tmp_path):
    box, model, m = setup
    chunks = download_chunks(m, chunk_size=1000)
    first = next(chunks)  # config.json, opened and read whole
    assert first.path == "config.json"
    second = next(chunks)  # model.safetensors is open now
    os.rename(box.jobs_dir / "j1", tmp_path / "trashed")
    import shutil

    shutil.rmtree(tmp_path / "trashed")
    rest = []
    with pytest.raises(NotFound, match="gone"):
        for chunk in chunks:
            rest.append(chunk)
    assert b"".join([second.data] + [c.data for c in rest if c.path == "model.safetensors"]) == WEIGHTS


def test_the_event_loop_stream_yields_the_same_chunks_and_closes_early(setup):
    from tunewire_server.models.reader import stream_chunks

    _, _, m = setup

    async def go():
        whole = [c async for c in stream_chunks(m, {"model.safetensors": 10}, chunk_size=700)]
        partial = stream_chunks(m, chunk_size=700)
        first = await anext(partial)
        await partial.aclose()  # a client that went away
        return whole, first

    whole, first = asyncio.run(go())
    assert whole == list(download_chunks(m, {"model.safetensors": 10}, chunk_size=700))
    assert first.path == "config.json" and first.offset == 0
