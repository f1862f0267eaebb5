"""MLflow Model Registry gate: fetch a registered model version's files for a scan, then tag the version with the verdict.

The MLflow client only copies files here: nothing is loaded or unpickled (the scan pipeline reads them statically).
``mlflow`` is imported lazily: it is the optional extra ``poisonscan[mlflow]``, never a dependency of the API. No
Celery, no database: the CLI, the API and the worker all call this module.
"""

import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.cli_output import escape_text

# models:/NAME/VERSION, or models:/NAME@ALIAS (resolved once: the version it names is scanned and tagged)
MODEL_URI_PATTERN = r"^models:/([^/@]+)(?:/([0-9]+)|@([A-Za-z0-9_-]+))$"
TAG_PREFIX = "poisonscan."
REASON_MAX_CHARS = 500  # a summary for the registry's UI; the report has the rest
# A gate fails fast: MLflow's client retries 7 times with backoff by default (minutes against a wrong URI). The
# progress bar would land in the CLI's output. An operator's own setting of these wins.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
                   "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


class GateError(Exception):
    """Nothing was scanned or tagged: a usage or configuration problem (CLI exit 2; ``status`` for the API)."""

    status, title = 422, "MLflow gate error"


class BadModelUri(GateError):
    title = "Invalid model URI"


class MlflowMissing(GateError):
    status, title = 501, "MLflow integration not available"


class VersionNotFound(GateError):
    status, title = 422, "Unknown model version"


class VersionNotReady(GateError):
    status, title = 409, "Model version not ready"


class RegistryUnavailable(GateError):
    status, title = 502, "MLflow registry unavailable"


class DownloadFailed(Exception):
    """The version exists but its files could not be fetched: a fail verdict (fail closed), not a usage error."""


class TooLarge(DownloadFailed):
    pass


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def configured_tracking_uri() -> str | None:
    """The registry the API and the worker use: operator configuration, never a URL from a client."""
    return os.environ.get("POISONSCAN_MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI") or None


