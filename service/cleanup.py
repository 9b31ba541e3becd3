"""Retention and disk use: expired results and uploads go, leftovers go, the data folder has a quota.

``cleanup`` runs in every worker (with the reconciler, every ``GCN_CLEANUP_INTERVAL`` seconds)
and as ``gcn cleanup``. It removes, rows first and then their files (so a request never finds a
row whose files are gone):

- finished jobs older than ``GCN_RESULT_TTL`` seconds (row, result PNGs, preview, input image) and
  models older than that (row and weights) unless a queued or running job still needs the model;
- datasets older than ``GCN_UPLOAD_TTL`` seconds, unless a queued or running job still needs them;
- ``Idempotency-Key`` records older than ``GCN_IDEMPOTENCY_TTL``, and tombstones older than
  ``GCN_TOMBSTONE_TTL``;
- folders under ``datasets/``, ``models/``, ``jobs/`` that no row names and temporary files left by
  a killed writer, once they are an hour old (an upload writes its files just before its row).

A TTL of 0 keeps things forever. Each expired job, model and dataset leaves a tombstone (its id,
kind and owner's key, written in the transaction that deletes its row), so the API answers its
owner 410 Gone, with when, rather than 404 (another key still gets 404: nothing is revealed).
``DataUsage`` measures the data folder for ``GCN_MAX_DATA_BYTES`` (uploads past it are refused).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Optional

from sqlalchemy import delete, select

from .artifacts import LocalArtifactStore, keys
from .db import Database, Dataset, IdempotencyRecord, Job, Tombstone, TrainedModel, utcnow
from .jobs import TERMINAL, JobStatus, is_id
from .settings import Settings

log = logging.getLogger("gcn.cleanup")

ORPHAN_GRACE = 3600.0
ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


@dataclass
class CleanupReport:
    jobs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    idempotency_keys: int = 0
    tombstones_pruned: int = 0
    orphans: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def summary(self) -> str:
        return (f"{len(self.jobs)} job(s), {len(self.models)} model(s), {len(self.datasets)} dataset(s), "
                f"{self.idempotency_keys} idempotency record(s), {self.tombstones_pruned} old tombstone(s), "
                f"{len(self.orphans)} leftover file(s)/folder(s); "
                f"{self.bytes_freed} bytes freed")


def tree_size(path: Path) -> int:
    total = 0
    if path.is_file():
        return path.stat().st_size
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def cleanup(settings: Settings, db: Database, artifacts: LocalArtifactStore, *, dry_run: bool = False,
            orphan_grace: float = ORPHAN_GRACE) -> CleanupReport:
    report = CleanupReport()
    now = utcnow()
    doomed: list[str] = []  # artifact keys to delete after the rows are gone

    with db.session() as s:
        active_models = set(s.scalars(select(Job.model_id).where(Job.status.in_(ACTIVE), Job.kind != "learn")))
        active_datasets = set(s.scalars(select(Job.dataset_id).where(Job.status.in_(ACTIVE))))
        for params in s.scalars(select(Job.params).where(Job.status.in_(ACTIVE), Job.kind == "learn")):
            # a model of several categories learns from one dataset per category
            active_datasets.update(c.get("dataset_id") for c in (params or {}).get("categories") or [])

        if settings.result_ttl > 0:
            cutoff = now - timedelta(seconds=settings.result_ttl)
            jobs = list(s.scalars(select(Job.id).where(Job.status.in_(sorted(TERMINAL)), Job.finished_at < cutoff)))
            models = [m for m in s.scalars(select(TrainedModel.id).where(TrainedModel.created_at < cutoff))
                      if m not in active_models]
            report.jobs, report.models = jobs, models
            doomed += [keys.job(j) for j in jobs] + [keys.model(m) for m in models]
            if not dry_run:
                _remove(s, Job, "job", jobs, now)
                _remove(s, TrainedModel, "model", models, now)

        if settings.upload_ttl > 0:
            cutoff = now - timedelta(seconds=settings.upload_ttl)
            datasets = [d for d in s.scalars(select(Dataset.id).where(Dataset.created_at < cutoff))
                        if d not in active_datasets]
            report.datasets = datasets
            doomed += [keys.dataset(d) for d in datasets]
            if not dry_run:
                _remove(s, Dataset, "dataset", datasets, now)

        cutoff = now - timedelta(seconds=settings.idempotency_ttl)
        if dry_run:
            report.idempotency_keys = len(list(s.scalars(
                select(IdempotencyRecord.key).where(IdempotencyRecord.created_at < cutoff))))
        else:
            report.idempotency_keys = s.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)).rowcount or 0
        if settings.tombstone_ttl > 0:
            old = Tombstone.removed_at < now - timedelta(seconds=settings.tombstone_ttl)
            if dry_run:
                report.tombstones_pruned = len(list(s.scalars(select(Tombstone.id).where(old))))
            else:
                report.tombstones_pruned = s.execute(delete(Tombstone).where(old)).rowcount or 0
        if not dry_run:
            s.commit()

    for key in doomed:
        path = artifacts.path(key)
        if path.exists():
            report.bytes_freed += tree_size(path)
            if not dry_run:
                artifacts.delete_tree(key)

    _orphans(db, artifacts, report, dry_run=dry_run, grace=orphan_grace)
    if not dry_run and (report.jobs or report.models or report.datasets or report.orphans):
        log.info("cleanup: removed %s", report.summary())
    return report


def _remove(s, table, kind: str, ids: list[str], now) -> None:
    """Delete these rows and leave a tombstone for each row this transaction really deleted (two
    workers cleaning at once: the second deletes nothing, so it writes no duplicate tombstone)."""
    for chunk in _chunks(ids):
        removed = s.execute(delete(table).where(table.id.in_(chunk)).returning(table.id, table.api_key_id)).all()
        s.add_all(Tombstone(kind=kind, id=i, api_key_id=key, removed_at=now) for i, key in removed)


def _chunks(ids: list[str], size: int = 500):
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def _orphans(db: Database, artifacts: LocalArtifactStore, report: CleanupReport, *, dry_run: bool,
             grace: float) -> None:
    old = time.time() - grace
    tables = {"datasets": Dataset, "models": TrainedModel, "jobs": Job}
    for folder, table in tables.items():
        base = artifacts.root / folder
        if not base.is_dir():
            continue
        entries = [p for p in base.iterdir() if _older(p, old)]
        if not entries:
            continue
        names = [p.name for p in entries if is_id(p.name)]
        with db.session() as s:
            known = set()
            for chunk in _chunks(names):
                known.update(s.scalars(select(table.id).where(table.id.in_(chunk))))
        for p in entries:
            if p.name in known:
                continue
            report.orphans.append(str(p.relative_to(artifacts.root)))
            report.bytes_freed += tree_size(p)
            if not dry_run:
                if p.is_dir() and not p.is_symlink():
                    artifacts.delete_tree(str(p.relative_to(artifacts.root)))
                else:
                    p.unlink(missing_ok=True)
    # temporary files of writes cut short (a killed worker, a full disk)
    for folder in tables:
        base = artifacts.root / folder
        if not base.is_dir():
            continue
        for tmp in base.rglob("*.tmp"):
            if _older(tmp, old):
                report.orphans.append(str(tmp.relative_to(artifacts.root)))
                report.bytes_freed += tree_size(tmp)
                if not dry_run:
                    tmp.unlink(missing_ok=True)


def _older(p: Path, stamp: float) -> bool:
    try:
        return p.lstat().st_mtime < stamp
    except OSError:
        return False


class DataUsage:
    """Bytes under the data folder, measured at most every ``max_age`` seconds (walking a large
    folder on every upload would be slow); bytes this process writes are added in between."""

    def __init__(self, root: Path, max_age: float = 10.0):
        self.root = Path(root)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._bytes: Optional[int] = None
        self._when = 0.0

    def used(self) -> int:
        with self._lock:
            if self._bytes is None or time.monotonic() - self._when > self.max_age:
                self._bytes = tree_size(self.root) if self.root.exists() else 0
                self._when = time.monotonic()
            return self._bytes

    def add(self, n: int) -> None:
        with self._lock:
            if self._bytes is not None:
                self._bytes += n
