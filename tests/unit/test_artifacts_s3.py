"""What only the S3 backend does: sha256 checks of every fetched file (a same-size corruption), reads pinned to
an object's ETag, retries then a clear error when the store goes away mid-upload, and a missing bucket."""

from __future__ import annotations

import io

import pytest

from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3, running_moto, s3_options
from tests.unit.test_artifacts_base import make_folder
from tunewire_server.artifacts import (
    ArtifactCorrupt,
    ArtifactStoreMisconfigured,
    ArtifactStoreUnavailable,
    open_store,
)


@pytest.fixture(scope="module")
def moto():
    with running_moto() as server:
        yield server


def test_s3_a_same_size_corruption_is_caught_by_its_sha256(moto, tmp_path):
    bucket = moto.create_bucket()
    store = open_store(f"s3://{bucket}/p", **s3_options(moto, bucket))
    src = tmp_path / "src"
    make_folder(src)
    store.put_unit(src, "jobs/j/model")
    moto.client().put_object(Bucket=bucket, Key="p/jobs/j/model/config.json", Body=b'{"seed": 9}')
    with pytest.raises(ArtifactCorrupt, match="sha256"):
        store.get_unit("jobs/j/model", tmp_path / "cache")


def test_s3_a_file_replaced_while_read_is_not_mixed(moto):
    bucket = moto.create_bucket()
    store = open_store(f"s3://{bucket}", **s3_options(moto, bucket))
    store.put_file("d.bin", io.BytesIO(b"a" * 1000))
    with store.open_file("d.bin") as reader:
        assert reader.read(0, 10) == b"a" * 10
        store.put_file("d.bin", io.BytesIO(b"b" * 1000))
        with pytest.raises(ArtifactCorrupt, match="replaced"):
            reader.read(10, 10)


def test_s3_unreachable_mid_upload_retries_then_fails_clearly_and_marks_nothing(tmp_path):
    server = MotoS3().start()
    try:
        bucket = server.create_bucket()
        store = open_store(f"s3://{bucket}/p", **s3_options(server, bucket, max_retries=2))
        src = tmp_path / "src"
        make_folder(src)
        store.put_unit(src, "jobs/j/checkpoints/checkpoint-1")

        def cut_off(name: str, done: int) -> None:
            server.stop()  # the store goes away after the first file

        with pytest.raises(ArtifactStoreUnavailable) as caught:
            store.put_unit(src, "jobs/j/checkpoints/checkpoint-2", progress=cut_off)
        message = str(caught.value)
        assert "jobs/j/checkpoints/checkpoint-2" in message and server.endpoint in message
        assert "after 2 retries" in message  # obstore's own account of the retries it made
        assert len(message) < 1024

        with pytest.raises(ArtifactStoreUnavailable):
            store.check()
        with pytest.raises(ArtifactStoreUnavailable):
            store.list_units()

        server.restart()  # same port, same buckets: what did the cut-off upload leave?
        assert store.list_units("jobs/j") == ["jobs/j/checkpoints/checkpoint-1"]
        assert not store.exists("jobs/j/checkpoints/checkpoint-2")
    finally:
        server.stop()


def test_s3_check_names_a_missing_bucket(moto):
    store = open_store("s3://no-such-bucket-here/p", **s3_options(moto, "no-such-bucket-here"))
    with pytest.raises(ArtifactStoreMisconfigured, match="does not exist"):
        store.check()




def test_s3_a_write_to_a_missing_bucket_is_a_configuration_error(moto, tmp_path):
    store = open_store("s3://no-such-bucket-here", **s3_options(moto, "no-such-bucket-here"))
    with pytest.raises(ArtifactStoreMisconfigured, match="does not exist"):
        store.put_file("datasets/x", io.BytesIO(b"x"))


def test_s3_credentials_region_and_endpoint_come_from_the_standard_variables(moto, monkeypatch, tmp_path):
    bucket = moto.create_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    store = open_store(f"s3://{bucket}/from-env")
    assert store.endpoint == moto.endpoint
    store.check()
    store.put_file("a.txt", io.BytesIO(b"hello"))
    assert moto.client().get_object(Bucket=bucket, Key="from-env/a.txt")["Body"].read() == b"hello"
