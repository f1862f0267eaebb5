"""RFC 9457 problem details for every error the API returns."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, type_: str = "about:blank", **extra) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.type, self.extra = status, title, detail, type_, extra


def problem_response(request: Request, status: int, title: str, detail: str, type_: str = "about:blank", **extra) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail, "instance": request.url.path, **extra}
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Shape of the error body, for the OpenAPI document.
PROBLEM_SCHEMA = {
    "description": "Problem details (RFC 9457)",
    "content": {PROBLEM_JSON: {"schema": {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("type", "title", "detail", "instance")} | {"status": {"type": "integer"}},
        "required": ["type", "title", "status", "detail"],
    }}},
}


def problem_responses(*codes: int) -> dict:
    return {code: PROBLEM_SCHEMA for code in codes}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(request, exc.status, exc.title, exc.detail, exc.type, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(request, 422, "Invalid request", detail or "The request is invalid.", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        titles = {404: "Not found", 405: "Method not allowed"}
        return problem_response(request, exc.status_code, titles.get(exc.status_code, "HTTP error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        import logging

        logging.getLogger("poisonscan.api").exception("unhandled error on %s", request.url.path)
        return problem_response(request, 500, "Internal error", "The server failed; the error is logged. Retry, and report it if it persists.")
