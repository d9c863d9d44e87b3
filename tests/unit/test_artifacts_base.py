"""The artifact store's contract (artifacts/base.py), one suite run against both backends: the local folder and
S3 (moto in server mode on 127.0.0.1, reached through the same obstore client production uses). What only one
backend does is in test_artifacts_local.py and test_artifacts_s3.py, which share the helpers here."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.s3 import MotoS3, running_moto, s3_options
from tunewire_server import checkpoints
from tunewire_server.artifacts import (
    MARKER,
    ArtifactCorrupt,
    ArtifactKeyError,
    ArtifactNotFound,
    ArtifactStore,
    open_store,
)


class Interrupted(Exception):
    """Raised from a progress callback: the process died mid-upload, as far as the store can tell."""


@dataclass
class Backend:
    name: str
    store: ArtifactStore
    url: str
    options: dict
    server: MotoS3 | None = None
    bucket: str | None = None

    def tamper(self, key: str, data: bytes) -> None:
        """Overwrite a stored object behind the store's back (bit rot, another writer)."""
        if self.server is None:
            Path(self.url, key).write_bytes(data)
        else:
            self.server.client().put_object(Bucket=self.bucket, Key=f"tw-prefix/sub/{key}", Body=data)


@pytest.fixture(scope="module")
def moto():
    with running_moto() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        url = str(tmp_path / "store")
        return Backend("local", open_store(url), url, {})
    server = request.getfixturevalue("moto")
    bucket = server.create_bucket()
    url, options = f"s3://{bucket}/tw-prefix/sub", s3_options(server, bucket)
    return Backend("s3", open_store(url, **options), url, options, server, bucket)


