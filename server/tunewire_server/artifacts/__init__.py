"""The artifact store: checkpoints, final models, uploaded datasets and logs, in a local folder (default) or
S3-compatible object storage. No torch, no grpc; obstore is imported only when an S3 store is opened.

    store = open_store(settings.artifacts, endpoint_url=..., region=...)
    store.check()                                        # at startup
    store.put_unit(folder, "jobs/<id>/checkpoints/checkpoint-10")   # files first, marker last
    path = store.get_unit("jobs/<id>/model", cache_root)            # a complete, checked local copy
"""

from tunewire_server.artifacts.base import ArtifactReader, ArtifactStore, ObjectInfo, Progress
from tunewire_server.artifacts.errors import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactKeyError,
    ArtifactNotFound,
    ArtifactStoreMisconfigured,
    ArtifactStoreUnavailable,
)
from tunewire_server.artifacts.factory import open_store
from tunewire_server.artifacts.keys import join_key
from tunewire_server.artifacts.local import LocalArtifactStore
from tunewire_server.artifacts.unit import MARKER, FileEntry, UnitManifest

__all__ = [
    "MARKER", "ArtifactCorrupt", "ArtifactError", "ArtifactKeyError", "ArtifactNotFound", "ArtifactReader",
    "ArtifactStore", "ArtifactStoreMisconfigured", "ArtifactStoreUnavailable", "FileEntry",
    "LocalArtifactStore", "ObjectInfo", "Progress", "UnitManifest", "join_key", "open_store",
]
