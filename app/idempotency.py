"""``Idempotency-Key`` on the POSTs that create something (datasets, learning, samples,
reconstructions).

The first request with a given key (per API key) is handled and its answer stored: status,
JSON body and ``Location``. A retry with the same key and the same request gets that answer again
(same status, same body) and nothing new is created; the same key with a different request is
422. "The same request" means the same route and content: the parsed JSON body, or the bytes of
every uploaded file and the form fields, so a retry that only changes the multipart boundary or a
file name is still the same request. While the first request is still being handled a retry gets
409 with ``Retry-After``. Only successes are stored: after a 4xx or 5xx the key is free again, so
a corrected or later retry can go through. Records expire after ``GCN_IDEMPOTENCY_TTL`` seconds.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Optional

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from service.auth import Principal
from service.db import Database, IdempotencyRecord, utcnow

from .problems import Problem

STALE_IN_PROGRESS = 300.0  # a first attempt whose process died: its key is free again after this

IdempotencyKey = Annotated[Optional[str], Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Makes retrying this POST safe: a retry with the same key and request returns the first "
                "answer (same status and body) instead of doing the work again. Visible ASCII, 1-255 characters.",
)]


def fingerprint(route: str, content: Any) -> str:
    raw = json.dumps({"route": route, "content": content}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Idempotent:
    """``with Idempotent(db, principal, key, route, content) as idem:`` then return ``idem.replay``
    when it is set, else do the work and ``return idem.respond(status, model, location)``."""

    def __init__(self, db: Database, principal: Principal, key: Optional[str], route: str, content: Any,
                 ttl: float):
        self.db = db
        self.owner = principal.key_id or ""
        self.key = key
        self.print = fingerprint(route, content) if key else ""
        self.ttl = ttl
        self.replay: Optional[JSONResponse] = None
        self._mine = False

    def __enter__(self) -> "Idempotent":
        if not self.key:
            return self
        for _ in range(3):
            with self.db.session() as s:
                row = s.get(IdempotencyRecord, (self.owner, self.key))
                now = utcnow()
                if row is None or (now - row.created_at).total_seconds() > self.ttl:
                    if row is not None:
                        s.delete(row)
                        s.flush()
                    s.add(IdempotencyRecord(api_key_id=self.owner, key=self.key, fingerprint=self.print, created_at=now))
                    try:
                        s.commit()
                    except IntegrityError:
                        s.rollback()
                        continue  # another request with this key got there first: look again
                    self._mine = True
                    return self
            if row.fingerprint != self.print:
                raise Problem(422, "Idempotency-Key: this key was used for a different request; use a new key",
                              type="/problems/idempotency-key-reused",
                              errors=[{"field": "Idempotency-Key", "location": "header", "type": "value_error",
                                       "message": "already used for a different request"}])
            if row.status is not None:
                headers = {"Location": row.location} if row.location else {}
                headers["Idempotent-Replayed"] = "true"
                self.replay = JSONResponse(json.loads(row.body or "null"), status_code=row.status, headers=headers)
                return self
            if (now - row.created_at).total_seconds() > STALE_IN_PROGRESS:
                with self.db.session() as s:  # its first attempt died with its process: take the key over
                    taken = s.execute(update(IdempotencyRecord).where(
                        IdempotencyRecord.api_key_id == self.owner, IdempotencyRecord.key == self.key,
                        IdempotencyRecord.status.is_(None), IdempotencyRecord.created_at == row.created_at,
                    ).values(created_at=now)).rowcount
                    s.commit()
                if taken:
                    self._mine = True
                    return self
                continue
            raise Problem(409, "a request with this Idempotency-Key is still being handled; retry shortly",
                          title="Request in progress", type="/problems/idempotency-in-progress",
                          headers={"Retry-After": "1"})
        raise Problem(409, "a request with this Idempotency-Key is still being handled; retry shortly",
                      title="Request in progress", type="/problems/idempotency-in-progress", headers={"Retry-After": "1"})

    def respond(self, status: int, model: BaseModel, location: Optional[str] = None) -> JSONResponse:
        body = model.model_dump(mode="json")
        headers = {"Location": location} if location else {}
        if self._mine:
            with self.db.session() as s:
                s.execute(update(IdempotencyRecord).where(
                    IdempotencyRecord.api_key_id == self.owner, IdempotencyRecord.key == self.key,
                ).values(status=status, body=json.dumps(body), location=location))
                s.commit()
            self._mine = False
        return JSONResponse(body, status_code=status, headers=headers)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._mine:  # the work failed (or never answered): free the key for a retry
            with self.db.session() as s:
                s.execute(delete(IdempotencyRecord).where(
                    IdempotencyRecord.api_key_id == self.owner, IdempotencyRecord.key == self.key,
                    IdempotencyRecord.status.is_(None)))
                s.commit()
            self._mine = False