def make_folder(root: Path, seed: int = 0) -> dict[str, bytes]:
    """A unit's worth of files (nested, empty, binary, one over the test part size); {relative path: bytes}."""
    rnd = hashlib.sha256(str(seed).encode()).digest()
    files = {
        "config.json": json.dumps({"seed": seed}).encode(),
        "model.safetensors": (rnd * ((1 << 20) // 32 + 7))[: (1 << 20) + 123],
        "empty.txt": b"",
        "sub/dir/tokenizer.json": b'{"a": 1}' * 100 + bytes([seed % 256]),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def stop_after(n: int):
    seen = []

    def progress(name: str, done: int) -> None:
        seen.append(name)
        if len(seen) >= n:
            raise Interrupted(f"killed after {name}")

    return progress


# units


def test_a_unit_round_trips_byte_identical(backend, tmp_path):
    src = tmp_path / "src"
    files = make_folder(src)
    manifest = backend.store.put_unit(src, "jobs/j1/checkpoints/checkpoint-2")

    assert set(manifest.files) == set(files)
    assert backend.store.list_units("jobs/j1") == ["jobs/j1/checkpoints/checkpoint-2"]
    assert backend.store.exists("jobs/j1/checkpoints/checkpoint-2")
    got = backend.store.get_unit("jobs/j1/checkpoints/checkpoint-2", tmp_path / "cache")
    for name, data in files.items():
        assert (got / name).read_bytes() == data
    assert (got / MARKER).exists()
    assert backend.store.manifest("jobs/j1/checkpoints/checkpoint-2").files == manifest.files


def test_a_signed_checkpoint_marker_travels_as_it_is(backend, tmp_path):
    """The worker's own marker (signed) is the unit's marker: checkpoints.verify accepts the fetched copy."""
    key = b"k" * 32
    src = tmp_path / "checkpoint-4"
    src.mkdir()
    make_folder(src, seed=4)
    checkpoints.mark_complete(src, 4, key)
    manifest = backend.store.put_unit(src, "jobs/j2/checkpoints/checkpoint-4")
    assert manifest.step == 4
    got = backend.store.get_unit("jobs/j2/checkpoints/checkpoint-4", tmp_path / "cache")
    assert checkpoints.verify(got, key) is None
    assert (got / MARKER).read_bytes() == (src / MARKER).read_bytes()


def test_a_folder_whose_marker_lists_other_files_is_refused(backend, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_folder(src)
    checkpoints.mark_complete(src, 1, b"k" * 32)
    (src / "added-later.bin").write_bytes(b"x")
    with pytest.raises(ArtifactCorrupt):
        backend.store.put_unit(src, "jobs/j/model")
    assert not backend.store.exists("jobs/j/model")


def test_an_upload_killed_before_its_marker_is_not_a_unit(backend, tmp_path):
    src = tmp_path / "src"
    make_folder(src)
    with pytest.raises(Interrupted):
        backend.store.put_unit(src, "jobs/j3/model", progress=stop_after(2))

    assert backend.store.list_units() == []
    assert not backend.store.exists("jobs/j3/model")
    with pytest.raises(ArtifactNotFound):
        backend.store.manifest("jobs/j3/model")
    with pytest.raises(ArtifactNotFound):
        backend.store.get_unit("jobs/j3/model", tmp_path / "cache")
    assert not (tmp_path / "cache" / "jobs/j3/model").exists()


def test_a_replace_killed_midway_never_leaves_a_mix(backend, tmp_path):
    """After an interrupted replace the key is the old unit, whole, or no unit; never old and new mixed."""
    old, new = tmp_path / "old", tmp_path / "new"
    old_files = make_folder(old, seed=1)
    make_folder(new, seed=2)
    backend.store.put_unit(old, "jobs/j4/model")
    with pytest.raises(Interrupted):
        backend.store.put_unit(new, "jobs/j4/model", progress=stop_after(3))

    if backend.store.exists("jobs/j4/model"):
        got = backend.store.get_unit("jobs/j4/model", tmp_path / "cache")
        assert {n: (got / n).read_bytes() for n in old_files} == old_files
    else:
        assert backend.store.list_units("jobs/j4") == []
    backend.store.put_unit(new, "jobs/j4/model")  # and a full replace then works
    got = backend.store.get_unit("jobs/j4/model", tmp_path / "cache2")
    assert (got / "config.json").read_bytes() == b'{"seed": 2}'


def test_listing_shows_complete_units_only_by_whole_segments(backend, tmp_path):
    src = tmp_path / "src"
    make_folder(src)
    for key in ("jobs/a/checkpoints/checkpoint-1", "jobs/a/checkpoints/checkpoint-2", "jobs/a/model",
                "jobs/ab/model"):
        backend.store.put_unit(src, key)
    with pytest.raises(Interrupted):
        backend.store.put_unit(src, "jobs/a/checkpoints/checkpoint-3", progress=stop_after(1))
    backend.store.put_file("jobs/a/worker.log", io.BytesIO(b"log"))

    assert backend.store.list_units("jobs/a") == ["jobs/a/checkpoints/checkpoint-1",
                                                  "jobs/a/checkpoints/checkpoint-2", "jobs/a/model"]
    assert backend.store.list_units("jobs/a/checkpoints") == ["jobs/a/checkpoints/checkpoint-1",
                                                              "jobs/a/checkpoints/checkpoint-2"]
    assert backend.store.list_units("nothing/here") == []
    assert len(backend.store.list_units()) == 4


def test_a_fetched_unit_is_checked_against_its_marker(backend, tmp_path):
    src = tmp_path / "src"
    make_folder(src)
    backend.store.put_unit(src, "jobs/j5/model")
    backend.tamper("jobs/j5/model/config.json", b"{}")  # another size than the marker records
    with pytest.raises(ArtifactCorrupt):
        backend.store.get_unit("jobs/j5/model", tmp_path / "cache")
    assert not (tmp_path / "cache" / "jobs/j5/model").exists()


def test_a_cached_unit_is_reused_and_refreshed_when_replaced(backend, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, seed=1)
    make_folder(b, seed=2)
    backend.store.put_unit(a, "jobs/j6/model")
    first = backend.store.get_unit("jobs/j6/model", tmp_path / "cache")
    inode = (first / "model.safetensors").stat().st_ino
    assert backend.store.get_unit("jobs/j6/model", tmp_path / "cache") == first
    assert (first / "model.safetensors").stat().st_ino == inode  # not fetched again
    backend.store.put_unit(b, "jobs/j6/model")
    again = backend.store.get_unit("jobs/j6/model", tmp_path / "cache")
    assert (again / "config.json").read_bytes() == b'{"seed": 2}'
    assert (again / "sub/dir/tokenizer.json").read_bytes() == (b / "sub/dir/tokenizer.json").read_bytes()


# files


def test_ranged_reads_read_only_what_is_asked(backend, tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    backend.store.put_file("datasets/d1.bin", io.BytesIO(data))
    with backend.store.open_file("datasets/d1.bin") as reader:
        assert reader.size == len(data)
        assert reader.read(0, 10) == data[:10]
        assert reader.read(1_000_000, 70_000) == data[1_000_000:1_070_000]
        assert reader.read(len(data) - 5, 100) == data[-5:]
        assert reader.read(len(data), 10) == b""
        chunks = list(reader.chunks(12345, 2 * (1 << 20), chunk_size=256 << 10))
        assert b"".join(chunks) == data[12345:12345 + 2 * (1 << 20)]
        assert max(len(c) for c in chunks) <= 256 << 10
        assert b"".join(reader.chunks(len(data) - 3)) == data[-3:]
    with pytest.raises(ArtifactNotFound):
        backend.store.open_file("datasets/missing.bin")


def test_a_units_files_are_readable_by_key(backend, tmp_path):
    src = tmp_path / "src"
    files = make_folder(src)
    backend.store.put_unit(src, "jobs/j7/model")
    with backend.store.open_file("jobs/j7/model/sub/dir/tokenizer.json") as reader:
        assert reader.read(0, 1 << 20) == files["sub/dir/tokenizer.json"]


def test_files_round_trip_from_a_path_or_a_stream(backend, tmp_path):
    data = os.urandom((5 << 20) + 3)  # over the part size: multipart
    (tmp_path / "up.bin").write_bytes(data)
    from_path = backend.store.put_file("datasets/a.bin", tmp_path / "up.bin")
    with open(tmp_path / "up.bin", "rb") as f:
        from_stream = backend.store.put_file("datasets/b.bin", f)
    sha = hashlib.sha256(data).hexdigest()
    assert from_path.sha256 == from_stream.sha256 == sha
    assert backend.store.stat("datasets/b.bin").size == len(data)
    got = backend.store.get_file("datasets/a.bin", tmp_path / "down.bin", expected_sha256=sha)
    assert got.size == len(data) and (tmp_path / "down.bin").read_bytes() == data
    fetched = backend.store.fetch_file("datasets/b.bin", tmp_path / "cache")
    assert fetched.read_bytes() == data
    small = backend.store.put_file("datasets/small.txt", io.BytesIO(b"hello"))
    assert small.size == 5 and backend.store.exists("datasets/small.txt")


def test_a_download_with_the_wrong_sha256_leaves_the_destination_alone(backend, tmp_path):
    backend.store.put_file("datasets/c.bin", io.BytesIO(b"new content"))
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "c.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ArtifactCorrupt):
        backend.store.get_file("datasets/c.bin", dest, expected_sha256="0" * 64)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == ["c.bin"]  # no temporary file left


def test_an_interrupted_file_upload_leaves_the_old_file(backend, tmp_path):
    backend.store.put_file("datasets/e.bin", io.BytesIO(b"old"))
    with pytest.raises(Interrupted):
        backend.store.put_file("datasets/e.bin", io.BytesIO(os.urandom(3 << 20)), progress=stop_after(1))
    with pytest.raises(Interrupted):
        backend.store.put_file("datasets/f.bin", io.BytesIO(os.urandom(3 << 20)), progress=stop_after(2))
    with backend.store.open_file("datasets/e.bin") as reader:
        assert reader.read(0, 100) == b"old"
    assert not backend.store.exists("datasets/f.bin")


def test_delete_prefix_removes_whole_segments_only(backend, tmp_path):
    src = tmp_path / "src"
    make_folder(src)
    backend.store.put_unit(src, "jobs/x/model")
    backend.store.put_unit(src, "jobs/x/checkpoints/checkpoint-1")
    backend.store.put_file("jobs/x/worker.log", io.BytesIO(b"log"))
    backend.store.put_unit(src, "jobs/xy/model")
    backend.store.put_file("jobs/x.txt", io.BytesIO(b"sibling"))

    removed = backend.store.delete_prefix("jobs/x")
    assert removed == 2 * (len(make_folder(tmp_path / "count")) + 1) + 1
    assert backend.store.list_units() == ["jobs/xy/model"]
    assert not backend.store.exists("jobs/x/worker.log")
    assert backend.store.exists("jobs/x.txt")
    assert backend.store.delete_prefix("jobs/x") == 0
    assert backend.store.delete_prefix("jobs/x.txt") == 1
    with pytest.raises(ArtifactKeyError):
        backend.store.delete_prefix("")


@pytest.mark.parametrize("key", ["/abs", "a/../b", "a//b", "./a", "a\\b"])
def test_keys_must_be_clean_relative_paths(backend, key, tmp_path):
    with pytest.raises(ArtifactKeyError):
        backend.store.put_file(key, io.BytesIO(b"x"))
    with pytest.raises(ArtifactKeyError):
        backend.store.list_units(key)


def test_check_passes_on_a_working_store(backend):
    backend.store.check()


_MEMORY_CHILD = textwrap.dedent("""
    import json, re, sys
    from pathlib import Path
    from tunewire_server.artifacts import open_store

    def kb(field):
        return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

    args = json.loads(sys.argv[1])
    store = open_store(args["url"], **args["options"])
    warm = Path(args["dst"] + ".warm")
    warm.write_bytes(b"w" * (3 << 20))
    store.put_file("warm.bin", warm)  # clients, threads and buffers in place before measuring
    store.get_file("warm.bin", warm)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    base = kb("VmRSS")
    info = store.put_file(args["key"], Path(args["src"]))
    store.get_file(args["key"], Path(args["dst"]), expected_sha256=info.sha256)
    print(json.dumps({"growth_kb": kb("VmHWM") - base, "sha256": info.sha256, "size": info.size}))
""")


def test_a_large_file_streams_through_bounded_memory(backend, tmp_path):
    """20 MiB up (multipart, 1 MiB parts, 2 in flight) and down, in a child process whose peak resident memory
    is measured: it grows by far less than the file (a put or get that held the file would grow by 20 MiB)."""
    size = 20 << 20
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    args = {"url": backend.url, "options": backend.options, "key": "datasets/big.bin", "src": str(src),
            "dst": str(tmp_path / "big.down")}
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, json.dumps(args)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["size"] == size
    assert result["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (tmp_path / "big.down").read_bytes() == src.read_bytes()
    assert result["growth_kb"] < 10 * 1024, result
    if backend.server is not None:  # stored as a multipart upload: its ETag counts the parts
        head = backend.server.client().head_object(Bucket=backend.bucket, Key="tw-prefix/sub/datasets/big.bin")
        assert head["ETag"].strip('"').endswith("-20")


def test_a_missing_source_is_a_local_error_not_a_store_error(backend, tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        backend.store.put_file("datasets/x.bin", tmp_path / "missing.bin")
    assert caught.value.errno is not None  # the local file's own error, not a store's "not found"
    with pytest.raises(ArtifactNotFound):
        backend.store.put_unit(tmp_path / "missing-folder", "jobs/x/model")
    assert not backend.store.exists("datasets/x.bin")
