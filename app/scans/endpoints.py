"""POST/GET /v1/scans, cancel and report."""

import asyncio
import json
import logging
import re
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from app.artifacts import service as artifacts
from app.artifacts.endpoints import SHA256_RE, as_problem, check_declared_length
from app.artifacts.store import UploadError
from app.artifacts.streaming import stream_multipart
from app.auth import Tenant
from app.deps import AppSettings, DbSession, Store
from app.problems import Problem, problem_responses
from app.scans import service
from app.scans.schemas import ROLES, QuarantineOut, ReportOut, ReviewOut, ScanCreate, ScanOut, ScanPage
from worker.broker import enqueue_scan

router = APIRouter(prefix="/v1/scans", tags=["scans"])
log = logging.getLogger(__name__)
MAX_JSON_BODY = 256 * 1024
SHA_FIELDS = {f"{role}_sha256" for role in ROLES}
ETAG = {"description": "Weak validator of the scan's state", "required": True, "schema": {"type": "string"}}


@router.post(
    "",
    status_code=202,
    response_model=ScanOut,
    summary="Start a scan",
    description="JSON: artifact ids and options (`ScanCreate`). Or multipart/form-data with file fields `model` and/or "
    "`dataset` (and optionally `signature`, `public_key`, `certificate_chain`, `holdout`, `trigger`), optional `<field>_sha256` expected hashes "
    "and `options` (JSON). Answers at once with "
    "202, the scan resource and a `Location` header; poll it for status and progress.",
    responses={202: {"description": "Queued", "headers": {
        "Location": {"description": "The scan's URL: poll it", "required": True, "schema": {"type": "string"}}}}}
    | problem_responses(400, 401, 413, 415, 422, 429, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ScanCreate"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    **{role: {"type": "string", "format": "binary", "minLength": 1} for role in ROLES},
                    **{f"{role}_sha256": {"type": "string", "pattern": SHA256_RE, "description": f"expected SHA-256 of {role}"}
                       for role in ROLES},
                    "options": {"$ref": "#/components/schemas/ScanOptions"},
                },
                "additionalProperties": False,  # anything else is a 422 (unknown form fields)
                "anyOf": [{"required": ["model"]}, {"required": ["dataset"]}],
            },
            "encoding": {"options": {"contentType": "application/json"}},
        },
    }}},
)
async def create_scan(request: Request, response: Response, tenant: Tenant, session: DbSession, store: Store, settings: AppSettings) -> ScanOut:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        body = await _body_from_multipart(request, content_type, tenant, session, store, settings)
    elif content_type.split(";")[0].strip() in ("application/json", ""):
        body = await _body_from_json(request)
    else:
        raise Problem(415, "Unsupported media type", f"Send application/json or multipart/form-data, not {content_type!r}.")
    found = await run_in_threadpool(service.resolve_inputs, session, tenant, body.refs())
    options = service.with_tenant_defaults(body.options, settings.tenant_detector_config.get(tenant, {}))
    scan = await run_in_threadpool(service.create_scan, session, tenant, found, options, settings.max_active_scans_per_tenant)
    await enqueue_committed(request, session, scan, settings)
    response.headers["Location"] = f"/v1/scans/{scan.id}"
    return service.to_out(scan)


async def enqueue_committed(request: Request, session, scan, settings) -> None:
    """Send a committed scan to its queue, off the event loop and bounded: a frozen broker must not freeze the API.
    A publish that fails leaves the scan queued and marked for the reaper's next pass."""
    try:
        await asyncio.wait_for(run_in_threadpool(enqueue_scan, request.app.state.celery, str(scan.id), scan.queue),
                               settings.broker_timeout_s)
    except Exception as exc:  # the row is committed: the reaper's next pass sends it once the broker is back
        log.warning("could not enqueue scan %s (%s); it stays queued and the reaper will send it",
                    scan.id, type(exc).__name__ if isinstance(exc, TimeoutError) else exc)
        try:
            await run_in_threadpool(service.mark_unsent, session, scan.id, settings.queued_timeout_s)
        except Exception:  # noqa: BLE001  (then the reaper sends it one queued timeout later)
            log.warning("could not mark scan %s for the reaper's next pass", scan.id)


async def _body_from_json(request: Request) -> ScanCreate:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BODY:
            raise Problem(413, "Request too large", f"A scan request body is at most {MAX_JSON_BODY} bytes; upload files with POST /v1/artifacts.")
    return _validate(ScanCreate.model_validate_json, bytes(raw) or b"{}")


