"""HTTP client for ``poisonscan submit``: stream uploads, start a scan, poll with a progress bar."""

import time
from pathlib import Path

import httpx

from app.cli_output import ProgressBar

TERMINAL = {"succeeded", "failed", "canceled"}


class ClientError(Exception):
    pass


class ScanFailed(ClientError):
    """The server ran the scan and it failed (an input it could not use, a limit): a fail verdict, not a usage error."""


def _check(resp: httpx.Response, what: str) -> dict:
    if resp.status_code >= 400:
        try:
            body = resp.json()
            detail = f"{body.get('title')}: {body.get('detail')}"
        except ValueError:
            detail = resp.text[:300]
        raise ClientError(f"{what} failed with HTTP {resp.status_code}: {detail}")
    return resp.json()


def _file_chunks(path: Path, size: int = 1 << 20):
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def upload(client: httpx.Client, path: Path) -> str:
    if path.is_dir():
        return _upload_folder(client, path)
    resp = client.post("/v1/artifacts", params={"filename": path.name}, content=_file_chunks(path),
                       headers={"content-type": "application/octet-stream", "content-length": str(path.stat().st_size)})
    return _check(resp, f"upload of {path}")["sha256"]


def _upload_folder(client: httpx.Client, folder: Path) -> str:
    """A model folder (a Hugging Face-style snapshot) travels as one zip; the server inspects every member."""
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory(prefix="poisonscan-upload-") as tmp:
        packed = Path(tmp) / f"{folder.name or 'model'}.zip"
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    zf.write(path, path.relative_to(folder).as_posix())
        return upload(client, packed)


def submit_and_wait(server: str, api_key: str | None, files: dict[str, Path], options, timeout_s: float = 3600.0, poll_s: float = 0.5,
                    download_to: Path | None = None) -> dict:
    """Upload, scan, wait; returns the report. ``download_to``: also fetch the files the scan produced into it."""
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        with httpx.Client(base_url=server, headers=headers, timeout=httpx.Timeout(60.0, read=600.0)) as client:
            body = {role: upload(client, path) for role, path in files.items()}  # a folder goes up as a zip
            body["options"] = options.model_dump(mode="json", exclude_defaults=True)
            scan = _check(client.post("/v1/scans", json=body), "starting the scan")
            scan = _poll(client, scan, timeout_s, poll_s)
            if scan["status"] == "failed":
                raise ScanFailed(f"scan {scan['id']} failed: {scan.get('error') or 'no reason given'}")
            if scan["status"] != "succeeded":
                raise ClientError(f"scan {scan['id']} {scan['status']}: {scan.get('error') or 'no reason given'}")
            report = _check(client.get(f"/v1/scans/{scan['id']}/report"), "fetching the report")
            if download_to is not None:
                download_outputs(client, report, download_to)
            return report
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from exc


def _poll(client: httpx.Client, scan: dict, timeout_s: float, poll_s: float) -> dict:
    bar, deadline = ProgressBar(), time.monotonic() + timeout_s
    try:
        while scan["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise ClientError(f"scan {scan['id']} still {scan['status']} after {timeout_s:.0f} s; it keeps running, poll GET /v1/scans/{scan['id']}")
            bar.update(f"{scan['status']}: {scan.get('stage') or ''}", scan.get("percent") or 0.0)
            time.sleep(poll_s)
            scan = _check(client.get(f"/v1/scans/{scan['id']}"), "polling the scan")
        bar.update(scan["status"], 100.0 if scan["status"] == "succeeded" else scan.get("percent") or 0.0)
    finally:
        bar.close()
    return scan


def download_outputs(client: httpx.Client, report: dict, folder: Path) -> None:
    """Each of the report's outputs, streamed to ``folder`` under its name; its path is recorded in the report."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in report.get("outputs", []):
        target = folder / Path(entry["name"]).name
        with client.stream("GET", entry["href"]) as resp:
            if resp.status_code >= 400:
                resp.read()
                _check(resp, f"downloading {entry['name']}")
            with target.open("wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    f.write(chunk)
        entry["path"] = str(target)
