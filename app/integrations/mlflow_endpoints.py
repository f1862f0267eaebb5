"""POST /v1/integrations/mlflow/scans: scan a version of the operator's MLflow Model Registry.

The registry is the server's configuration (POISONSCAN_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI), never a URL from
the client: a client names a model version, not a host to fetch from. The version's files become an artifact of the
tenant (a folder as one uncompressed tar) and an ordinary scan; the version is tagged `pending` at once, and the
worker tags the verdict when the scan ends (``app.integrations.mlflow_gate.write_verdict_tags``).
"""

import logging
import tempfile
from pathlib import Path
from typing import NoReturn

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from app.artifacts import service as artifacts
from app.artifacts.store import ArtifactStore, UploadError
from app.auth import Tenant
from app.deps import AppSettings, DbSession, Store
from app.integrations.mlflow_gate import (MODEL_URI_PATTERN, DownloadFailed, GateError, MlflowMissing, ModelVersionRef,
                                          Registry, RegistryUnavailable, TooLarge, VersionNotFound,
                                          configured_tracking_uri, pack, scan_report_url)
from app.problems import Problem, problem_responses
from app.scans import service
from app.scans.endpoints import enqueue_committed
from app.scans.schemas import ScanOut
from worker.options import ScanOptions

router = APIRouter(prefix="/v1/integrations/mlflow", tags=["integrations"])
log = logging.getLogger(__name__)


class MlflowScanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(pattern=MODEL_URI_PATTERN, max_length=300, examples=["models:/fraud-detector/3"],
                           description="A version of the registry this server is configured with: models:/NAME/VERSION, "
                           "or models:/NAME@ALIAS (resolved once: the version it names is scanned and tagged).")
    options: ScanOptions = Field(default_factory=ScanOptions)


@router.post(
    "/scans",
    status_code=202,
    response_model=ScanOut,
    summary="Scan a registered MLflow model version",
    description="Downloads the version's files from the server's MLflow registry, stores them as the scan's model "
    "(a folder as one tar) and starts a scan: 202, as POST /v1/scans, with the version in `inputs.model.source`. The "
    "version is tagged `poisonscan.verdict=pending` with `poisonscan.scan_id` and `poisonscan.report` at once, and with "
    "the verdict when the scan ends. Files that cannot be downloaded tag it `fail` (502, or 413 over the upload limit).",
    responses={202: {"description": "Queued", "headers": {
        "Location": {"description": "The scan's URL: poll it", "required": True, "schema": {"type": "string"}}}}}
    | problem_responses(409, 413, 422, 429, 501, 502),
)
async def create_mlflow_scan(body: MlflowScanCreate, request: Request, response: Response, tenant: Tenant,
                             session: DbSession, store: Store, settings: AppSettings) -> ScanOut:
    options = service.with_tenant_defaults(body.options, settings.tenant_detector_config.get(tenant, {}))
    registry = await run_in_threadpool(_registry)  # the first use imports mlflow: seconds, off the event loop
    ref, sha, size, path, filename = await run_in_threadpool(_fetch, registry, body.model_uri, store,
                                                             settings.max_upload_bytes)
    await run_in_threadpool(artifacts.register, session, tenant, sha, size, path, filename)
    found = await run_in_threadpool(service.resolve_inputs, session, tenant, {"model": sha})
    scan = await run_in_threadpool(service.create_scan, session, tenant, found, options,
                                   settings.max_active_scans_per_tenant, model_source=ref.uri)
    report_url = scan_report_url(settings.public_url, scan.id)
    # Before the enqueue: a late `pending` must not overwrite the verdict the worker tags.
    await run_in_threadpool(_tag_quietly, registry, ref, verdict="pending", reason="scan queued", report_url=report_url,
                            scan_id=str(scan.id))
    await enqueue_committed(request, session, scan, settings)
    response.headers["Location"] = f"/v1/scans/{scan.id}"
    return service.to_out(scan)


def _registry() -> Registry:
    tracking_uri = configured_tracking_uri()
    if not tracking_uri:
        raise Problem(501, "MLflow integration not configured", "This server has no MLflow registry: its operator sets "
                      "POISONSCAN_MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_URI) to enable it.")
    try:
        return Registry(tracking_uri)
    except MlflowMissing as exc:
        raise Problem(exc.status, exc.title, "This server lacks the MLflow client: its operator installs "
                      "poisonscan[mlflow] to enable it.") from exc


def _fetch(registry: Registry, model_uri: str, store: ArtifactStore,
           max_bytes: int) -> tuple[ModelVersionRef, str, int, Path, str]:
    """Resolve, download and store the version (in a worker thread: it blocks for as long as the download takes)."""
    ref = _resolve(registry, model_uri)
    with tempfile.TemporaryDirectory(prefix="mlflow-", dir=store.tmp_dir) as tmp:  # on the store's disk
        try:
            local = registry.download(ref, Path(tmp), max_bytes)
            writer = store.writer(max_bytes)
            try:
                filename = pack(local, ref, writer)
                sha, size, path = writer.commit()
            except BaseException:
                writer.discard()
                raise
        except TooLarge as exc:
            _refuse(registry, ref, 413, str(exc))
        except DownloadFailed as exc:  # its reason may name the registry's storage: the log has it
            log.warning("MLflow: %s", exc)
            _refuse(registry, ref, 502, f"the files of {ref.uri} could not be downloaded")
        except UploadError as exc:
            _refuse(registry, ref, exc.status, str(exc))
    return ref, sha, size, path, filename


def _resolve(registry: Registry, model_uri: str) -> ModelVersionRef:
    try:
        return registry.resolve(model_uri)
    except GateError as exc:
        log.warning("MLflow: %s", exc)  # the registry's address and its errors stay in the log
        details = {VersionNotFound: f"{model_uri}: no such model version in this server's MLflow registry; check the "
                                    "name and the version (or alias).",
                   RegistryUnavailable: f"The MLflow registry did not answer for {model_uri}; retry later."}
        raise Problem(exc.status, exc.title, details.get(type(exc), str(exc))) from exc


def _refuse(registry: Registry, ref: ModelVersionRef, status: int, reason: str) -> NoReturn:
    """Fail closed: the version exists and its files were not seen, so it is tagged `fail`."""
    tagged = _tag_quietly(registry, ref, verdict="fail", reason=f"not scanned: {reason}", report_url=None, scan_id=None)
    raise Problem(status, "Model version not scanned", f"{reason}; " + (
        "it is tagged poisonscan.verdict=fail." if tagged else "tagging it poisonscan.verdict=fail failed too."))


def _tag_quietly(registry: Registry, ref: ModelVersionRef, **tags) -> bool:
    """Tags the scan does not depend on: a registry that refuses them is logged, and the request goes on."""
    try:
        registry.write_tags(ref, **tags)
        return True
    except Exception:  # noqa: BLE001
        log.warning("MLflow: could not tag %s with %s", ref.uri, tags, exc_info=True)
        return False
