"""The artifact store's own exceptions (no grpc here; api/status.py maps them once they are wired in).

Suggested statuses: ArtifactNotFound → NOT_FOUND; ArtifactCorrupt → FAILED_PRECONDITION (DATA_LOSS would also
fit); ArtifactStoreUnavailable → UNAVAILABLE (a training job that cannot save fails SYSTEM with it);
ArtifactStoreMisconfigured → a startup error (exit non-zero) or INTERNAL if met later; ArtifactKeyError →
INTERNAL (keys are built by the server, never taken from a client as they are).
"""

from __future__ import annotations


class ArtifactError(Exception):
    """Base class of every error the artifact store raises."""


class ArtifactKeyError(ArtifactError, ValueError):
    """A key that is not a clean relative path ("a/b/c": no leading slash, no "." or ".." parts)."""


class ArtifactNotFound(ArtifactError):
    """Nothing at that key: no such file, or no COMPLETE unit (a unit without its marker is not one)."""


class ArtifactCorrupt(ArtifactError):
    """A unit or file is there but does not match its marker (size, sha256, missing file), or changed while
    it was read."""


class ArtifactStoreUnavailable(ArtifactError):
    """The object store could not be reached or kept failing after the retries; nothing was marked complete."""


class ArtifactStoreMisconfigured(ArtifactError):
    """The store's settings are wrong: an unknown URL scheme, a missing bucket, credentials refused."""
