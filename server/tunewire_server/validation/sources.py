"""Where a dataset comes from (hub, file under the dataset root, inline rows, or an uploaded dataset): checked and resolved
into the DatasetPlan the worker loads. The rows themselves are scanned later (dataset_scan.scan_dataset).
"""

from __future__ import annotations

import os

from tunewire.v1 import job_pb2
from tunewire_server.artifacts import ArtifactError, ArtifactNotFound
from tunewire_server.config import Settings
from tunewire_server.datasets import layout
from tunewire_server.errors import InvalidSpec, Unavailable, preview
from tunewire_server.shared_store import dataset_key, open_shared
from tunewire_server.validation import dataset_scan, limits
from tunewire_server.validation.common import FILE_FORMATS, DatasetPlan, Violations
from tunewire_server.validation.dataset_scan import DatasetProblem
from tunewire_server.validation.paths import UnsafePath, looks_like_hub_id, open_regular, resolve_under


def check_dataset_source(ds: job_pb2.Dataset, field: str, default_split: str, settings: Settings,
                          v: Violations) -> DatasetPlan | None:
    source = ds.WhichOneof("source")
    if source is None:
        v.add(field, "set one source: hub, file, inline or uploaded")
        return None
    if source == "uploaded":
        return _uploaded(ds, field, settings, v)
    if source == "hub":
        name = ds.hub.name
        if not looks_like_hub_id(name) or "/" not in name:
            # A bare name ("text", "json", "imdb") would also name one of the datasets library's local
            # builders or a folder beside the worker, which read files the server never meant to give out.
            v.add(f"{field}.hub.name", f"not a hub dataset id 'owner/name' (e.g. 'stanfordnlp/imdb'): {preview(name)}")
            return None
        return DatasetPlan("hub", name=name, config=ds.hub.config or None, split=ds.hub.split or default_split,
                           max_samples=ds.max_samples)
    if source == "inline":
        if len(ds.inline.rows) > settings.max_inline_rows:
            v.add(f"{field}.inline.rows",
                  f"has {len(ds.inline.rows)} rows; at most {settings.max_inline_rows} may be sent inline")
            return None
        size = ds.inline.ByteSize()
        if size > settings.max_inline_bytes:
            v.add(f"{field}.inline.rows", f"are {size} bytes; at most {settings.max_inline_bytes} may be sent inline "
                  "(put larger data in a file under the dataset root)")
            return None
        rows = limits.rows_of(ds, field, v.add)
        if rows is None:
            return None
        if not rows:
            v.add(f"{field}.inline.rows", "has no rows")
            return None
        return DatasetPlan("inline", rows=rows, max_samples=ds.max_samples)
    # file
    pfield = f"{field}.file.path"
    try:
        path = resolve_under(settings.dataset_root, ds.file.path)
    except UnsafePath as exc:
        v.add(pfield, str(exc))
        return None
    shown = preview(ds.file.path)
    try:
        if not path.exists():
            v.add(pfield, f"no file {shown} under the dataset root")
            return None
        fd = open_regular(path)  # never blocks: a FIFO or device is refused without reading it
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except UnsafePath as exc:
        v.add(pfield, f"{shown} {exc}")
        return None
    except OSError as exc:
        v.add(pfield, f"{shown} cannot be read: {exc.strerror or type(exc).__name__}")
        return None
    if size > settings.max_dataset_bytes:
        v.add(pfield, f"{shown} is {size} bytes; the limit is {settings.max_dataset_bytes}")
        return None
    try:
        fmt = dataset_scan.format_for(path, FILE_FORMATS.get(ds.file.format))
    except DatasetProblem as exc:
        v.add(f"{field}.file.format", str(exc))
        return None
    return DatasetPlan("file", path=str(path), format=fmt, max_samples=ds.max_samples,
                       root=str(settings.dataset_root), relative=ds.file.path, max_bytes=settings.max_dataset_bytes)


def _uploaded(ds: job_pb2.Dataset, field: str, settings: Settings, v: Violations) -> DatasetPlan | None:
    """An uploaded dataset's stored file, planned as a file: the same checks and the same safe open."""
    ifield = f"{field}.uploaded.dataset_id"
    try:
        dataset_id = layout.check_dataset_id(ds.uploaded.dataset_id, ifield)
    except InvalidSpec as exc:
        v.items.extend(exc.violations)
        return None
    found = layout.find_stored(settings.upload_dir, dataset_id)
    before = len(v.items)
    if found is None:
        found = _fetch_shared(settings, dataset_id, ifield, v)
    if found is None:
        if len(v.items) > before:  # the stored file is there but refused (too large)
            return None
        v.add(ifield, f"no uploaded dataset {dataset_id} (ListDatasets shows those there are)")
        return None
    file_name, fmt = found
    root = layout.datasets_dir(settings.upload_dir)
    try:
        size = (root / file_name).stat().st_size
    except OSError:  # deleted since it was found
        v.add(ifield, f"no uploaded dataset {dataset_id} (ListDatasets shows those there are)")
        return None
    if size > settings.max_dataset_bytes:
        v.add(ifield, f"dataset {dataset_id} is {size} bytes; the limit for jobs is {settings.max_dataset_bytes}")
        return None
    return DatasetPlan("file", path=str(root / file_name), format=fmt, max_samples=ds.max_samples,
                       root=str(root), relative=file_name, max_bytes=settings.max_dataset_bytes)


def _fetch_shared(settings: Settings, dataset_id: str, field: str, v: Violations) -> tuple[str, str] | None:
    """An uploaded dataset this replica has no copy of (another replica took the upload): fetched from the
    shared artifact store into the upload dir's datasets folder, where it is then used like a local upload.
    None when there is no shared store or it holds no such file."""
    store = open_shared(settings)
    if store is None:
        return None
    sha256 = dataset_id.removeprefix(layout.ID_PREFIX)
    root = layout.datasets_dir(settings.upload_dir)
    for fmt in layout.FORMATS:
        name = layout.stored_file_name(sha256, fmt)
        try:
            info = store.stat(dataset_key(name))
            if info.size > settings.max_dataset_bytes:
                v.add(field, f"dataset {dataset_id} is {info.size} bytes; the limit for jobs is {settings.max_dataset_bytes}")
                return None
            root.mkdir(parents=True, exist_ok=True)
            store.get_file(dataset_key(name), root / name, expected_sha256=sha256)
        except ArtifactNotFound:
            continue
        except ArtifactError as exc:
            raise Unavailable(f"{field}: dataset {dataset_id} is not on this replica and the shared artifact "
                              f"store cannot be read now ({type(exc).__name__})") from None
        return name, fmt
    return None
