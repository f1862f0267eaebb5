"""RFC 9457 problem details for every error the API returns."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, type_: str = "about:blank", headers: dict | None = None,
                 **extra) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.type, self.extra = status, title, detail, type_, extra
        self.headers = headers


RETRY_AFTER_S = 5  # what a client waits after a 503 for a dependency that is down


def problem_response(request: Request, status: int, title: str, detail: str, type_: str = "about:blank",
                     headers: dict | None = None, **extra) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail, "instance": request.url.path, **extra}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


# Shape of the error body, for the OpenAPI document (components/schemas/Problem, added by app.main).
PROBLEM_COMPONENT = {
    "type": "object",
    "description": "RFC 9457 problem details; some problems add members of their own (`errors` for an invalid request).",
    "properties": {k: {"type": "string"} for k in ("type", "title", "detail", "instance")} | {
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}}, "msg": {"type": "string"}, "type": {"type": "string"}}}},
    },
    "required": ["type", "title", "status", "detail", "instance"],
}
PROBLEM_SCHEMA = {
    "description": "Problem details (RFC 9457)",
    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


# Headers that problem_response adds, or that the handler sets, for a status: documented with it.
_PROBLEM_HEADERS = {
    401: {"WWW-Authenticate": {"description": "The scheme to authenticate with: `ApiKey` (send the key in `X-API-Key`).",
                               "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string", "pattern": r"^\d+$"}}},
    503: {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string", "pattern": r"^\d+$"}}},
}
_PROBLEM_HEADERS_REQUIRED = {401, 429, 503}  # problem_response always sends these headers for these statuses


def problem_schema(status: int) -> dict:
    """The documented response for one problem status, with the headers it always carries."""
    headers = _PROBLEM_HEADERS.get(status)
    if not headers:
        return PROBLEM_SCHEMA
    required = status in _PROBLEM_HEADERS_REQUIRED
    return PROBLEM_SCHEMA | {"headers": {name: header | {"required": required} for name, header in headers.items()}}


def problem_responses(*codes: int) -> dict:
    return {code: problem_schema(code) for code in codes}


# What every operation behind an API key can answer besides its own statuses: no key or a bad one (401), too many
# bad keys from this address (429), the database unreachable while checking the key (503).
AUTH_PROBLEMS = (401, 429, 503)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(request, exc.status, exc.title, exc.detail, exc.type, exc.headers, **exc.extra)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(SQLAlchemyTimeout)
    async def _database_down(request: Request, exc: Exception):
        # A lost connection, a refused one, a statement or pool timeout: the database, not the request, is at fault.
        logging.getLogger("poisonscan.api").warning("database unavailable on %s: %s", request.url.path,
                                                    str(exc).splitlines()[0])
        return problem_response(request, 503, "Database unavailable",
                                f"The database did not answer; retry in {RETRY_AFTER_S} s. Nothing was changed.")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(request, 422, "Invalid request", detail or "The request is invalid.", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        titles = {404: "Not found", 405: "Method not allowed"}
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the first matching route's methods; the path may have more
            headers = {"Allow": ", ".join(_allowed_methods(request))}
        return problem_response(request, exc.status_code, titles.get(exc.status_code, "HTTP error"), str(exc.detail),
                                headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logging.getLogger("poisonscan.api").exception("unhandled error on %s", request.url.path)
        return problem_response(request, 500, "Internal error", "The server failed; the error is logged. Retry, and report it if it persists.")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route answers on this path (routers nest, so ask each as if the request used it)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed
