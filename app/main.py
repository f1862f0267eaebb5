"""The FastAPI application. No TensorFlow (or any detector) import happens here: start-up stays fast."""

import asyncio
import copy
import gc
import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from app import problems
from app.artifacts.endpoints import router as artifacts_router
from app.artifacts.store import ArtifactStore
from app.auth import FailureWindow
from app.db import make_engine
from app.docs import install_docs
from app.integrations.mlflow_endpoints import router as mlflow_router
from app.integrations.mlflow_gate import configured_tracking_uri
from app.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from app.metrics import RequestMetrics, ScanCollector
from app.metrics import render as render_metrics
from app.scans.endpoints import router as scans_router
from app.scans.poll_cache import PollCache
from app.scans.schemas import ScanCreate
from app.settings import Settings, get_settings
from app.webhooks.endpoints import router as webhooks_router
from worker.broker import QUEUES, broker_reachable, make_celery, queue_depth

VERSION = "0.1.0"
METRICS_TIMEOUT_S = 10.0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    app = FastAPI(
        lifespan=_lifespan,
        docs_url=None,  # app.docs serves Swagger UI from the package's own files: the page works offline
        redoc_url=None,
        title="poisonscan",
        version=VERSION,
        summary="Scans datasets and models for data poisoning, backdoors and supply-chain compromise.",
        description="Upload artifacts, start a scan, poll it, fetch its report. Authenticate with the `X-API-Key` header. "
        "Errors are RFC 9457 problem details (`application/problem+json`).",
    )
    engine = make_engine(settings.sqlalchemy_url, pool_size=settings.api_db_pool_size, timeout_s=settings.api_db_timeout_s,
                         statement_timeout_s=settings.api_statement_timeout_s)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(engine, expire_on_commit=False)
    app.state.store = ArtifactStore(settings.artifacts_dir)
    app.state.celery = LazyCelery(settings)
    app.state.auth_failures = FailureWindow()
    app.state.key_lookups = {}  # key hash -> the database lookup in flight (app.auth._shared_lookup)
    app.state.poll_cache = PollCache(settings.poll_cache_ttl_s)
    problems.install(app)
    app.include_router(artifacts_router)
    app.include_router(scans_router)
    app.include_router(webhooks_router)
    if configured_tracking_uri():  # the registry gate exists (and is documented) only where a registry is configured
        app.include_router(mlflow_router)
    _health_routes(app)
    _metrics_route(app)
    install_docs(app)
    app.openapi = lambda: _openapi(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    # The modules and objects built at start-up live as long as the process: out of the collector's sight, a full
    # collection no longer walks them, which cut the polling p99 from ~130 to ~30 ms (bench/api_bench.py).
    gc.collect()
    gc.freeze()
    reaper = None
    if app.state.settings.reaper_in_api:
        from worker.broker import enqueue_scan, queue_depth
        from worker.reaper import Reaper

        celery = app.state.celery
        reaper = Reaper(app.state.sessionmaker, app.state.settings, lambda sid, q: enqueue_scan(celery, sid, q),
                        lambda q: queue_depth(celery, q))
        reaper.start()
    yield
    if reaper:
        reaper.stop()


class LazyCelery:
    """Builds the Celery producer on first use: importing Celery costs start-up time the API does not need yet."""

    def __init__(self, settings: Settings) -> None:
        self._settings, self._app = settings, None

    def __getattr__(self, name: str):
        if self._app is None:
            self._app = make_celery(self._settings)
        return getattr(self._app, name)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[Literal["database", "broker"], Literal["up", "down"]]


def _health_routes(app: FastAPI) -> None:
    probes = {"database": SingleFlight(lambda: _database_ok(app)),
              "broker": SingleFlight(lambda: broker_reachable(app.state.celery))}

    # async: answered on the event loop, so a thread pool full of requests stuck on a dependency cannot block it
    @app.get("/healthz", tags=["health"], summary="The process is up", openapi_extra={"security": []})
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", tags=["health"], summary="Database and broker reachable (up/down each; answers within seconds "
             "whatever hangs behind it)", response_model=Readiness, responses=problems.problem_responses(503),
             openapi_extra={"security": []})
    async def readyz(request: Request):
        timeout = request.app.state.settings.readiness_timeout_s
        results = await asyncio.gather(*(probe(timeout) for probe in probes.values()))
        # Anyone may ask: say up or down only; hosts, ports and error texts go to the log.
        checks = {name: "up" if ok else "down" for name, ok in zip(probes, results, strict=True)}
        if all(results):
            return {"status": "ready", "checks": checks}
        down = ", ".join(name for name, state in checks.items() if state == "down")
        return problems.problem_response(request, 503, "Not ready", f"Unreachable: {down}.", checks=checks)


class SingleFlight:
    """Runs a blocking check in a thread of its own, at most one at a time: while a check hangs, callers wait on
    the same one (up to their timeout) instead of each tying up another thread."""

    _threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readiness")

    def __init__(self, check: Callable[[], tuple[bool, str]]) -> None:
        self.check, self._running, self._lock = check, None, threading.Lock()

    async def __call__(self, timeout_s: float) -> bool:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = self._threads.submit(self.check)
            running = self._running
        try:
            ok, detail = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), timeout_s)
        except TimeoutError:
            ok, detail = False, f"no answer within {timeout_s} s"
        if not ok:
            logging.getLogger("poisonscan.api").warning("readiness: %s", detail)
        return ok


