"""Dependencies for routes, as ``Annotated`` aliases (``Store``, ``Artifacts``, ...).

``Services`` is built once by ``create_app`` and kept on ``app.state``; a route asks for the one
piece it needs. Who is asking is ``PrincipalDep`` (app/security.py).

These are ``async def`` on purpose: they only read attributes, and FastAPI runs a plain ``def``
dependency in its thread pool, one thread hand-off per dependency per request (measured: the
hand-offs, not the work, were most of a status request's cost under 32 concurrent clients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.artifacts import ArtifactStore
from service.auth import KeyStore
from service.cleanup import DataUsage
from service.db import Database
from service.jobs import JobStore
from service.queue import JobQueue
from service.settings import Settings


@dataclass
class Services:
    settings: Settings
    db: Database
    store: JobStore
    artifacts: ArtifactStore
    queue: JobQueue
    keys: KeyStore
    usage: DataUsage


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def _settings(s: Annotated[Services, Depends(get_services)]) -> Settings:
    return s.settings


async def _store(s: Annotated[Services, Depends(get_services)]) -> JobStore:
    return s.store


async def _artifacts(s: Annotated[Services, Depends(get_services)]) -> ArtifactStore:
    return s.artifacts


async def _queue(s: Annotated[Services, Depends(get_services)]) -> JobQueue:
    return s.queue


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(_settings)]
Store = Annotated[JobStore, Depends(_store)]
Artifacts = Annotated[ArtifactStore, Depends(_artifacts)]
Queue = Annotated[JobQueue, Depends(_queue)]
