"""Retention: expired results, models and uploads go (rows, then files), what a queued or running
job still needs stays, leftovers go after a grace period, and a TTL of 0 keeps everything."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import update

from service.artifacts import LocalArtifactStore, keys
from service.cleanup import DataUsage, cleanup
from service.db import Dataset, IdempotencyRecord, Job, Tombstone, TrainedModel, utcnow
from service.jobs import JobKind, JobStatus, new_id
from service.settings import Settings

DAY = 24 * 3600.0


def backdate(store, table, row_id, **fields):
    with store.db.session() as s:
        s.execute(update(table).where(table.id == row_id).values(**fields))
        s.commit()


def finished(store, kind=JobKind.sample, days=2.0, **kw):
    job = store.create(kind, {}, **kw)
    old = utcnow() - timedelta(days=days)
    backdate(store, Job, job.id, status=JobStatus.succeeded.value, finished_at=old, created_at=old)
    return job


def model(store, days=2.0):
    m = TrainedModel(id=new_id(), dataset_id=new_id(), job_id=new_id(), preset="p", kind="texture", learner="ml",
                     image_size=32, chain_size=None, iterations=1, config={}, curve=[],
                     created_at=utcnow() - timedelta(days=days))
    store.add(m)
    return m


def dataset(store, days=2.0, api_key_id=None):
    d = Dataset(id=new_id(), kind="texture", image_count=1, sizes=[[8, 8]], api_key_id=api_key_id,
                created_at=utcnow() - timedelta(days=days))
    store.add(d)
    return d


def test_expired_rows_and_files_go_and_what_active_jobs_need_stays(store, tmp_path):
    artifacts = LocalArtifactStore(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", result_ttl=DAY, upload_ttl=DAY)
    old_job, new_job = finished(store), finished(store, days=0.1)
    old_model, used_model, new_model = model(store), model(store), model(store, days=0.1)
    old_data, used_data = dataset(store), dataset(store)
    waiting_sample = store.create(JobKind.sample, {}, model_id=used_model.id)  # queued: needs its model
    waiting_learn = store.create(JobKind.learn, {}, dataset_id=used_data.id, model_id=new_id())
    for j in (old_job, new_job, waiting_sample):
        artifacts.put(keys.job_grid(j.id), b"png")
    for m in (old_model, used_model, new_model):
        artifacts.put(keys.model_weights(m.id), b"weights")
    for d in (old_data, used_data):
        artifacts.put(keys.dataset_image(d.id, 0), b"png")
    store.add(IdempotencyRecord(api_key_id="", key="old", fingerprint="f", status=201, body="{}",
                                created_at=utcnow() - timedelta(days=2)))
    store.add(IdempotencyRecord(api_key_id="", key="new", fingerprint="f", status=201, body="{}"))

    dry = cleanup(settings, store.db, artifacts, dry_run=True)
    assert dry.jobs == [old_job.id] and store.get(old_job.id) is not None and artifacts.exists(keys.job_grid(old_job.id))

    report = cleanup(settings, store.db, artifacts)
    assert report.jobs == [old_job.id] and report.models == [old_model.id] and report.datasets == [old_data.id]
    assert report.idempotency_keys == 1 and report.bytes_freed >= len(b"png") * 2 + len(b"weights")
    assert store.get(old_job.id) is None and not (tmp_path / "data" / keys.job(old_job.id)).exists()
    assert store.model(old_model.id) is None and not (tmp_path / "data" / keys.model(old_model.id)).exists()
    assert store.dataset(old_data.id) is None and not (tmp_path / "data" / keys.dataset(old_data.id)).exists()
    for kept in (new_job.id, waiting_sample.id, waiting_learn.id):
        assert store.get(kept) is not None
    assert store.model(used_model.id) and store.model(new_model.id) and store.dataset(used_data.id)
    assert artifacts.exists(keys.model_weights(used_model.id)) and artifacts.exists(keys.dataset_image(used_data.id, 0))
    with store.db.session() as s:
        assert [r.key for r in s.query(IdempotencyRecord)] == ["new"]
    assert cleanup(settings, store.db, artifacts).summary().startswith("0 job(s), 0 model(s), 0 dataset(s)")


def test_ttl_zero_keeps_everything(store, tmp_path):
    artifacts = LocalArtifactStore(tmp_path / "data")
    job, m, d = finished(store, days=3650), model(store, days=3650), dataset(store, days=3650)
    report = cleanup(Settings(data_dir=tmp_path / "data"), store.db, artifacts)
    assert (report.jobs, report.models, report.datasets) == ([], [], [])
    assert store.get(job.id) and store.model(m.id) and store.dataset(d.id)


def test_leftover_folders_and_temporary_files_go_after_a_grace_period(store, tmp_path):
    artifacts = LocalArtifactStore(tmp_path / "data")
    orphan, fresh_orphan, tmp_dir = new_id(), new_id(), new_id()
    live = store.create(JobKind.learn, {})
    artifacts.put(keys.job_grid(orphan), b"x" * 100)
    artifacts.put(keys.job_grid(fresh_orphan), b"x")
    artifacts.put(keys.job_checkpoint(live.id), b"ckpt")
    half_written = artifacts.path(keys.job(live.id)) / "checkpoint.safetensors.abc.tmp"
    half_written.write_bytes(b"partial")
    stray = artifacts.path("datasets") / "not-an-id"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"?")
    old = time.time() - 7200
    for p in (artifacts.path(keys.job(orphan)), half_written, stray, artifacts.path(keys.job(live.id))):
        os.utime(p, (old, old))
    report = cleanup(Settings(data_dir=tmp_path / "data"), store.db, artifacts)
    assert sorted(report.orphans) == sorted([keys.job(orphan), f"{keys.job(live.id)}/{half_written.name}",
                                            "datasets/not-an-id"])
    assert not artifacts.path(keys.job(orphan)).exists() and artifacts.exists(keys.job_grid(fresh_orphan))
    assert artifacts.exists(keys.job_checkpoint(live.id)) and not half_written.exists()


def test_data_usage_is_measured_and_cached(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 1000)
    usage = DataUsage(tmp_path, max_age=3600)
    assert usage.used() == 1000
    (tmp_path / "g").write_bytes(b"x" * 500)
    assert usage.used() == 1000  # cached
    usage.add(10)
    assert usage.used() == 1010
    usage.max_age = 0
    assert usage.used() == 1500


def test_every_dataset_of_an_active_learning_job_of_several_categories_stays(store, tmp_path):
    artifacts = LocalArtifactStore(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", result_ttl=DAY, upload_ttl=DAY)
    first, second, unused = dataset(store), dataset(store), dataset(store)
    store.create(JobKind.learn, {"categories": [{"name": "a", "dataset_id": first.id},
                                                {"name": "b", "dataset_id": second.id}]},
                 dataset_id=first.id, model_id=new_id())
    report = cleanup(settings, store.db, artifacts)
    assert report.datasets == [unused.id]
    assert store.dataset(first.id) is not None and store.dataset(second.id) is not None


def test_expired_rows_leave_tombstones_with_their_owner_until_the_tombstone_ttl(store, tmp_path):
    """What the API's 410 Gone rests on: one tombstone per removed row, with its kind and owner's
    key; none for a dry run, none twice, none for what stays; pruned after GCN_TOMBSTONE_TTL."""
    artifacts = LocalArtifactStore(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", result_ttl=DAY, upload_ttl=DAY, tombstone_ttl=7 * DAY)
    job, kept = finished(store, api_key_id="k1"), finished(store, days=0.1)
    old_model, old_data = model(store), dataset(store, api_key_id="k2")

    cleanup(settings, store.db, artifacts, dry_run=True)
    assert store.tombstone("job", job.id) is None
    cleanup(settings, store.db, artifacts)
    t = store.tombstone("job", job.id)
    assert t is not None and t.api_key_id == "k1" and abs((utcnow() - t.removed_at).total_seconds()) < 60
    assert store.tombstone("model", old_model.id).api_key_id is None
    assert store.tombstone("dataset", old_data.id).api_key_id == "k2"
    assert store.tombstone("model", job.id) is None and store.tombstone("job", kept.id) is None  # kind and id
    assert cleanup(settings, store.db, artifacts).tombstones_pruned == 0  # a second pass: nothing new, no clash
    with store.db.session() as s:
        assert s.query(Tombstone).count() == 3
        s.execute(update(Tombstone).where(Tombstone.id != old_data.id).values(removed_at=utcnow() - timedelta(days=8)))
        s.commit()
    forever = Settings(data_dir=tmp_path / "data", result_ttl=DAY, upload_ttl=DAY, tombstone_ttl=0)
    assert cleanup(forever, store.db, artifacts).tombstones_pruned == 0
    assert cleanup(settings, store.db, artifacts).tombstones_pruned == 2
    assert store.tombstone("job", job.id) is None and store.tombstone("dataset", old_data.id) is not None
