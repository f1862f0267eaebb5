"""POST /v1/artifacts (raw stream or multipart), GET /v1/artifacts/{sha256} and its /content."""

import json
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.concurrency import run_in_threadpool

from app.artifacts import service
from app.artifacts.names import MAX_NAME_CHARS, checked_filename
from app.artifacts.schemas import ArtifactOut
from app.artifacts.store import UploadError
from app.artifacts.streaming import MAX_FIELD_BYTES, MAX_FIELDS, stream_multipart, stream_raw
from app.auth import Tenant
from app.deps import AppSettings, DbSession, Store
from app.problems import Problem, problem_responses

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
SHA256_RE = r"^[0-9a-fA-F]{64}$"
ExpectedSha = Annotated[str | None, Query(pattern=SHA256_RE, description="Refuse (422, nothing kept) unless the bytes hash to this.")]
# Documented, and checked by checked_filename (whose 422 names the characters): no control character (Unicode Cc).
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"
LOCATION = {"Location": {"description": "The artifact's URL", "required": True, "schema": {"type": "string"}}}
# Text fields of a multipart upload other than `file` are read and ignored, within the multipart limits
# (app.artifacts.streaming): at most MAX_FIELDS of them, each at most MAX_FIELD_BYTES long (bytes: not a JSON Schema
# length, which counts characters; a longer one is a 400).
OTHER_FIELDS = {"type": "string", "description": f"ignored; at most {MAX_FIELD_BYTES} bytes (UTF-8)"}


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse early when the client announces a body over the limit; the stream is still counted."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:  # slack for multipart framing
        raise Problem(413, "Upload too large", f"Content-Length {length} exceeds the limit of {limit} bytes.")


def as_problem(exc: UploadError) -> Problem:
    return Problem(exc.status, exc.title, str(exc))


@router.post(
    "",
    status_code=201,
    response_model=ArtifactOut,
    summary="Upload an artifact (model or dataset)",
    description="Send the file as the raw request body (`application/octet-stream`, name in `?filename=`), "
    "or as multipart/form-data in a field named `file`. The SHA-256 is computed while streaming; the response's "
    "`sha256` is the artifact id. Same bytes twice give the same artifact (200 the second time).",
    responses={201: {"description": "Stored: the new artifact", "headers": LOCATION},
               200: {"model": ArtifactOut, "description": "These bytes were uploaded before: the existing artifact", "headers": LOCATION}}
    | problem_responses(400, 401, 413, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary", "minLength": 1}},
                                           "required": ["file"], "additionalProperties": OTHER_FIELDS, "maxProperties": MAX_FIELDS + 1}},
    }}},
)
async def upload_artifact(
    request: Request, response: Response, tenant: Tenant, session: DbSession, store: Store, settings: AppSettings,
    filename: Annotated[str | None, Query(max_length=MAX_NAME_CHARS, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})] = None, expected_sha256: ExpectedSha = None,
) -> ArtifactOut:
    check_declared_length(request, settings.max_upload_bytes)
    content_type = request.headers.get("content-type", "application/octet-stream")
    try:
        filename = checked_filename(filename)  # before any byte is stored
        if content_type.startswith("multipart/form-data"):
            parts = await stream_multipart(request.stream(), content_type, store, settings.max_upload_bytes, {"file"})
            if "file" not in parts.files:
                parts.discard()
                raise Problem(400, "Missing file", "The multipart body has no field named 'file'.")
            part = parts.files["file"]
            writer, filename = part.writer, filename or part.filename
        else:
            writer = store.writer(settings.max_upload_bytes)
            try:
                await stream_raw(request.stream(), writer)
            except BaseException:
                writer.discard()
                raise
        sha, size, path = await run_in_threadpool(writer.commit, expected_sha256)
    except UploadError as exc:
        raise as_problem(exc) from exc
    row, created = await run_in_threadpool(service.register, session, tenant, sha, size, path, filename)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/artifacts/{sha}"
    return service.to_out(row)


@router.get("/{sha256}", response_model=ArtifactOut, summary="Describe an artifact", responses=problem_responses(401, 404, 422))
def get_artifact(sha256: Annotated[str, Path(pattern=SHA256_RE)], tenant: Tenant, session: DbSession) -> ArtifactOut:
    row = service.get(session, tenant, sha256)
    if row is None:
        raise Problem(404, "Artifact not found", f"No artifact {sha256} for this API key's tenant. Upload it with POST /v1/artifacts.")
    return service.to_out(row)


MEDIA_TYPES = {"png": "image/png", "json": "application/json", "text": "text/plain; charset=utf-8", "csv": "text/csv"}
JSON_CHECK_MAX_BYTES = 16 * 1024**2  # a file detected as JSON (from its head) is served as JSON only when it parses


def media_type(kind: str, path: FsPath) -> str:
    media = MEDIA_TYPES.get(kind, "application/octet-stream")
    if media == "application/json" and not _parses_as_json(path):
        return "application/octet-stream"
    return media


def _parses_as_json(path: FsPath) -> bool:
    def no_constants(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        if path.stat().st_size > JSON_CHECK_MAX_BYTES:
            return False
        json.loads(path.read_bytes(), parse_constant=no_constants)
        return True
    except (OSError, ValueError, RecursionError):
        return False


def _content_schema(media: str) -> dict:
    if media == "application/json":
        return {}  # any JSON document
    return {"type": "string"} if media.startswith("text/") else {"type": "string", "format": "binary"}


@router.get("/{sha256}/content", summary="Download an artifact's bytes", response_class=FileResponse,
            description="The stored bytes: an upload, or a file a scan produced (a reconstructed trigger image, the "
            "cleaned dataset, a retrained model), as linked from the report's `outputs`.",
            responses={200: {"content": {media: {"schema": _content_schema(media)}
                                         for media in ("application/octet-stream", *MEDIA_TYPES.values())},
                             "headers": {"Content-Disposition": {"description": "attachment, with the artifact's filename",
                                                                 "required": True, "schema": {"type": "string"}}}}}
            | problem_responses(401, 404, 422))
def download_artifact(sha256: Annotated[str, Path(pattern=SHA256_RE)], tenant: Tenant, session: DbSession, store: Store) -> FileResponse:
    row = service.get(session, tenant, sha256)
    path = store.path_for(row.sha256) if row is not None else None
    if path is None or not path.is_file():
        raise Problem(404, "Artifact not found", f"No artifact {sha256} for this API key's tenant (or its bytes are gone); upload it again.")
    return FileResponse(path, media_type=media_type(row.kind, path),
                        filename=row.filename or row.sha256, content_disposition_type="attachment")
