"""The shared artifact store as the service uses it: opened from settings (or from a job request, in a
worker), and a unit fetched into a given local folder.

With the `artifacts` setting empty (the default), there is no shared store: everything stays in the local
data folder as it always did, and nothing here is called. Otherwise checkpoints, final models and uploaded
datasets are copied into the store as they are made, and fetched back on a replica that lacks them:

    jobs/<id>/checkpoints/checkpoint-N     a checkpoint (unit: its files, then its marker)
    jobs/<id>/model                        the final model (unit)
    datasets/<sha256>.<format>             an uploaded dataset (file)
    jobs/<id>/merged/<final|checkpoint-N>  a merged form a download asked for (unit; models/shared.py)

The server checks the store when it starts (check_at_start) and exits non-zero when it cannot be used.

No torch, no grpc: the control plane and the training worker both use it.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from pathlib import Path

from tunewire_server.artifacts import ArtifactError, ArtifactStore, ArtifactStoreUnavailable, open_store
from tunewire_server.checkpoints import MARKER

CACHE_DIR = ".artifacts-cache"  # beside a destination: where a unit is fetched before its one rename
S3_FIELDS = ("s3_endpoint_url", "s3_region", "s3_part_size", "s3_max_concurrency", "s3_max_retries",
             "s3_retry_timeout_s")


def checkpoint_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/checkpoints/{name}"


def checkpoints_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints"


def model_key(job_id: str) -> str:
    return f"jobs/{job_id}/model"


def dataset_key(file_name: str) -> str:
    """An uploaded dataset's key from its stored file name (<sha256>.<format>): the format travels with it, so
    a replica that has only the dataset id finds the object without the database."""
    return f"datasets/{file_name}"


def options_of(source) -> dict:
    """open_store's S3 keyword options from anything with the s3_* attributes (Settings, JobRequest)."""
    return {"endpoint_url": source.s3_endpoint_url or None, "region": source.s3_region or None,
            "part_size": source.s3_part_size, "max_concurrency": source.s3_max_concurrency,
            "max_retries": source.s3_max_retries, "retry_timeout_s": source.s3_retry_timeout_s}


def open_shared(source) -> ArtifactStore | None:
    """The shared store `source` (Settings or a JobRequest) names, or None when its `artifacts` is empty.
    One store object per distinct setting in a process (the S3 client keeps its connections)."""
    url = (source.artifacts or "").strip()
    if not url:
        return None
    options = options_of(source)
    return _open(url, tuple(sorted(options.items())) if url.startswith(("s3://", "s3a://")) else ())


@functools.lru_cache(maxsize=8)
def _open(url: str, options: tuple) -> ArtifactStore:
    return open_store(url, **dict(options))


def fetch_unit(store: ArtifactStore, key: str, dest: Path) -> Path:
    """Make `dest` a complete local copy of the unit `key` (files checked against its marker on the way) and
    return it. `dest` already holding this very marker is kept as it is. The copy is made in a cache folder
    beside `dest` and put in place by one rename, so `dest` is never half there. ArtifactNotFound when the
    store has no complete unit at `key`."""
    dest = Path(dest)
    manifest = store.manifest(key)
    if _holds(dest, manifest.marker):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    cache = dest.parent / f"{CACHE_DIR}-{token}"  # one per call: concurrent fetches never share a folder
    staged = dest.parent / f".{dest.name}.fetch-{token}"
    try:
        fetched = Path(store.get_unit(key, cache))
        if fetched.is_relative_to(cache):
            os.rename(fetched, staged)
        else:  # a folder store hands back its own folder (no copy): copy it, never move the store's unit
            shutil.copytree(fetched, staged, symlinks=False)
        if not _holds(dest, manifest.marker):  # another fetch may have put the same unit there meanwhile
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(staged, dest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return dest


def _holds(dest: Path, marker: bytes) -> bool:
    try:
        return (dest / MARKER).read_bytes() == marker
    except OSError:
        return False


def check_at_start(settings) -> ArtifactStore | None:
    """The shared store the settings name, checked (a probe object written, read back and deleted), or None
    when `artifacts` is empty. ValueError naming the setting when it cannot be used, so that the server
    exits non-zero at start instead of failing its first upload or fetch."""
    url = (settings.artifacts or "").strip()
    if not url:
        return None
    try:
        store = open_shared(settings)
        store.check()
    except ArtifactStoreUnavailable as exc:
        raise ValueError(f"artifacts: the artifact store {url} cannot be reached ({exc}); is s3_endpoint_url "
                         f"({settings.s3_endpoint_url or 'AWS'}) right and reachable?") from None
    except ArtifactError as exc:
        raise ValueError(f"artifacts: the artifact store {url} cannot be used ({exc}); check the bucket and "
                         "prefix in `artifacts`, s3_endpoint_url and the credentials (AWS_ACCESS_KEY_ID, "
                         "AWS_SECRET_ACCESS_KEY)") from None
    return store
