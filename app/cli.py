"""The ``poisonscan`` command line.

Exit codes for ``scan`` and ``submit`` (a CI/CD gate): 0 pass (and warn, unless --fail-on-warn),
1 fail, 2 error.
"""

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("POISONSCAN_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: `submit` would print them into its progress bar
    for name in ("alembic.runtime.plugins", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        from app.cli_output import escape_text

        print(f"error: {escape_text(str(exc))}", file=sys.stderr)
        return EXIT_ERROR


class CliError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poisonscan", description="Scan datasets and models for poisoning, backdoors and supply-chain compromise.")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the embedded service: SQLite, filesystem broker, API and a worker child process")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--data-dir", type=Path, help="state folder (default: $POISONSCAN_DATA_DIR or ./poisonscan-data)")
    s.add_argument("--no-worker", action="store_true", help="do not start a worker child")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("api", help="run only the API (production: migrations and workers run separately)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(func=cmd_api)

    s = sub.add_parser("worker", help="run a Celery worker")
    s.add_argument("--queues", default="cpu,gpu", help="comma-separated: cpu, gpu (default both)")
    s.add_argument("--concurrency", type=int, default=1)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("migrate", help="create or upgrade the database schema (Alembic)")
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("reap", help="re-enqueue or fail scans stuck in queued/running (what the reaper in each API "
                       "process does every POISONSCAN_REAPER_INTERVAL_S)")
    s.add_argument("--every", type=float, default=None, metavar="SECONDS",
                   help="keep running, one pass every SECONDS (for deployments with POISONSCAN_REAPER_IN_API=false)")
    s.set_defaults(func=cmd_reap)

    s = sub.add_parser("webhooks-dispatch", help="send webhook deliveries (what each worker does in a thread; for "
                       "deployments with POISONSCAN_WEBHOOKS_IN_WORKER=false)")
    s.set_defaults(func=cmd_webhooks_dispatch)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(required=True, metavar="ACTION")
    k = keys.add_parser("create", help="create a key; it is printed once and stored only as a hash")
    k.add_argument("name")
    k.add_argument("--tenant", help="tenant the key belongs to (default: the name)")
    k.set_defaults(func=cmd_keys_create)
    k = keys.add_parser("list", help="list keys (prefixes only)")
    k.set_defaults(func=cmd_keys_list)
    k = keys.add_parser("revoke", help="revoke a key by its prefix")
    k.add_argument("prefix")
    k.set_defaults(func=cmd_keys_revoke)

    for name, func, hlp in (("scan", cmd_scan, "scan local files with the same pipeline, no server"), ("submit", cmd_submit, "upload to a server, wait, print the verdict")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--model", type=Path)
        s.add_argument("--dataset", type=Path)
        s.add_argument("--signature", type=Path, help="OpenSSF model-signing bundle over the model (e.g. model.sig)")
        s.add_argument("--public-key", type=Path, help="PEM public key the signature must verify with")
        s.add_argument("--certificate-chain", type=Path, help="PEM CA certificate(s) for a certificate-based signature")
        s.add_argument("--holdout", type=Path, help="labelled clean held-out set, same format as the dataset (trigger probing, re-testing)")
        s.add_argument("--trigger", type=Path, help="suspected trigger: .npz with arrays 'pattern' and 'mask'")
        s.add_argument("--out", type=Path, help="folder for the files the scan produces (trigger images, cleaned dataset, retrained model)")
        _add_scan_options(s)
        s.set_defaults(func=func)
        if name == "submit":
            s.add_argument("--server", default=os.environ.get("POISONSCAN_SERVER", "http://127.0.0.1:8000"))
            s.add_argument("--api-key", default=os.environ.get("POISONSCAN_API_KEY"))
            s.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the verdict")

    s = sub.add_parser("mlflow-gate", help="scan a registered MLflow model version, tag the version with the verdict, "
                       "exit with it (needs poisonscan[mlflow])")
    s.add_argument("--model-uri", required=True, help="models:/NAME/VERSION (or models:/NAME@ALIAS: the version it names now)")
    s.add_argument("--tracking-uri", help="the MLflow tracking server with the registry (default: "
                   "$POISONSCAN_MLFLOW_TRACKING_URI or $MLFLOW_TRACKING_URI)")
    s.add_argument("--out", type=Path, help="folder for report.json (the tag links it when scanned here) and the files the "
                   "scan produces (default: ./poisonscan-mlflow/NAME-vVERSION)")
    _add_scan_options(s)
    s.add_argument("--server", help="scan through this poisonscan server, as `submit` does (default: here, no server)")
    s.add_argument("--api-key", default=os.environ.get("POISONSCAN_API_KEY"))
    s.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the server's verdict")
    s.set_defaults(func=cmd_mlflow_gate)
    return p


def _add_scan_options(s: argparse.ArgumentParser) -> None:
    """What a scan is asked for and how its verdict is shown: the same for every command that scans."""
    s.add_argument("--detector-config", help="per-detector settings as JSON, e.g. '{\"backdoor_assessment\": {\"remediate\": \"never\"}}'")
    s.add_argument("--policy", help="policy as JSON or a path to a JSON file, e.g. '{\"fail_at\": \"medium\"}'")
    s.add_argument("--detectors", help="comma-separated detector names (default: all that apply)")
    s.add_argument("--format", choices=("text", "json", "sarif", "cyclonedx", "html"), default="text",
                   help="sarif: SARIF 2.1.0 log; cyclonedx: CycloneDX 1.6 ML-BOM of the scanned artifacts; "
                   "html: one self-contained page written to --out DIR/report.html (its path is printed)")
    s.add_argument("--fail-on-warn", action="store_true", help="exit 1 on a warn verdict too")
    s.add_argument("--full-scan", action="store_true",
                   help="keep running the data and model layers after a critical supply-chain finding (forensics)")


def _settings(data_dir: Path | None = None):
    from app.settings import Settings, get_settings

    if data_dir is not None:
        os.environ["POISONSCAN_DATA_DIR"] = str(data_dir.resolve())
        get_settings.cache_clear()
    settings: Settings = get_settings()
    return settings


def cmd_migrate(args) -> int:
    from app.migrate import upgrade

    settings = _settings()
    sqlite_file = _sqlite_file(settings.sqlalchemy_url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    upgrade(settings.sqlalchemy_url)
    print(f"database at head: {_redact(settings.sqlalchemy_url)}")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@contextmanager
def _existing_database():
    """A session on the migrated database. Commands that only use it never create one: SQLite would make an
    empty file wherever they happen to run, and the schema comes only from `poisonscan migrate`."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from app.db import get_sessionmaker

    settings = _settings()
    url, sqlite_file = settings.sqlalchemy_url, _sqlite_file(settings.sqlalchemy_url)
    if sqlite_file is not None and not sqlite_file.is_file():
        raise CliError(f"no poisonscan database at {sqlite_file}: run `poisonscan migrate` to create it, "
                       "or set POISONSCAN_DATA_DIR to the data folder `poisonscan serve` uses")
    try:
        with get_sessionmaker()() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        reason = str(exc.orig).strip().partition("\n")[0]
        raise CliError(f"cannot use the database {_redact(url)} ({reason}): run `poisonscan migrate` if it is new, or set "
                       "POISONSCAN_DATA_DIR (or POISONSCAN_DATABASE_URL) to the one `poisonscan serve` uses") from exc


def cmd_serve(args) -> int:
    from app.embedded import serve

    return serve(_settings(args.data_dir), args.host, args.port, start_worker=not args.no_worker)


def cmd_api(args) -> int:
    from app.main import create_app
    from app.serving import run_api

    run_api(create_app(_settings()), args.host, args.port, proxy_headers=True)
    return 0


def cmd_worker(args) -> int:
    from app.embedded import worker_argv

    argv = worker_argv(_settings(), args.queues, args.concurrency)
    os.execv(argv[0], argv)  # become the Celery worker: signals reach it directly


def cmd_reap(args) -> int:
    from worker.broker import enqueue_scan, make_celery, queue_depth
    from worker.reaper import reap_stuck_scans

    settings = _settings()
    celery = make_celery(settings)
    while True:
        with _existing_database() as session:
            counts = reap_stuck_scans(session, settings, lambda sid, q: enqueue_scan(celery, sid, q),
                                      queue_depth=lambda q: queue_depth(celery, q))
        print(json.dumps(counts), flush=True)
        if args.every is None:
            return 0
        time.sleep(args.every)


def cmd_webhooks_dispatch(args) -> int:
    from app.db import get_sessionmaker
    from app.webhooks.dispatcher import Dispatcher

    with _existing_database():  # a clear error when the database is missing, before the loop starts
        pass
    Dispatcher(get_sessionmaker(), _settings()).run_forever()
    return 0


def cmd_keys_create(args) -> int:
    from app.auth import create_key

    with _existing_database() as session:
        row, plaintext = create_key(session, args.name, args.tenant)
    print(f"created key '{row.name}' for tenant '{row.tenant}' (prefix {row.prefix}). It is shown only now:\n{plaintext}")
    return 0


def cmd_keys_list(args) -> int:
    from sqlalchemy import select

    from app.models import ApiKey

    with _existing_database() as session:
        for k in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            print(f"{k.prefix}  {k.name:20} tenant={k.tenant:20} created {k.created_at:%Y-%m-%d %H:%M}  {state}")
    return 0


def cmd_keys_revoke(args) -> int:
    from app.auth import revoke_key

    with _existing_database() as session:
        if not revoke_key(session, args.prefix):
            raise CliError(f"no active key with prefix {args.prefix!r} (see `poisonscan keys list`)")
    print(f"revoked {args.prefix}")
    return 0


def _options(args):
    from pydantic import ValidationError

    from worker.options import ScanOptions

    raw: dict = {}
    if args.policy:
        text = Path(args.policy).read_text() if Path(args.policy).is_file() else args.policy
        try:
            raw["policy"] = json.loads(text)
        except ValueError as exc:
            raise CliError(f"--policy is neither a JSON object nor a readable JSON file: {exc}") from exc
    if args.full_scan:
        raw["stop_at_critical"] = False
    if args.detectors:
        raw["detectors"] = [d.strip() for d in args.detectors.split(",") if d.strip()]
    if args.detector_config:
        try:
            raw["detector_config"] = json.loads(args.detector_config)
        except ValueError as exc:
            raise CliError(f"--detector-config is not a JSON object: {exc}") from exc
    try:
        return ScanOptions.model_validate(raw)
    except ValidationError as exc:
        raise CliError(f"invalid options: {exc}") from exc


def _inputs_given(args) -> dict[str, Path]:
    from worker.findings import ATTACHMENT_ROLES, SCANNED_ROLES

    files = {role: getattr(args, role) for role in SCANNED_ROLES + ATTACHMENT_ROLES if getattr(args, role)}
    if not (files.get("model") or files.get("dataset")):
        raise CliError("give --model, --dataset, or both")
    for role, path in files.items():
        if not (path.is_file() or (role == "model" and path.is_dir())):
            raise CliError(f"--{role} {path}: no such file" + (" or folder" if role == "model" else ""))
    return files


def cmd_scan(args) -> int:
    from app.cli_output import ProgressBar, exit_code
    from worker.findings import InputRejected
    from worker.local import scan_local_files

    options = _options(args)
    files = _inputs_given(args)
    _check_html_out(args)
    bar = ProgressBar()
    try:
        report = scan_local_files(files, options, progress=bar.update, output_dir=args.out)
    except InputRejected as exc:  # a file poisonscan cannot use: a verdict with the reason, not a usage error
        report = rejected_report(files, str(exc))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    _deliver(report, args)
    return exit_code(report["verdict"], args.fail_on_warn)


def cmd_submit(args) -> int:
    from app.cli_output import exit_code
    from app.client import ClientError, ScanFailed, submit_and_wait

    options = _options(args)
    _check_html_out(args)
    try:
        report = submit_and_wait(args.server, args.api_key, _inputs_given(args), options, timeout_s=args.timeout,
                                 download_to=args.out)
    except ScanFailed as exc:  # the server could not scan what we sent: the gate does not open
        report = rejected_report({}, str(exc))
    except ClientError as exc:
        raise CliError(str(exc)) from exc
    _deliver(report, args)
    return exit_code(report["verdict"], args.fail_on_warn)


def cmd_mlflow_gate(args) -> int:
    """Exit codes as `scan`. A version that exists but cannot be downloaded or scanned is a tagged fail (exit 1); no
    tracking server, a bad URI or no such version is a usage error (exit 2) and tags nothing."""
    from app.cli_output import exit_code
    from app.integrations.mlflow_gate import DownloadFailed, GateError, Registry, configured_tracking_uri, redacted

    options = _options(args)
    tracking_uri = args.tracking_uri or configured_tracking_uri()
    if not tracking_uri:
        raise CliError("no MLflow tracking server: give --tracking-uri or set MLFLOW_TRACKING_URI")
    try:
        registry = Registry(tracking_uri)
        ref = registry.resolve(args.model_uri)
    except GateError as exc:
        raise CliError(str(exc)) from exc
    args.out = args.out or Path("poisonscan-mlflow") / f"{re.sub(r'[^A-Za-z0-9._-]', '_', ref.name)}-v{ref.version}"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="poisonscan-mlflow-") as tmp:
        try:
            report, report_url = _scan_model_version(registry.download(ref, Path(tmp)), options, args)
        except DownloadFailed as exc:  # the version exists and its files were not seen: the gate stays shut
            report, report_url = rejected_report({}, str(exc)), None
    report_file = args.out / "report.json"
    report_file.write_text(json.dumps(report, indent=2))
    _deliver(report, args)
    try:
        registry.write_tags(ref, verdict=report["verdict"], reason=report["verdict_reason"],
                            report_url=report_url or str(report_file.resolve()), scan_id=report.get("scan_id"))
    except Exception as exc:  # noqa: BLE001 - the registry's state is what the gate is for: it must not look done
        raise CliError(f"verdict {report['verdict']}, but the tags of {ref.uri} could not be written to "
                       f"{redacted(tracking_uri)}: {exc}") from exc
    print(f"tagged {ref.uri}: poisonscan.verdict={report['verdict']}", file=sys.stderr)
    return exit_code(report["verdict"], args.fail_on_warn)


def _scan_model_version(model: Path, options, args) -> tuple[dict, str | None]:
    """(report, its URL on the server, or None when scanned here). The files came from the registry, not from the
    user: one poisonscan cannot use is a fail verdict, not a usage error."""
    if args.server:
        from app.client import ClientError, ScanFailed, submit_and_wait

        try:
            report = submit_and_wait(args.server, args.api_key, {"model": model}, options, timeout_s=args.timeout,
                                     download_to=args.out)
        except ScanFailed as exc:
            return rejected_report({"model": model}, str(exc)), None
        except ClientError as exc:
            raise CliError(str(exc)) from exc
        return report, f"{args.server.rstrip('/')}/v1/scans/{report['scan_id']}/report"
    from app.cli_output import ProgressBar
    from worker.findings import InputRejected
    from worker.local import scan_local_files

    bar = ProgressBar()
    try:
        return scan_local_files({"model": model}, options, progress=bar.update, output_dir=args.out), None
    except (InputRejected, ValueError) as exc:
        return rejected_report({"model": model}, str(exc)), None
    finally:
        bar.close()


def _check_html_out(args) -> None:
    if args.format == "html" and args.out is None:
        raise CliError("--format html writes DIR/report.html beside the files the scan produces: give --out DIR")


def _deliver(report: dict, args) -> None:
    """Print the report in ``--format``; an HTML page goes to ``--out``/report.html, and the verdict and its path are
    printed."""
    from app.cli_output import escape_text, render, verdict_text, write_html

    if args.format != "html":
        _emit(render(report, args.format))
        return
    path = write_html(report, args.out)
    _emit("\n".join(escape_text(line) for line in (verdict_text(report), f"report: {path}")))


def _emit(text: str) -> None:
    """Print the report; a reader that closed the pipe early (``| head``) does not change the exit code."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit


def rejected_report(files: dict, reason: str) -> dict:
    """A scan that could not use its inputs: verdict fail with the reason (exit 1, never a pass), and the SHA-256 of
    each file refused, so that the record says which bytes were refused."""
    return {"verdict": "fail", "verdict_reason": f"the scan could not be completed: {reason}",
            "inputs": [{"role": r, "filename": p.name, "kind": "unknown", "sha256": _sha256_or_none(p)}
                       for r, p in files.items()],
            "detectors": [], "outputs": [], "quarantine": [], "review": []}


def _sha256_or_none(path: Path) -> str | None:
    from worker.hashing import sha256_file

    try:
        return sha256_file(path)
    except OSError:  # gone or unreadable: the reason says what went wrong
        return None


if __name__ == "__main__":
    sys.exit(main())
