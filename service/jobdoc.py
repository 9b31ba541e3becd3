"""The job document: what ``GET /v1/jobs/{id}`` returns, and what a webhook POSTs.

It lives in the service layer (pydantic, no FastAPI) so that the API answers with it
(``app/schemas.py`` re-exports ``JobOut``) and a worker can write the very same bytes into a
webhook delivery: ``body(job)`` renders it as the API's JSON responses do (compact, UTF-8).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Iterable, Literal, Optional

from pydantic import BaseModel, Field
from sqlalchemy import inspect as sa_inspect

from .db import Job, WebhookDelivery
from .jobs import TERMINAL, JobKind, JobStatus

WebhookEvent = Literal["completed", "progress"]


class JobProgress(BaseModel):
    step: int
    total: int
    fraction: float = Field(ge=0, le=1)


class WebhookAttempt(BaseModel):
    """One POST of a delivery."""

    attempt: int = Field(description="1 for the first POST.")
    at: datetime = Field(description="When it was made.")
    response_status: Optional[int] = Field(None, description="The receiver's HTTP status; null: no answer.")
    error: Optional[str] = Field(None, description="Why it did not count as delivered.")
    duration_ms: Optional[int] = None


class WebhookDeliveryOut(BaseModel):
    """One event to deliver: POSTed until the receiver answers 2xx, retried with backoff."""

    id: str = Field(description="Sent as X-GCN-Delivery: the same on every retry (deduplicate on it).")
    event: WebhookEvent
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="POSTs made so far.")
    response_status: Optional[int] = Field(None, description="Of the last attempt.")
    error: Optional[str] = Field(None, description="Of the last attempt.")
    created_at: datetime
    last_attempt_at: Optional[datetime] = None
    next_attempt_at: Optional[datetime] = Field(None, description="When the next attempt is due; null unless pending.")
    delivered_at: Optional[datetime] = None
    log: list[WebhookAttempt] = Field(description="Every attempt, oldest first.")

    @classmethod
    def of(cls, d: WebhookDelivery) -> "WebhookDeliveryOut":
        return cls(id=d.id, event=d.event, status=d.status, attempts=d.attempts, response_status=d.response_status,
                   error=d.error, created_at=d.created_at, last_attempt_at=d.last_attempt_at,
                   next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                   delivered_at=d.delivered_at, log=[WebhookAttempt(**a) for a in (d.log or [])])


class WebhookOut(BaseModel):
    url: str
    events: list[WebhookEvent]
    deliveries: list[WebhookDeliveryOut] = Field(
        description="Oldest first: the completed event's delivery, and the latest progress events' (at most 3).")


class JobOut(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    progress: JobProgress
    eta_seconds: Optional[float] = Field(None, description="Estimated seconds left, as of updated_at.")
    metrics: dict[str, Any] = Field(description="Learning: gap (energy gap), f_obs, f_syn, stage, lr; sampling: init, size.")
    error: Optional[str] = None
    cancel_requested: bool
    params: dict[str, Any]
    result: dict[str, Any]
    attempts: int
    dataset_id: Optional[str] = None
    model_id: Optional[str] = None
    created_at: datetime
    updated_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    links: dict[str, Any]
    webhook: Optional[WebhookOut] = Field(
        None, description="Where this job's events are POSTed, and every delivery so far; null: no webhook.")

    @classmethod
    def of(cls, j: Job, deliveries: Optional[Iterable[WebhookDelivery]] = None) -> "JobOut":
        """The document of ``j``; ``deliveries`` default to those loaded with the row (none for a
        row that was never loaded, such as one just created)."""
        base = f"/v1/jobs/{j.id}"
        links: dict[str, Any] = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
        if j.kind == JobKind.learn.value:
            if j.has_preview:
                links["preview"] = f"{base}/preview.png"
            if j.status == JobStatus.succeeded.value and j.model_id:
                links["model"] = f"/v1/models/{j.model_id}"
                links["weights"] = f"/v1/models/{j.model_id}/weights"
        elif j.status == JobStatus.succeeded.value:
            links["images"] = [f"{base}/images/{k}.png" for k in range(int(j.result.get("images", 0)))]
            links["grid"] = f"{base}/grid.png"
        if j.model_id and j.kind != JobKind.learn.value:
            links["model"] = f"/v1/models/{j.model_id}"
        if j.dataset_id:
            links["dataset"] = f"/v1/datasets/{j.dataset_id}"
        total = max(j.total, 0)
        fraction = 1.0 if j.status == JobStatus.succeeded.value else (min(j.step / total, 1.0) if total else 0.0)
        webhook = None
        if j.webhook:
            rows = loaded_deliveries(j) if deliveries is None else list(deliveries)
            webhook = WebhookOut(url=j.webhook["url"], events=j.webhook.get("events") or ["completed"],
                                 deliveries=[WebhookDeliveryOut.of(d) for d in rows])
        return cls(
            id=j.id, kind=JobKind(j.kind), status=JobStatus(j.status),
            progress=JobProgress(step=j.step, total=total, fraction=fraction),
            eta_seconds=None if j.status in TERMINAL else j.eta_seconds, metrics=j.metrics or {}, error=j.error,
            cancel_requested=j.cancel_requested, params=j.params or {}, result=j.result or {}, attempts=j.attempts,
            dataset_id=j.dataset_id, model_id=j.model_id, created_at=j.created_at, updated_at=j.updated_at,
            started_at=j.started_at, finished_at=j.finished_at, links=links, webhook=webhook,
        )


def loaded_deliveries(j: Job) -> list[WebhookDelivery]:
    """``j.deliveries`` when they were loaded with the row, else [] (never a lazy load: the row's
    session is closed)."""
    return [] if "deliveries" in sa_inspect(j).unloaded else list(j.deliveries)


def render(document: BaseModel) -> str:
    """JSON text exactly as the API's responses render it (Starlette's JSONResponse: compact,
    UTF-8, no NaN); a non-finite float, which JSON cannot carry, becomes null."""
    data = document.model_dump(mode="json")
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(data), ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def body(j: Job, deliveries: Optional[Iterable[WebhookDelivery]] = None) -> str:
    """The job document as the JSON text that ``GET /v1/jobs/{id}`` answers with."""
    return render(JobOut.of(j, deliveries))


__all__ = ["JobOut", "JobProgress", "WebhookAttempt", "WebhookDeliveryOut", "WebhookOut", "body", "render"]
