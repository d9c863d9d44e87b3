"""tunewire_server.datasets.uploads on a real SQLite store and real files: sessions, resume (after a server
restart too), takeover by a second stream, the size and disk limits, and what is left after a failure."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests import tiny
from tunewire_server.config import Settings
from tunewire_server.datasets import layout
from tunewire_server.datasets.uploads import Uploads
from tunewire_server.errors import FailedPrecondition, InvalidSpec, ResourceExhausted
from tunewire_server.store import SQLiteStore

DATA = "".join(f'{{"text": "row {i}", "label": "{"pos" if i % 2 else "neg"}"}}\n' for i in range(200)).encode()


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", min_free_disk_mb=0)


@pytest.fixture
def store(settings):
    store = SQLiteStore(settings.db_path)
    yield store
    store.close()


def files(settings) -> list[str]:
    return sorted(str(p.relative_to(settings.upload_dir)) for p in settings.upload_dir.rglob("*") if p.is_file())


def header(uploads: Uploads, data: bytes = DATA, upload_id: str = "up-1", **kw):
    fields = {"name": "train.jsonl", "fmt": None, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **kw}
    return uploads.check_header(upload_id, **fields)


async def send(uploads: Uploads, head, data: bytes, start: int, end: int, piece: int = 1000, finish: bool = False):
    stream = await uploads.open(head)
    try:
        for offset in range(start, end, piece):
            await stream.write(offset, data[offset:min(offset + piece, end)])
        return await stream.finish() if finish else stream.offset
    finally:
        stream.release()


def test_an_upload_in_two_streams_is_published_by_its_sha256(settings, store):
    async def run():
        uploads = Uploads(settings, store)
        head = header(uploads)
        assert (await uploads.start(head)).offset == 0
        assert await send(uploads, head, DATA, 0, 3000) == 3000
        assert (await uploads.start(head)).offset == 3000
        assert files(settings) == ["partial/up-1.part"]
        return await send(uploads, head, DATA, 3000, len(DATA), finish=True)

    record = asyncio.run(run())
    sha = hashlib.sha256(DATA).hexdigest()
    assert (record.id, record.size, record.format, record.report["num_rows"]) == (f"ds-{sha}", len(DATA), "jsonl", 200)
    assert files(settings) == [f"datasets/{sha}.jsonl"] and store.get_upload("up-1") is None
    assert (settings.upload_dir / "datasets" / f"{sha}.jsonl").read_bytes() == DATA


def test_an_upload_resumes_after_a_restart_hashing_what_it_held_from_disk(settings, store):
    async def run():
        await send(Uploads(settings, store), header(Uploads(settings, store)), DATA, 0, 5000)
        restarted = Uploads(settings, store)  # no live state: the partial file and the stored upload remain
        head = header(restarted)
        assert (await restarted.start(head)).offset == 5000
        return await send(restarted, head, DATA, 5000, len(DATA), finish=True)

    assert asyncio.run(run()).sha256 == hashlib.sha256(DATA).hexdigest()


def test_bytes_changed_on_disk_while_held_fail_the_sha256_and_nothing_is_kept(settings, store):
    async def run():
        uploads = Uploads(settings, store)
        await send(uploads, header(uploads), DATA, 0, 5000)
        part = layout.partial_path(settings.upload_dir, "up-1")
        part.write_bytes(b"X" * 5000)  # the disk lost what it held (a restart hashes what is there)
        restarted = Uploads(settings, store)
        with pytest.raises(InvalidSpec) as info:
            await send(restarted, header(restarted), DATA, 5000, len(DATA), finish=True)
        return info.value

    error = asyncio.run(run())
    assert error.violations[0].field == "header.sha256"
    assert files(settings) == [] and store.get_upload("up-1") is None


def test_a_second_stream_takes_the_upload_over_and_the_first_may_send_no_more(settings, store):
    async def run():
        uploads = Uploads(settings, store)
        head = header(uploads)
        first = await uploads.open(head)
        await first.write(0, DATA[:100])
        second = await uploads.open(head)
        with pytest.raises(FailedPrecondition):
            await first.write(100, DATA[100:200])
        first.release()  # the old stream letting go does not close the new one's file
        await second.write(100, DATA[100:])
        return await second.finish()

    assert asyncio.run(run()).size == len(DATA)


def test_the_same_content_again_is_found_before_a_byte_is_sent(settings, store):
    async def run():
        uploads = Uploads(settings, store)
        first = await send(uploads, header(uploads), DATA, 0, len(DATA), finish=True)
        again = await uploads.start(header(uploads, upload_id="up-2", name="copy.jsonl"))
        stream = await uploads.open(header(uploads, upload_id="up-3", name="copy.jsonl"))
        await stream.write(0, b"ignored")
        return first, again, await stream.finish()

    async def wrong_size():
        uploads = Uploads(settings, store)
        with pytest.raises(InvalidSpec) as info:
            await uploads.start(header(uploads, upload_id="up-4", size=len(DATA) + 1))
        return info.value

    first, again, third = asyncio.run(run())
    assert asyncio.run(wrong_size()).violations[0].field == "header.size_bytes"
    assert again.dataset == first == third and again.offset == len(DATA)
    assert files(settings) == [f"datasets/{first.sha256}.jsonl"]
    assert store.get_upload("up-2") is None and store.get_upload("up-3") is None


def test_one_upload_id_names_one_file(settings, store):
    async def run():
        uploads = Uploads(settings, store)
        await uploads.start(header(uploads))
        with pytest.raises(InvalidSpec) as info:
            await uploads.start(header(uploads, DATA[:10]))
        return info.value

    assert asyncio.run(run()).violations[0].field == "header.upload_id"


@pytest.mark.parametrize("kw, field", [
    ({"size": 0}, "header.size_bytes"), ({"sha256": "abc"}, "header.sha256"), ({"name": "a/b"}, "header.name"),
    ({"name": "notes.txt"}, "header.format"), ({"label_column": "a\x00"}, "header.label_column"),
])
def test_a_header_is_checked_field_by_field(settings, store, kw, field):
    with pytest.raises(InvalidSpec) as info:
        header(Uploads(settings, store), **kw)
    assert info.value.violations[0].field == field


def test_a_chunk_over_the_limit_is_refused_and_the_upload_kept(tmp_path, store):
    settings = Settings(data_dir=tmp_path / "data", min_free_disk_mb=0, max_upload_chunk_bytes=100)

    async def run():
        uploads = Uploads(settings, store)
        stream = await uploads.open(header(uploads))
        with pytest.raises(InvalidSpec) as info:
            await stream.write(0, DATA[:101])
        await stream.write(0, DATA[:100])
        stream.release()
        return info.value, (await uploads.start(header(uploads))).offset

    error, offset = asyncio.run(run())
    assert error.violations[0].field == "chunk.data" and offset == 100


def test_past_the_size_cap_nothing_is_begun(tmp_path, store):
    settings = Settings(data_dir=tmp_path / "data", min_free_disk_mb=0, max_upload_bytes=len(DATA) - 1)
    with pytest.raises(ResourceExhausted):
        header(Uploads(settings, store))
    assert store.get_upload("up-1") is None


def test_falling_below_the_disk_floor_mid_upload_removes_the_partial_upload(tmp_path, store):
    settings = Settings(data_dir=tmp_path / "data", min_free_disk_mb=1)
    free = {"bytes": 1 << 30}  # what the file system reports as free; another writer fills it meanwhile

    async def run():
        uploads = Uploads(settings, store, free_bytes=lambda path: free["bytes"])
        stream = await uploads.open(header(uploads))
        await stream.write(0, DATA[:1000])
        free["bytes"] = 1024 * 1024 + 500  # 500 bytes above the floor: the next 1000 would go below it
        with pytest.raises(ResourceExhausted) as info:
            await stream.write(1000, DATA[1000:2000])
        return info.value

    assert "min_free_disk_mb" in asyncio.run(run()).message
    assert files(settings) == [] and store.get_upload("up-1") is None


def test_a_file_that_does_not_parse_is_not_kept(settings, store, tmp_path):
    data = tiny.write_jsonl(tmp_path / "x.jsonl", tiny.sentiment_rows(4)).read_bytes() + b"not json\n"

    async def run():
        uploads = Uploads(settings, store)
        with pytest.raises(InvalidSpec) as info:
            await send(uploads, header(uploads, data), data, 0, len(data), finish=True)
        return info.value

    error = asyncio.run(run())
    assert error.violations[0].field == "header.format" and "row 5" in error.message
    assert files(settings) == [] and store.get_upload("up-1") is None


def test_a_stored_file_without_its_record_is_removed_at_start(settings, store):
    async def run():
        uploads = Uploads(settings, store)
        return await send(uploads, header(uploads), DATA, 0, len(DATA), finish=True)

    record = asyncio.run(run())
    orphan = settings.upload_dir / "datasets" / ("c" * 64 + ".csv")  # renamed, then the server died
    orphan.write_text("a\n1\n")
    Uploads(settings, store)
    assert files(settings) == [f"datasets/{record.file_name}"]
