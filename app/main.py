"""The FastAPI application. No TensorFlow (or any detector) import happens here: start-up stays fast."""

import logging

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from app import problems
from app.artifacts.endpoints import router as artifacts_router
from app.artifacts.store import ArtifactStore
from app.db import make_engine
from app.scans.endpoints import router as scans_router
from app.scans.schemas import ScanCreate
from app.settings import Settings, get_settings
from worker.broker import broker_reachable, make_celery

VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    app = FastAPI(
        title="poisonscan",
        version=VERSION,
        summary="Scans datasets and models for data poisoning, backdoors and supply-chain compromise.",
        description="Upload artifacts, start a scan, poll it, fetch its report. Authenticate with the `X-API-Key` header. "
        "Errors are RFC 9457 problem details (`application/problem+json`).",
    )
    engine = make_engine(settings.sqlalchemy_url, pool_size=settings.api_db_pool_size)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(engine, expire_on_commit=False)
    app.state.store = ArtifactStore(settings.artifacts_dir)
    app.state.celery = LazyCelery(settings)
    problems.install(app)
    app.include_router(artifacts_router)
    app.include_router(scans_router)
    _health_routes(app)
    app.openapi = lambda: _openapi(app)
    return app


class LazyCelery:
    """Builds the Celery producer on first use: importing Celery costs start-up time the API does not need yet."""

    def __init__(self, settings: Settings) -> None:
        self._settings, self._app = settings, None

    def __getattr__(self, name: str):
        if self._app is None:
            self._app = make_celery(self._settings)
        return getattr(self._app, name)


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Database and broker reachable", responses=problems.problem_responses(503))
    def readyz(request: Request):
        checks = {"database": _database_ok(request.app), "broker": broker_reachable(request.app.state.celery)}
        body = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}
        if all(ok for ok, _ in checks.values()):
            return {"status": "ready", "checks": body}
        failing = ", ".join(f"{n} ({d})" for n, (ok, d) in checks.items() if not ok)
        return problems.problem_response(request, 503, "Not ready", f"Unreachable: {failing}.", checks=body)


def _database_ok(app: FastAPI) -> tuple[bool, str]:
    try:
        with app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM scans LIMIT 1"))  # also proves the migrations have run
        return True, "ok"
    except Exception as exc:
        logging.getLogger("poisonscan.api").warning("readiness: database check failed: %s", exc)
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def _openapi(app: FastAPI) -> dict:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes)
    # POST /v1/scans reads its body itself (JSON or multipart), so publish ScanCreate by hand.
    create = ScanCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(create.pop("$defs", {}))
    components["ScanCreate"] = create
    # Validation errors are answered as problem details too (app.problems), so say so.
    for item in schema["paths"].values():
        for op in item.values():
            if "422" in op.get("responses", {}):
                op["responses"]["422"] = problems.PROBLEM_SCHEMA
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    schema.setdefault("components", {})["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    schema["security"] = [{"ApiKey": []}]
    app.openapi_schema = schema
    return schema


def factory() -> FastAPI:
    """Entry point for ``uvicorn --factory app.main:factory``."""
    return create_app()
