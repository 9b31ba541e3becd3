"""Jobs: list, inspect, follow (server-sent events), cancel, and fetch results as PNGs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Optional

import anyio
from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.exc import OperationalError

from service.artifacts import keys
from service.db import Job
from service.jobs import TERMINAL, BadCursor, JobKind, JobStatus, JobStore

from ..deps import Artifacts, SettingsDep, Store
from ..files import open_file
from ..problems import NotFound, NotReady, Problem, gone, missing, responses
from ..schemas import JobOut, JobPage
from ..security import PrincipalDep

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

PNG = {200: {"content": {"image/png": {}}, "description": "A PNG image."}}


async def read_job(store: JobStore, job_id: str) -> Optional[Job]:
    """``store.get`` from the event loop: on the loop itself where the database allows it
    (SQLite, ``Database.reads_inline``: no thread hand-off, the status endpoint's main cost),
    else, or when that read meets a lock, in a worker thread."""
    if store.db.reads_inline:
        try:
            return store.get(job_id, inline=True)
        except OperationalError:
            pass
    return await anyio.to_thread.run_sync(store.get, job_id)


async def existing_job(job_id: str, store: Store, principal: PrincipalDep) -> Job:
    """The job, or 404 when there is none or it belongs to another API key (410 when it was the
    caller's and expired)."""
    job = await read_job(store, job_id)
    if job is None:
        raise await anyio.to_thread.run_sync(missing, store, principal, "job", job_id)
    if not principal.owns(job.api_key_id):
        raise NotFound("job", job_id)
    return job


JobDep = Annotated[Job, Depends(existing_job)]


@router.get("", response_model=JobPage, responses=responses(401, 422))
def list_jobs(
    store: Store,
    principal: PrincipalDep,
    status: Annotated[Optional[JobStatus], Query(description="Only jobs in this status.")] = None,
    kind: Annotated[Optional[JobKind], Query(description="Only jobs of this kind.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Optional[str], Query(max_length=200, description="next_cursor of the previous page.")] = None,
) -> JobPage:
    """This API key's jobs (an admin key: everyone's), newest first."""
    try:
        rows, next_cursor = store.list(status=status.value if status else None, kind=kind.value if kind else None,
                                       limit=limit, cursor=cursor,
                                       api_key_id=None if principal.sees_all else principal.key_id)
    except BadCursor as e:
        raise Problem(422, f"cursor: {e}", type="/problems/validation",
                      errors=[{"field": "cursor", "location": "query", "message": str(e), "type": "value_error"}]) from None
    return JobPage(items=[JobOut.of(j) for j in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=responses(401, 404, 410))
async def get_job(job: JobDep) -> JobOut:
    # async: the document is built on the event loop; the read is read_job's (no thread on SQLite)
    return JobOut.of(job)


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=responses(401, 404, 410))
async def job_events(job: JobDep, store: Store, settings: SettingsDep) -> AsyncIterator[ServerSentEvent]:
    """The job as server-sent events: an ``event: job`` with the same body as GET /v1/jobs/{id}
    whenever it changes (progress is written at most once a second), then ``event: end`` when
    it reaches succeeded, failed or canceled, and the stream closes."""
    last = None
    current: Optional[Job] = job
    while current is not None:
        body = JobOut.of(current).model_dump(mode="json")
        if body != last:
            last = body
            yield ServerSentEvent(event="job", id=str(current.version), data=body)
        if current.status in TERMINAL:
            yield ServerSentEvent(event="end", id=str(current.version), data=body)
            return
        await anyio.sleep(settings.events_poll_interval)
        current = await read_job(store, current.id)


@router.post("/{job_id}/cancel", response_model=JobOut, responses={202: {"model": JobOut}, **responses(401, 404, 410)})
def cancel_job(job: JobDep, store: Store, response: Response) -> JobOut:
    """Idempotent. A queued job is canceled at once (200); a running one is asked to stop (202)
    and ends ``canceled`` within seconds; a finished job is returned unchanged (200)."""
    updated = store.request_cancel(job.id) or job
    if updated.status == JobStatus.running.value:
        response.status_code = 202
    return JobOut.of(updated)


def _result_file(job: Job, key: str, artifacts, store: JobStore, principal) -> StreamingResponse:
    if job.status != JobStatus.succeeded.value:
        raise NotReady(job.id, job.status)
    return open_file(artifacts.path(key), "image/png", lambda: gone(store, principal, "job", job.id) or Problem(
        404, "this job has no such result", type="/problems/not-found"))  # 410: removed by cleanup meanwhile


@router.get("/{job_id}/images/{k}.png", response_class=FileResponse, responses={**PNG, **responses(401, 404, 409, 410)})
def get_job_image(job: JobDep, k: Annotated[int, Path(ge=0, le=10_000)], artifacts: Artifacts, store: Store,
                  principal: PrincipalDep):
    if job.kind == JobKind.learn.value:
        raise Problem(404, "learning jobs have no images; see preview.png or the model", type="/problems/not-found")
    return _result_file(job, keys.job_image(job.id, k), artifacts, store, principal)


@router.get("/{job_id}/grid.png", response_class=FileResponse, responses={**PNG, **responses(401, 404, 409, 410)})
def get_job_grid(job: JobDep, artifacts: Artifacts, store: Store, principal: PrincipalDep):
    if job.kind == JobKind.learn.value:
        raise Problem(404, "learning jobs have no grid; see preview.png or the model", type="/problems/not-found")
    return _result_file(job, keys.job_grid(job.id), artifacts, store, principal)


@router.get("/{job_id}/preview.png", response_class=FileResponse, responses={**PNG, **responses(401, 404, 409, 410)})
def get_job_preview(job: JobDep, artifacts: Artifacts, store: Store, principal: PrincipalDep):
    """The latest synthesis of a learning job (updated while it learns)."""
    if job.kind != JobKind.learn.value:
        raise Problem(404, "only learning jobs have previews", type="/problems/not-found")
    return open_file(artifacts.path(keys.job_preview(job.id)), "image/png", lambda: gone(
        store, principal, "job", job.id) or NotReady(job.id, job.status, f"job {job.id} is {job.status} and has no "
                                                     "preview yet"), headers={"Cache-Control": "no-store"})
