"""POST /v1/artifacts (raw stream or multipart), GET /v1/artifacts/{sha256} and its /content."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.concurrency import run_in_threadpool

from app.artifacts import service
from app.artifacts.names import checked_filename
from app.artifacts.schemas import ArtifactOut
from app.artifacts.store import UploadError
from app.artifacts.streaming import stream_multipart, stream_raw
from app.auth import Tenant
from app.deps import AppSettings, DbSession, Store
from app.problems import Problem, problem_responses

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
SHA256_RE = r"^[0-9a-fA-F]{64}$"
ExpectedSha = Annotated[str | None, Query(pattern=SHA256_RE, description="Refuse (422, nothing kept) unless the bytes hash to this.")]


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
    responses={200: {"model": ArtifactOut, "description": "These bytes were uploaded before: the existing artifact"}}
    | problem_responses(400, 401, 413, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
    }}},
)
async def upload_artifact(
    request: Request, response: Response, tenant: Tenant, session: DbSession, store: Store, settings: AppSettings,
    filename: Annotated[str | None, Query(max_length=255)] = None, expected_sha256: ExpectedSha = None,
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


@router.get("/{sha256}/content", summary="Download an artifact's bytes", response_class=FileResponse,
            description="The stored bytes: an upload, or a file a scan produced (a reconstructed trigger image, the "
            "cleaned dataset, a retrained model), as linked from the report's `outputs`.",
            responses={200: {"content": {media: {"schema": {"type": "string", "format": "binary"}}
                                         for media in ("application/octet-stream", *MEDIA_TYPES.values())}}}
            | problem_responses(401, 404, 422))
def download_artifact(sha256: Annotated[str, Path(pattern=SHA256_RE)], tenant: Tenant, session: DbSession, store: Store) -> FileResponse:
    row = service.get(session, tenant, sha256)
    path = store.path_for(row.sha256) if row is not None else None
    if path is None or not path.is_file():
        raise Problem(404, "Artifact not found", f"No artifact {sha256} for this API key's tenant (or its bytes are gone); upload it again.")
    return FileResponse(path, media_type=MEDIA_TYPES.get(row.kind, "application/octet-stream"),
                        filename=row.filename or row.sha256, content_disposition_type="attachment")