def _metrics_route(app: FastAPI) -> None:
    registry = CollectorRegistry()
    app.add_middleware(RequestMetrics, registry=registry)
    celery = app.state.celery
    registry.register(ScanCollector(app.state.sessionmaker, lambda q: queue_depth(celery, q), QUEUES))
    # The workers' scan and detector durations, where they write their metric files beside us (worker.metrics).
    metrics_dir = app.state.settings.resolved_metrics_dir
    metrics_dir.mkdir(parents=True, exist_ok=True)
    MultiProcessCollector(registry, path=str(metrics_dir))

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics: API requests, scans by status and verdict, "
             "queued scans and the oldest one's age per queue, broker queue depth, and the scan and detector "
             "durations of the workers that share the metrics folder",
             response_class=Response, openapi_extra={"security": []},
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}
             | problems.problem_responses(503))
    async def metrics(request: Request) -> Response:
        try:  # a frozen database or broker must not hang the scraper
            body = await asyncio.wait_for(run_in_threadpool(render_metrics, registry), METRICS_TIMEOUT_S)
        except TimeoutError:
            return problems.problem_response(request, 503, "Metrics unavailable",
                                             f"The database or broker did not answer within {METRICS_TIMEOUT_S} s.")
        return Response(body, media_type=METRICS_CONTENT_TYPE)


def _database_ok(app: FastAPI) -> tuple[bool, str]:
    try:
        with app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM scans LIMIT 1"))  # also proves the migrations have run
        return True, "ok"
    except Exception as exc:
        return False, f"database check failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def _openapi(app: FastAPI) -> dict:
    if app.openapi_schema:
        return app.openapi_schema
    # a copy: the document shares dicts with the routes' openapi_extra, and each app fills in its own settings
    schema = copy.deepcopy(get_openapi(title=app.title, version=app.version, summary=app.summary,
                                       description=app.description, routes=app.routes))
    # POST /v1/scans reads its body itself (JSON or multipart), so publish ScanCreate by hand.
    create = ScanCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(create.pop("$defs", {}))
    components["ScanCreate"] = create
    components["Problem"] = problems.PROBLEM_COMPONENT
    for item in schema["paths"].values():
        for op in item.values():
            _limit_uploads(op, app.state.settings.max_upload_bytes)
            responses = op.setdefault("responses", {})
            # Validation errors are answered as problem details too (app.problems), so say so.
            if "422" in responses:
                responses["422"] = problems.problem_schema(422)
            # Every operation behind a key can answer 401, 429 and 503 (app.auth) whether or not it lists them.
            if op.get("security") != []:
                for code in problems.AUTH_PROBLEMS:
                    responses.setdefault(str(code), problems.problem_schema(code))
            op["responses"] = dict(sorted(responses.items()))
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    schema.setdefault("components", {})["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "description": "The same API key, as `Authorization: Bearer <key>` "
                   "(read when there is no X-API-Key header)."},
    }
    schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
    app.openapi_schema = schema
    return schema


def _limit_uploads(op: dict, max_bytes: int) -> None:
    """Each uploaded file (a binary body, or a binary multipart part) is at most max_upload_bytes: say so."""
    for media in op.get("requestBody", {}).get("content", {}).values():
        body = media.get("schema", {})
        for part in [body, *body.get("properties", {}).values()]:
            if part.get("format") == "binary":
                part["maxLength"] = max_bytes


def factory() -> FastAPI:
    """Entry point for ``uvicorn --factory app.main:factory``."""
    return create_app()
