"""Liveness, readiness (database and broker reachable), Prometheus metrics, and the presets."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

from service.presets import preset_names, resolve

from ..deps import ServicesDep
from ..problems import problem_response, responses
from ..schemas import PresetOut

router = APIRouter()


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is up (no dependencies checked). On the event loop, not in the thread pool:
    a liveness probe must answer while every pool thread is busy (or stuck on the database)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], responses=responses(503))
async def readyz(services: ServicesDep):
    """Ready when the job database and the broker answer; 503 problem+json naming what is down."""
    checks: dict[str, str] = {}
    for name, probe in (("database", services.db.ping), ("broker", services.queue.ping)):
        try:
            await run_in_threadpool(probe)
            checks[name] = "ok"
        except Exception as e:
            checks[name] = f"unreachable: {e.__class__.__name__}"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ok", **checks})
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem_response(503, "Service unavailable", f"not ready: {down} unreachable", "/problems/not-ready-service",
                            checks=checks)


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    data = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return PlainTextResponse(data, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/presets", tags=["models"], response_model=list[PresetOut])
async def list_presets() -> Response:
    """The named presets a model can be learned with (any field can be overridden)."""
    return Response(_presets_document(), media_type="application/json")


@functools.lru_cache(maxsize=1)
def _presets_document() -> bytes:
    """The presets never change while a process runs: their document is built and serialized
    once, not per request (which took most of the route's time)."""
    out = []
    for name in preset_names():
        p = resolve(name, {})
        out.append(PresetOut(name=name, description=p.description, kind=p.kind, image_size=p.image_size,
                             config=p.to_dict()))
    return TypeAdapter(list[PresetOut]).dump_json(out)