def redacted(uri: str) -> str:
    """``uri`` without a password (a tracking URI may carry basic-auth credentials)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user_info, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user_info.partition(':')[0]}:***@{host}"))


class Registry:
    """One MLflow tracking server with its model registry, addressed explicitly (never through MLflow's globals:
    the API serves many requests in threads)."""

    def __init__(self, tracking_uri: str) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise MlflowMissing("The MLflow client is not installed: install poisonscan[mlflow] "
                                "(pip install 'poisonscan[mlflow]').") from exc
        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def resolve(self, model_uri: str) -> ModelVersionRef:
        """The version ``model_uri`` names; raises a GateError when there is none or the registry does not answer."""
        match = re.fullmatch(MODEL_URI_PATTERN, model_uri)
        if match is None:
            raise BadModelUri(f"{model_uri!r} is not a registered model version: give models:/NAME/VERSION "
                              "(or models:/NAME@ALIAS).")
        name, version, alias = match.groups()
        try:
            found = (self.client.get_model_version(name, version) if version
                     else self.client.get_model_version_by_alias(name, alias))
        except Exception as exc:  # MLflow raises one exception type for "no such version" and "no answer"
            raise self._resolve_error(model_uri, exc) from exc
        if found.status != "READY":
            raise VersionNotReady(f"{model_uri} is {found.status}, not READY: scan it once its registration has finished.")
        return ModelVersionRef(found.name, str(found.version))

    def _resolve_error(self, model_uri: str, exc: Exception) -> GateError:
        where = redacted(self.tracking_uri)
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return VersionNotFound(f"{model_uri}: no such model version in the registry at {where}; check the name "
                                   "and the version (or alias) in the MLflow UI.")
        return RegistryUnavailable(f"the MLflow registry at {where} did not answer for {model_uri} ({_first_line(exc)}); "
                                   "check --tracking-uri / MLFLOW_TRACKING_URI and that the server is up.")

    def download(self, ref: ModelVersionRef, dest: Path, max_bytes: int | None = None) -> Path:
        """The version's files under ``dest``: a folder, or one file when the version's source is a file. Raises
        DownloadFailed (TooLarge past ``max_bytes``, checked from the listing before a byte is fetched)."""
        import mlflow.artifacts

        try:
            source = self.client.get_model_version_download_uri(ref.name, ref.version)
            if max_bytes is not None:
                self._check_size(source, max_bytes)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest),
                                                             tracking_uri=self.tracking_uri))
        except TooLarge:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever stopped the download, the model was not seen: fail closed
            raise DownloadFailed(f"the files of {ref.uri} could not be downloaded ({_first_line(exc)})") from exc
        if local.is_dir() and not any(p.is_file() for p in local.rglob("*")):
            raise DownloadFailed(f"{ref.uri} has no files at its source {source}")
        return local

    def _check_size(self, source: str, max_bytes: int) -> None:
        from mlflow.tracking.artifact_utils import get_artifact_repository

        repo, total, folders = get_artifact_repository(source, tracking_uri=self.tracking_uri), 0, [""]
        while folders:
            for info in repo.list_artifacts(folders.pop()):
                if info.is_dir:
                    folders.append(info.path)
                else:
                    total += info.file_size or 0
            if total > max_bytes:
                raise TooLarge(f"the files of the model version exceed this server's upload limit of {max_bytes} bytes")

    def write_tags(self, ref: ModelVersionRef, *, verdict: str, reason: str, report_url: str | None,
                   scan_id: str | None) -> None:
        """Set the verdict tags on the version. A link or scan id that is None removes the one an earlier scan left:
        the tags never mix two scans."""
        tags = {"verdict": verdict, "reason": summary(reason), "report": report_url, "scan_id": scan_id}
        for key, value in tags.items():
            if value is not None:
                self.client.set_model_version_tag(ref.name, ref.version, TAG_PREFIX + key, value)
        if None in tags.values():
            existing = self.client.get_model_version(ref.name, ref.version).tags
            for key in (TAG_PREFIX + k for k, v in tags.items() if v is None and TAG_PREFIX + k in existing):
                self.client.delete_model_version_tag(ref.name, ref.version, key)


def write_verdict_tags(tracking_uri: str, model_uri: str, *, verdict: str, report_url: str | None, scan_id: str | None,
                       reason: str) -> None:
    """Tag the model version ``model_uri`` (models:/NAME/VERSION) with a scan's verdict. Idempotent: an outbox may
    call it again. Raises GateError (MLflow missing, version gone, registry down) or MLflow's own exception."""
    registry = Registry(tracking_uri)
    registry.write_tags(registry.resolve(model_uri), verdict=verdict, reason=reason, report_url=report_url,
                        scan_id=scan_id)


def scan_report_url(public_url: str | None, scan_id) -> str:
    """The report's link for a tag: absolute under POISONSCAN_PUBLIC_URL, else a path (as in webhook events: a Host
    header is the client's to choose, so it never makes the link)."""
    return f"{(public_url or '').rstrip('/')}/v1/scans/{scan_id}/report"


def model_uri_of(scan_inputs: dict) -> str | None:
    """The model version a scan's model came from (set by POST /v1/integrations/mlflow/scans), or None."""
    source = (scan_inputs.get("model") or {}).get("source")
    return source if isinstance(source, str) and source.startswith("models:/") else None


def summary(reason: str) -> str:
    """A tag value: control characters escaped (the reason quotes artifact names), cut to a line's length."""
    text = escape_text(reason)
    return text if len(text) <= REASON_MAX_CHARS else text[:REASON_MAX_CHARS - 1] + "…"


def pack(local: Path, ref: ModelVersionRef, sink) -> str:
    """Write the downloaded version to ``sink`` (anything with ``write(bytes)``, e.g. an artifact store writer) and
    return the artifact's filename: a file as it is, a folder as an uncompressed tar of its files, which the scan
    inspects member by member as it would the folder. Members are normalised (owner, time), so the same files give
    the same bytes, hence the same artifact."""
    if local.is_file():
        with local.open("rb") as f:
            while chunk := f.read(1 << 20):
                sink.write(chunk)
        return local.name
    with tarfile.open(fileobj=sink, mode="w|", bufsize=1 << 20) as tar:
        for path in sorted(local.rglob("*")):
            if not path.is_dir() or path.is_symlink():  # links stay links: the scan reports them
                tar.add(path, path.relative_to(local).as_posix(), recursive=False, filter=_normalised)
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', ref.name)}-v{ref.version}.tar"


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().partition("\n")[0] or type(exc).__name__
    return text[:300]
