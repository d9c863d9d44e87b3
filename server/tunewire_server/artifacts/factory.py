"""The artifact store a setting names: a folder path (the default) or s3://bucket/prefix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

from tunewire_server.artifacts.base import ArtifactStore
from tunewire_server.artifacts.errors import ArtifactStoreMisconfigured
from tunewire_server.artifacts.local import LocalArtifactStore


def open_store(url: str | Path, **s3_options) -> ArtifactStore:
    """The store for `url`: a folder path or file:///path (LocalArtifactStore), or s3://bucket[/prefix]
    (S3ArtifactStore; `s3_options` are S3Options fields: endpoint_url, region, part_size, max_retries, ...).
    Nothing is contacted here: call `check()` at startup. ArtifactStoreMisconfigured for anything else."""
    text = str(url).strip()
    if not text:
        raise ArtifactStoreMisconfigured("the artifact store setting is empty (a folder or s3://bucket/prefix)")
    parts = urlsplit(text)
    if parts.scheme in ("s3", "s3a"):
        from tunewire_server.artifacts.s3 import S3ArtifactStore, S3Options  # obstore only when used

        if not parts.netloc:
            raise ArtifactStoreMisconfigured(f"{text[:80]!r} names no bucket (s3://bucket/prefix)")
        if parts.query or parts.fragment:
            raise ArtifactStoreMisconfigured(f"{text[:80]!r}: options go in settings, not in the URL")
        known = {f.name for f in dataclasses.fields(S3Options)} - {"bucket", "prefix"}
        unknown = sorted(set(s3_options) - known)
        if unknown:
            raise ArtifactStoreMisconfigured(f"unknown S3 options {unknown}")
        options = {k: v for k, v in s3_options.items() if v is not None}
        return S3ArtifactStore(S3Options(bucket=parts.netloc, prefix=parts.path.strip("/"), **options))
    if parts.scheme == "file":
        return LocalArtifactStore(Path(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # "C:" is a drive, not a scheme
        raise ArtifactStoreMisconfigured(f"artifact store {text[:80]!r}: use a folder path or s3://bucket/prefix, "
                                         f"not {parts.scheme}://")
    return LocalArtifactStore(Path(text))
