"""The FastAPI application factory: ``create_app(settings)``.

The app only accepts, tracks and serves: uploads are decoded and stored, jobs are written to the
job table and their ids published; workers do everything long. ``uvicorn app.main:app`` serves
an app built from the environment (``GCN_*``); ``gcn serve`` builds its own.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.artifacts import LocalArtifactStore
from service.auth import KeyStore
from service.cleanup import DataUsage
from service.db import Database
from service.jobs import JobStore
from service.queue import JobQueue, make_celery
from service.settings import Settings

from . import problems
from .deps import Services
from .metrics import Metrics, MetricsMiddleware
from .routes import datasets, health, inpaintings, jobs, models, page, webhooks
from .security import AuthMiddleware, FailedAuthLimiter

log = logging.getLogger("gcn.api")

DESCRIPTION = """\
Learn a generative ConvNet (Xie, Lu, Zhu, Wu, ICML 2016) from uploaded images and synthesize new
ones by Langevin dynamics. Long work runs as jobs: POSTs that start work answer 202 with the job
and `Location: /v1/jobs/{id}`; follow it with GET or server-sent events, then fetch PNGs.
Errors are `application/problem+json` (RFC 9457).

Every `/v1` route except `/v1/presets` needs an API key (`Authorization: Bearer <key>`, from
`gcn keys create`) unless the server runs with keys off; each key sees only the datasets, models
and jobs it made (others answer 404), an admin key sees all. POSTs accept `Idempotency-Key`.
"""


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class UploadLimit:
    """Refuse a request body larger than GCN_MAX_REQUEST_BYTES (413 problem+json): at once when
    Content-Length announces it, before anything is read; otherwise (chunked) as soon as the bytes
    read pass the limit, so nothing larger is ever spooled to disk. Each file is also checked on
    its own against GCN_MAX_UPLOAD_BYTES."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = problems.problem_response(
                413, "Content too large", f"the request body is {int(length)} bytes; the limit is {self.max_bytes}",
                "/problems/too-large")
            await response(scope, receive, send)
            return
        seen = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)  # FastAPI lets HTTP exceptions through body parsing: a 413 problem
            return message

        await self.app(scope, counted, send)


def settle_garbage_collector() -> None:
    """Move everything alive at start-up (the imported libraries, the app) out of the garbage
    collector's reach (``gc.freeze``). Its full collections walk every tracked object, and in this
    process they took 250-310 ms each, stalling every request in flight: that was the p99 of the
    status endpoint under load (docs/benchmarks.md). Frozen, they take ~10-20 ms."""
    gc.collect()
    gc.freeze()


def build_services(settings: Settings) -> Services:
    db = Database(settings.database_url)
    return Services(settings=settings, db=db, store=JobStore(db), artifacts=LocalArtifactStore(settings.data_dir),
                    queue=JobQueue(make_celery(settings), settings.queue), keys=KeyStore(db),
                    usage=DataUsage(settings.data_dir))


def create_app(settings: Optional[Settings] = None, *, host: Optional[str] = None) -> FastAPI:
    """The app for ``settings``; ``host`` is the address it will be bound to, which decides
    ``GCN_AUTH=auto`` (keys off only on a loopback address; unknown: keys required)."""
    settings = settings or Settings()
    services = build_services(settings)
    auth_required = settings.auth_required(host)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        services.db.create_all()
        settle_garbage_collector()
        yield
        services.queue.close()
        services.db.dispose()

    app = FastAPI(title="Generative ConvNet service", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    app.state.metrics = Metrics(services.store)
    app.state.auth_required = auth_required
    problems.install(app)
    for module in (datasets, models, inpaintings, jobs, webhooks, health, page):
        app.include_router(module.router)
    app.mount("/static", page.static_files(), name="static")
    app.add_middleware(AuthMiddleware, keys=services.keys, required=auth_required,
                       limiter=FailedAuthLimiter(settings.auth_failure_limit))
    app.add_middleware(UploadLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _problem_schemas_in_openapi(app)
    return app


def _problem_schemas_in_openapi(app: FastAPI) -> None:
    """Document error bodies as application/problem+json with the ProblemDetails schema."""
    default_openapi = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = default_openapi()
        defs = problems.ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.pop("$defs", {}))
        components["ProblemDetails"] = defs
        problem = {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
        for path in schema.get("paths", {}).values():
            for op in path.values():
                if "requestBody" in op:  # any body: unparseable (400) or over GCN_MAX_REQUEST_BYTES (413)
                    for status in ("400", "413"):
                        op["responses"].setdefault(status, {"description": problems.TITLES[int(status)]})
                if any("ApiKey" in requirement for requirement in op.get("security", [])):
                    # an address past GCN_AUTH_FAILURE_LIMIT invalid keys a minute (app/security.py)
                    op["responses"].setdefault("429", {"description": problems.TITLES[429]})
                for status, resp in op.get("responses", {}).items():
                    if status.startswith(("4", "5")):  # FastAPI's default 422 included: ours is problem+json
                        resp["content"] = dict(problem)
                        if status == "422":
                            resp["description"] = problems.TITLES[422]
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def __getattr__(name: str):
    # ``uvicorn app.main:app``: built on first access, from the environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
