"""/v1/files: the uploaded datasets (datasets/uploads.py, datasets/catalog.py) as OpenAI file objects.
A file's id is its dataset id ("ds-" and its sha256). POST takes multipart form data (`file`, `purpose`
"fine-tune"): the multipart parser spools the file part to a temporary file on disk (never the whole body in
memory), its size and sha256 are taken in one pass, and its bytes go through the same upload path as gRPC's
UploadDataset, validated on arrival; the same bytes uploaded twice are one file."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import BinaryIO

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from tunewire_server.datasets import layout
from tunewire_server.errors import FieldViolation, InvalidSpec, NotFound
from tunewire_server.store import DatasetRecord

router = APIRouter()
PURPOSES = ("fine-tune",)
READ_BLOCK = 1024 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 20, 10_000
FORM_OVERHEAD = 64 * 1024  # the multipart framing and the other fields around the file's bytes


def file_object(record: DatasetRecord) -> dict:
    return {"object": "file", "id": record.id, "bytes": record.size, "created_at": int(record.created_at),
            "filename": record.name, "purpose": "fine-tune", "status": "processed", "status_details": None,
            "expires_at": None}


def _measure(f: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of a spooled file, read in blocks."""
    f.seek(0)
    hasher, size = hashlib.sha256(), 0
    while block := f.read(READ_BLOCK):
        hasher.update(block)
        size += len(block)
    f.seek(0)
    return size, hasher.hexdigest()


def _name_and_format(filename: str | None) -> tuple[str, str]:
    """The dataset name (the file name, any path dropped) and format (by extension; JSONL otherwise)."""
    name = (filename or "upload.jsonl").replace("\\", "/").rsplit("/", 1)[-1] or "upload.jsonl"
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return name, layout.EXTENSIONS.get(suffix, "jsonl")


def _as_file_error(exc: InvalidSpec) -> InvalidSpec:
    """An upload header's field violation named as the request's `file` parameter."""
    first = exc.violations[0]
    return InvalidSpec(FieldViolation("file", f"{first.field}: {first.description}"))


async def store_upload(face, upload: UploadFile) -> DatasetRecord:
    """Put a received file part through Uploads: header, chunks, finish (validation and the report)."""
    size, sha256 = await asyncio.to_thread(_measure, upload.file)
    if size == 0:
        raise InvalidSpec(FieldViolation("file", "is empty"))
    if size > face.settings.max_upload_bytes:
        raise InvalidSpec(FieldViolation("file", f"is {size} bytes; this server takes files of at most "
                                                 f"{face.settings.max_upload_bytes} bytes (max_upload_bytes)"))
    name, fmt = _name_and_format(upload.filename)
    uploads = face.uploads
    try:
        header = uploads.check_header(f"http-{uuid.uuid4().hex}", name, fmt, size, sha256)
        stream = await uploads.open(header)
        try:
            while block := await asyncio.to_thread(upload.file.read, uploads.chunk_limit):
                await stream.write(stream.offset, block)
            return await stream.finish()
        except BaseException:
            # the whole file was here: nothing to resume, so a refused upload leaves no partial bytes behind
            if stream.session is not None and stream.session.owner == stream.token:
                await uploads.discard(stream.session)
            raise
    except InvalidSpec as exc:
        raise _as_file_error(exc) from None


@router.post("/v1/files")
async def create_file(request: Request) -> dict:
    face = request.app.state.face
    limit = face.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:  # refused before a byte is spooled
        raise InvalidSpec(FieldViolation("file", f"the request is {declared} bytes; this server takes files of at "
                                                 f"most {limit} bytes (max_upload_bytes)"))
    form = await request.form(max_files=1, max_fields=8)
    try:
        purpose = form.get("purpose")
        if purpose not in PURPOSES:
            raise InvalidSpec(FieldViolation("purpose", f"must be one of {list(PURPOSES)}, got {purpose!r}"))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidSpec(FieldViolation("file", "is required: the file as a multipart part named `file`"))
        return file_object(await store_upload(face, upload))
    finally:
        await form.close()


@router.get("/v1/files")
async def list_files(request: Request, purpose: str | None = None, limit: int = DEFAULT_LIMIT,
                     after: str | None = None, order: str = "desc") -> dict:
    face = request.app.state.face
    if order != "desc":
        raise InvalidSpec(FieldViolation("order", "only desc (newest first) is supported"))
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidSpec(FieldViolation("limit", f"must be 1..{MAX_LIMIT}"))
    if purpose not in (None, *PURPOSES):
        return {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}
    before = face.catalog.get(after).ordinal if after else None
    records = face.manager.store.list_datasets(before, limit + 1)
    data = [file_object(r) for r in records[:limit]]
    return {"object": "list", "data": data, "has_more": len(records) > limit,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def _record(face, file_id: str) -> DatasetRecord:
    try:
        return face.catalog.get(file_id)
    except InvalidSpec:
        raise NotFound(f"no file {file_id[:80]!r}") from None


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request) -> dict:
    return file_object(_record(request.app.state.face, file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> FileResponse:
    face = request.app.state.face
    record = _record(face, file_id)
    path = face.catalog.path(record)
    if not path.is_file():
        raise NotFound(f"file {record.id} has no content on this replica")
    return FileResponse(path, media_type="application/octet-stream", filename=record.name)


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> dict:
    face = request.app.state.face
    record = _record(face, file_id)
    if not await face.catalog.delete(record.id):
        raise NotFound(f"no file {record.id}")
    return {"object": "file", "id": record.id, "deleted": True}