def _validate(fn, value):
    try:
        return fn(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise Problem(400, "Malformed JSON", f"The request body is not valid JSON: {errors[0]['msg']}.") from exc
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        raise Problem(422, "Invalid scan request", detail, errors=[{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]) from exc


async def _body_from_multipart(request, content_type, tenant, session, store, settings) -> ScanCreate:
    check_declared_length(request, settings.max_upload_bytes)
    try:
        parts = await stream_multipart(request.stream(), content_type, store, settings.max_upload_bytes, set(ROLES))
    except UploadError as exc:
        raise as_problem(exc) from exc
    unknown = set(parts.fields) - SHA_FIELDS - {"options"}
    if unknown:
        parts.discard()
        raise Problem(422, "Unknown form fields", f"Unexpected multipart fields {sorted(unknown)}; expected files {list(ROLES)}, their <name>_sha256 and options.")
    refs = {}
    try:
        for role in ROLES:
            if role in parts.files:
                part = parts.files.pop(role)
                sha, size, path = await run_in_threadpool(part.writer.commit, parts.fields.get(f"{role}_sha256") or None)
                await run_in_threadpool(artifacts.register, session, tenant, sha, size, path, part.filename)
                refs[role] = sha
    except UploadError as exc:
        parts.discard()
        raise as_problem(exc) from exc
    try:
        options = json.loads(parts.fields.get("options") or "{}")
    except ValueError as exc:
        raise Problem(400, "Malformed JSON", f"The 'options' field is not valid JSON: {exc}.") from exc
    return _validate(ScanCreate.model_validate, {**refs, "options": options})


@router.get("", response_model=ScanPage, summary="List scans, newest first", responses=problem_responses(400, 401, 422))
def list_scans(
    tenant: Tenant, session: DbSession,
    status: Literal["queued", "running", "succeeded", "failed", "canceled"] | None = None,
    verdict: Literal["pass", "warn", "fail"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> ScanPage:
    rows, next_cursor = service.list_scans(session, tenant, status, verdict, limit, cursor)
    return ScanPage(items=[service.to_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{scan_id}", response_model=ScanOut, summary="Scan status, progress, timings and verdict",
            description="Answers with a weak `ETag`; send it back in `If-None-Match` and an unchanged scan is a "
            "bodyless 304 (cheap polling for dashboards that watch many scans).",
            responses={200: {"headers": {"ETag": ETAG}},
                       304: {"description": "The scan has not changed since the ETag given in If-None-Match",
                             "headers": {"ETag": ETAG}}}
            | problem_responses(401, 404, 422, 503),
            openapi_extra={"parameters": [{"name": "If-None-Match", "in": "header", "required": False,
                                           "description": "ETags from earlier answers: 304 when the scan still has one",
                                           "schema": {"type": "string"}}]})
async def get_scan(scan_id: uuid.UUID, tenant: Tenant, request: Request) -> Response:
    # The polling hot path: the poll memo (app.scans.poll_cache) on the event loop, else one thread hop for the
    # database, shared by the polls that arrive meanwhile; the body serialised once (no response_model re-validation).
    etag, body = await request.app.state.poll_cache.answer(
        tenant, scan_id, lambda: service.poll_scan(request.app.state.sessionmaker, tenant, scan_id))
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag in service.etags(if_none_match):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


@router.post("/{scan_id}/cancel", response_model=ScanOut, summary="Cancel a queued or running scan", responses=problem_responses(401, 404, 409, 422))
async def cancel_scan(scan_id: uuid.UUID, tenant: Tenant, session: DbSession, request: Request) -> ScanOut:
    scan = await run_in_threadpool(service.cancel_scan, session, tenant, scan_id)
    request.app.state.poll_cache.forget(tenant, scan_id)  # on the event loop, where the memo lives
    return service.to_out(scan)


@router.get(
    "/{scan_id}/quarantine",
    summary="Samples with poisoning evidence to remove: index, confidence, attack, the methods that agree and every reason (409 until succeeded)",
    responses={200: {"description": "Quarantine list", "model": QuarantineOut}} | problem_responses(401, 404, 409, 422),
    response_model=None,  # the stored body as it is; documented by the model above
)
def get_quarantine(scan_id: uuid.UUID, tenant: Tenant, session: DbSession) -> dict:
    return service.get_quarantine(session, tenant, scan_id)


@router.get(
    "/{scan_id}/review",
    summary="Data-quality remarks (outliers, duplicates, label noise) and poisoning candidates under the quarantine's "
    "confidence threshold: for a person to look at, not evidence of an attack (409 until succeeded)",
    responses={200: {"description": "Review list", "model": ReviewOut}} | problem_responses(401, 404, 409, 422),
    response_model=None,  # the stored body as it is; documented by the model above
)
def get_review(scan_id: uuid.UUID, tenant: Tenant, session: DbSession) -> dict:
    return service.get_review(session, tenant, scan_id)


@router.get(
    "/{scan_id}/report",
    summary="The scan's JSON report (409 until the scan has succeeded)",
    responses={200: {"description": "Report (schema_version 1.0)", "model": ReportOut}} | problem_responses(401, 404, 409, 422),
    response_model=None,  # the stored body as it is; documented by the model above
)
def get_report(scan_id: uuid.UUID, tenant: Tenant, session: DbSession) -> dict:
    return service.get_report(session, tenant, scan_id)


SARIF_MEDIA_TYPE = "application/sarif+json"
CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"


def _export_responses(description: str, media_type: str, schema_type: str = "object", headers: dict | None = None) -> dict:
    """The export's own media type only: schemathesis checks the documented content type against the answer's."""
    return {200: {"description": description, "content": {media_type: {"schema": {"type": schema_type}}}}
            | ({"headers": headers} if headers else {})} | problem_responses(401, 404, 409, 422)


@router.get(
    "/{scan_id}/report.sarif",
    summary="The scan's findings as a SARIF 2.1.0 log (409 until the scan has succeeded)",
    description="One result per finding, rules `<detector>/<kind>` with the MITRE ATLAS technique and CWE in their "
    "properties; the verdict is in `runs[0].properties`.",
    responses=_export_responses("SARIF 2.1.0 log", SARIF_MEDIA_TYPE),
    response_class=Response,
)
def get_report_sarif(scan_id: uuid.UUID, tenant: Tenant, session: DbSession) -> Response:
    from worker.report_formats.sarif import to_sarif

    body = json.dumps(to_sarif(service.get_report(session, tenant, scan_id)))
    return Response(body, media_type=SARIF_MEDIA_TYPE)


@router.get(
    "/{scan_id}/bom.json",
    summary="A CycloneDX 1.6 ML-BOM of the scanned artifacts, findings as vulnerabilities (409 until succeeded)",
    responses=_export_responses("CycloneDX 1.6 JSON BOM", CYCLONEDX_MEDIA_TYPE),
    response_class=Response,
)
def get_bom(scan_id: uuid.UUID, tenant: Tenant, session: DbSession) -> Response:
    from worker.report_formats.cyclonedx import to_cyclonedx_json

    body = to_cyclonedx_json(service.get_report(session, tenant, scan_id))
    return Response(body, media_type=f"{CYCLONEDX_MEDIA_TYPE}; version=1.6")


HTML_MEDIA_TYPE = "text/html"


@router.get(
    "/{scan_id}/report.html",
    summary="The report as one self-contained HTML page for people: verdict, evidence as pictures, every finding "
    "(409 until succeeded)",
    description="Images and styles are inline and nothing is loaded from anywhere: the answer's "
    "`Content-Security-Policy` forbids it, and every value from an artifact is escaped. The pictures come from the "
    "files the scan produced (reconstructed triggers, `figures.npz`).",
    responses=_export_responses("HTML page", HTML_MEDIA_TYPE, "string", {"Content-Security-Policy": {
        "description": "Nothing but the page itself and its inline images and styles", "required": True,
        "schema": {"type": "string"}}}),
    response_class=Response,
)
def get_report_html(scan_id: uuid.UUID, tenant: Tenant, session: DbSession, store: Store) -> Response:
    from worker.report_formats.html import CONTENT_SECURITY_POLICY, to_html

    body = to_html(service.get_report(session, tenant, scan_id), lambda entry: _stored_output(store, entry))
    return Response(body, media_type=HTML_MEDIA_TYPE,
                    headers={"Content-Security-Policy": f"{CONTENT_SECURITY_POLICY}; frame-ancestors 'none'",
                             "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


def _stored_output(store, entry: dict) -> bytes | None:
    """A file the scan produced, from the artifact store (the worker stored it under its SHA-256 for the tenant)."""
    sha = entry.get("artifact")
    if not isinstance(sha, str) or not re.fullmatch(SHA256_RE, sha):
        return None
    path = store.path_for(sha)
    return path.read_bytes() if path.is_file() else None
