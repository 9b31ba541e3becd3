"""API keys: made by ``gcn keys create``, sent as ``Authorization: Bearer <token>``.

A token is ``gcn_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). Only its
SHA-256 is stored: a fast hash is right for a high-entropy random token (nothing to brute-force,
unlike a password), and it lets a request find its key by an indexed equality lookup; the final
comparison is constant-time all the same. The token itself is printed once and never again.

Every dataset, model and job records the key that made it (``api_key_id``); a ``Principal`` is
what a request acts as: one key (sees its own rows), an admin key (sees all), or ``ANONYMOUS``
where keys are switched off (``GCN_AUTH=off`` or a loopback ``gcn serve``), which sees all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import select, update

from .db import ApiKey, Database, utcnow
from .jobs import new_id

TOKEN_PREFIX = "gcn_"
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class Principal:
    key_id: Optional[str]  # None: anonymous (keys switched off)
    admin: bool
    name: str = ""
    max_running_jobs: Optional[int] = None
    max_queued_jobs: Optional[int] = None

    @property
    def sees_all(self) -> bool:
        return self.admin or self.key_id is None

    def owns(self, api_key_id: Optional[str]) -> bool:
        """May this principal see a row made by ``api_key_id``?"""
        return self.sees_all or (api_key_id is not None and api_key_id == self.key_id)


ANONYMOUS = Principal(key_id=None, admin=True, name="anonymous")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class NewKey:
    row: ApiKey
    token: str  # shown once


class KeyStore:
    def __init__(self, db: Database):
        self.db = db

    def create(self, *, name: str = "", admin: bool = False, max_running_jobs: Optional[int] = None,
               max_queued_jobs: Optional[int] = None) -> NewKey:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(id=new_id(), token_hash=hash_token(token), prefix=token[:12], name=name, admin=admin,
                     max_running_jobs=max_running_jobs, max_queued_jobs=max_queued_jobs, created_at=utcnow())
        with self.db.session() as s:
            s.add(row)
            s.commit()
        return NewKey(row, token)

    def list(self) -> list[ApiKey]:
        with self.db.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))

    def get(self, key_id: str) -> Optional[ApiKey]:
        with self.db.session() as s:
            return s.get(ApiKey, key_id)

    def find(self, ident: str) -> list[ApiKey]:
        """Keys whose id, or token prefix, starts with ``ident`` (for ``gcn keys revoke``)."""
        ident = ident.strip()
        if not ident:
            return []
        return [k for k in self.list() if k.id.startswith(ident) or k.prefix.startswith(ident) and len(ident) > 4]

    def revoke(self, key_id: str) -> bool:
        with self.db.session() as s:
            done = s.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow())).rowcount
            s.commit()
        return bool(done)

    def any_active(self) -> bool:
        with self.db.session() as s:
            return s.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def authenticate(self, token: str) -> Optional[Principal]:
        """The principal of a live key with this token, else None."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        digest = hash_token(token)
        with self.db.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.token_hash == digest))
        if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
            return None
        return Principal(key_id=row.id, admin=row.admin, name=row.name, max_running_jobs=row.max_running_jobs,
                         max_queued_jobs=row.max_queued_jobs)


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
