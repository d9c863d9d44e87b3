"""open_store: the artifact store a setting names."""

from __future__ import annotations

import pytest

from tunewire_server.artifacts import ArtifactStoreMisconfigured, LocalArtifactStore, open_store


def test_open_store_reads_the_url(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalArtifactStore)
    assert open_store(f"file://{tmp_path}").root == tmp_path
    s3 = open_store("s3://bucket-name/some/prefix/", endpoint_url="http://127.0.0.1:1", region="us-east-1",
                    access_key_id="a", secret_access_key="b")
    assert s3.url == "s3://bucket-name/some/prefix"
    for bad in ("", "gs://bucket/x", "s3:///prefix-without-bucket", "s3://b/p?region=x"):
        with pytest.raises(ArtifactStoreMisconfigured):
            open_store(bad)
    with pytest.raises(ArtifactStoreMisconfigured, match="unknown S3 options"):
        open_store("s3://bucket-name", endpoint="http://x")


def test_open_store_passes_s3_options_through():
    store = open_store("s3://bucket-name", endpoint_url="http://127.0.0.1:1", part_size=16 << 20, max_retries=7,
                       region="eu-west-1", access_key_id="a", secret_access_key="b", init_backoff_s=None)
    assert store.options.part_size == 16 << 20 and store.options.max_retries == 7
    assert store.options.init_backoff_s == 0.1  # None means "the default"
    assert store.options.prefix == ""
