"""Errors as ``application/problem+json`` (RFC 9457), for every error the API can return.

Routes raise ``Problem`` (or a subclass); FastAPI's request validation errors (422), Starlette's
HTTP errors (404 for unknown paths, 405, ...) and unexpected exceptions (500) are converted by the
handlers installed here, so a client only ever parses one error shape:

    {"type": "...", "title": "...", "status": 422, "detail": "...", "errors": [{"field": "n", ...}]}
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("gcn.api")


class FieldError(BaseModel):
    field: str
    location: str
    message: str
    type: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; extension members (``errors``, ``job_id``, ``job_status``,
    ``removed_at``) as needed."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: Optional[str] = None
    errors: Optional[list[FieldError]] = None
    job_id: Optional[str] = None
    job_status: Optional[str] = None
    removed_at: Optional[str] = None  # 410: when an expired job, model or dataset was removed (ISO 8601, UTC)


TITLES = {
    400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed", 409: "Conflict",
    410: "Gone", 413: "Content too large", 415: "Unsupported media type", 422: "Invalid request",
    429: "Too many requests", 500: "Internal error", 503: "Service unavailable", 507: "Insufficient storage",
}


class Problem(Exception):
    def __init__(self, status: int, detail: str, *, title: Optional[str] = None, type: str = "about:blank",
                 headers: Optional[dict[str, str]] = None, **extensions: Any):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.type = type
        self.headers = headers
        self.extensions = extensions


class NotFound(Problem):
    def __init__(self, what: str, ident: str):
        super().__init__(404, f"no {what} with id {ident!r}", type="/problems/not-found")


class Gone(Problem):
    """A job, model or dataset that expired (GCN_RESULT_TTL / GCN_UPLOAD_TTL) and was removed."""

    def __init__(self, what: str, ident: str, removed_at):
        when = removed_at.isoformat().replace("+00:00", "Z")
        super().__init__(410, f"the {what} {ident!r} expired and was removed at {when}", type="/problems/gone",
                         removed_at=when)


def gone(store, principal, what: str, ident: str) -> Optional[Gone]:
    """410 for a ``what`` (job, model, dataset) that was this principal's and expired (cleanup's
    tombstone); None otherwise (never existed, or another key's: an expiry reveals no more than
    the row did)."""
    t = store.tombstone(what, ident)
    return Gone(what, ident, t.removed_at) if t is not None and principal.owns(t.api_key_id) else None


def missing(store, principal, what: str, ident: str) -> Problem:
    """The answer for a ``what`` this principal cannot find: ``gone``'s 410, else 404."""
    return gone(store, principal, what, ident) or NotFound(what, ident)


class NotReady(Problem):
    """A result asked for before it exists: 409 with the job's status."""

    def __init__(self, job_id: str, job_status: str, detail: Optional[str] = None):
        super().__init__(409, detail or f"job {job_id} is {job_status}; its result is not available",
                         title="Result not ready", type="/problems/not-ready", job_id=job_id, job_status=job_status)


def invalid(field: str, message: str, status: int = 422, type: str = "/problems/validation") -> Problem:
    """A 4xx naming one request field."""
    return Problem(status, f"{field}: {message}", type=type,
                   errors=[{"field": field, "location": "body", "message": message, "type": "value_error"}])


def problem_response(status: int, title: str, detail: Optional[str], type: str = "about:blank",
                     headers: Optional[dict[str, str]] = None, **extensions: Any) -> JSONResponse:
    body = {"type": type, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update({k: v for k, v in extensions.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field(loc: tuple[Any, ...]) -> tuple[str, str]:
    location = str(loc[0]) if loc else "body"
    rest = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else [str(p) for p in loc]
    return (".".join(rest) or location), location


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.type, exc.headers, **exc.extensions)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            field, location = _field(tuple(e.get("loc", ())))
            errors.append({"field": field, "location": location, "message": e.get("msg", ""), "type": e.get("type", "")})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem_response(422, TITLES[422], detail, "/problems/validation", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(getattr(exc, "headers", None) or {})
        kind = {413: "/problems/too-large"}.get(exc.status_code, "about:blank")
        if exc.status_code == 405:  # every method of the path, not only those of the first route matched
            headers["Allow"] = ", ".join(_allowed(request))
        return problem_response(exc.status_code, title, detail, kind, headers=headers or None)

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem_response(500, TITLES[500], "the server failed to handle this request")


def _allowed(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(request.url.path):
            methods |= set(route_methods)
    return sorted(methods)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for these error statuses, documented as problem+json."""
    return {
        s: {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}, "description": TITLES.get(s, "Error")}
        for s in statuses
    }
