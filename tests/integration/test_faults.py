"""Fault injection: SIGKILL the worker at random (seeded) points of N learning jobs, on Redis and
PostgreSQL as deployed. Each kill hits a job mid-learning and takes either the job process alone
(Celery redelivers its message) or the whole worker, parent and child (its message stays parked
in Redis until the visibility timeout, days away: the restarted worker's reconciler requeues the
job). Every job must end ``succeeded`` (resumed from its checkpoint) or ``failed`` with a reason;
none lost, none stuck. The outcome is written to ``test-output/reliability/faults.json``
(docs/reliability.md reports it).

    GCN_FAULT_JOBS=6 GCN_FAULT_SEED=5 .venv/bin/python -m pytest tests/integration/test_faults.py
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from gcn_e2e import ROOT, cleanup_redis, start_worker, stop_process

pytestmark = pytest.mark.slow

JOBS = int(os.environ.get("GCN_FAULT_JOBS", "6"))
SEED = int(os.environ.get("GCN_FAULT_SEED", "5"))
ITERATIONS = 40
OUTPUT = Path(os.environ.get("GCN_TEST_OUTPUT", ROOT / "test-output")) / "reliability"


def cleanup_unacked(url: str, queue: str) -> None:
    """Messages a killed worker held stay in Redis's ``unacked`` hash until the visibility
    timeout; drop this run's, so that nothing of it is ever restored into a queue later."""
    import redis

    r = redis.Redis.from_url(url)
    for tag, payload in r.hgetall("unacked").items():
        if queue.encode() in payload:
            r.hdel("unacked", tag)
            r.zrem("unacked_index", tag)


def test_sigkill_at_random_points_loses_no_job(tmp_path, redis_url, own_postgres_url, brick64):
    from service.artifacts import LocalArtifactStore, keys, png_bytes
    from service.db import Database, Dataset
    from service.jobs import TERMINAL, JobKind, JobStore, new_id
    from service.queue import JobQueue, make_celery
    from service.settings import Settings
    from service.submit import submit

    rng = random.Random(SEED)
    queue_name = f"gpu-faults-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path / "data", database_url=own_postgres_url, broker_url=redis_url, queue=queue_name,
        checkpoint_every=5, progress_interval=0.2, cancel_poll_interval=0.2, heartbeat_interval=1,
        heartbeat_timeout=30, reconcile_interval=2, republish_after=8, max_attempts=5, torch_threads=1, device="cpu",
    )
    db = Database(settings.database_url)
    db.create_all()
    store = JobStore(db)
    artifacts = LocalArtifactStore(settings.data_dir)
    dataset = Dataset(id=new_id(), kind="texture", image_count=1, sizes=[[64, 64]])
    artifacts.put(keys.dataset_image(dataset.id, 0), png_bytes(brick64))
    store.add(dataset)
    queue = JobQueue(make_celery(settings), queue_name)
    overrides = {"iterations": ITERATIONS, "image_size": 32, "seed": 0}
    jobs = [submit(store, queue, JobKind.learn, {"preset": "texture-fast", "overrides": overrides},
                   dataset_id=dataset.id, model_id=new_id(), total=ITERATIONS).id for _ in range(JOBS)]
    queue.close()

    kinds = ["child", "worker"] * (JOBS // 2) + ["child"] * (JOBS % 2)
    rng.shuffle(kinds)
    plan = [(kind, rng.randint(3, ITERATIONS - 8), rng.uniform(0.0, 2.0)) for kind in kinds]
    starts = [0]

    def new_worker():
        starts[0] += 1
        return start_worker(settings, tmp_path / f"worker{starts[0]}.log", f"faults{starts[0]}-{queue_name}")

    kills, started = [], time.monotonic()
    worker = new_worker()
    try:
        killed_owners: set[str] = set()
        for kind, at_step, pause in plan:
            deadline = time.monotonic() + 120
            victim = None
            while time.monotonic() < deadline and victim is None:
                for job in store.running():
                    if job.id in jobs and job.owner not in killed_owners and job.step >= at_step:
                        victim = job
                        break
                if victim is None:
                    if all(store.get(j).status in TERMINAL for j in jobs):
                        break
                    time.sleep(0.05)
            if victim is None:
                break  # every job finished before the remaining kills: nothing left to hit
            pid = int(victim.owner.rpartition(":")[2])
            if kind == "child":
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue  # it finished and its process was replaced in between: no kill this time
            else:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            killed_owners.add(victim.owner)
            kills.append({"job": jobs.index(victim.id), "kill": kind, "step": victim.step, "attempt": victim.attempts})
            if kind == "worker":
                time.sleep(pause)  # the machine is down for a moment; queued jobs wait in Redis
                worker = new_worker()

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not all(store.get(j).status in TERMINAL for j in jobs):
            assert worker.poll() is None, "the worker died by itself"
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        final = [store.get(j) for j in jobs]
    finally:
        stop_process(worker)
        cleanup_unacked(redis_url, queue_name)
        cleanup_redis(redis_url, queue_name)
        db.dispose()

    stuck = [(j.id, j.status, j.step) for j in final if j.status not in TERMINAL]
    assert not stuck, f"jobs not finished: {stuck}; kills {kills}"
    outcomes = {s: sum(j.status == s for j in final) for s in ("succeeded", "failed", "canceled")}
    for j in final:
        assert j.status in ("succeeded", "failed"), (j.id, j.status, j.error)
        if j.status == "failed":
            assert j.error, j.id
        else:
            assert j.result["iterations"] == ITERATIONS and store.model(j.model_id) is not None
    resumed = [j for j in final if j.status == "succeeded" and j.attempts > 1]
    killed_jobs = {k["job"] for k in kills}
    assert len(kills) >= min(JOBS, 4), kills  # the kills did land
    for index in killed_jobs:
        j = final[index]
        assert j.attempts >= 2, (index, j.attempts)  # every killed job was taken up again
    report = {
        "jobs": JOBS, "seed": SEED, "iterations_per_job": ITERATIONS, "kills": kills,
        "kills_by_kind": {k: sum(x["kill"] == k for x in kills) for k in ("child", "worker")},
        "outcomes": outcomes, "resumed": len(resumed),
        "resumed_from": sorted(j.result.get("resumed_from", 0) for j in resumed),
        "attempts": sorted(j.attempts for j in final), "worker_starts": starts[0],
        "seconds": round(elapsed, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()} {platform.release()}",
    }
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "faults.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


def test_a_job_that_keeps_killing_its_worker_fails_with_a_reason(tmp_path, redis_url, own_postgres_url, brick64):
    """The bound on attempts: a job whose process dies every time is failed, saying why, instead
    of being retried forever."""
    from service.artifacts import LocalArtifactStore, keys, png_bytes
    from service.db import Database, Dataset
    from service.jobs import TERMINAL, JobKind, JobStore, new_id
    from service.queue import JobQueue, make_celery
    from service.settings import Settings
    from service.submit import submit

    queue_name = f"gpu-doomed-{uuid.uuid4().hex[:10]}"
    settings = Settings(data_dir=tmp_path / "data", database_url=own_postgres_url, broker_url=redis_url,
                        queue=queue_name, checkpoint_every=5, progress_interval=0.2, heartbeat_interval=1,
                        reconcile_interval=2, max_attempts=2, torch_threads=1, device="cpu")
    db = Database(settings.database_url)
    db.create_all()
    store = JobStore(db)
    dataset = Dataset(id=new_id(), kind="texture", image_count=1, sizes=[[64, 64]])
    LocalArtifactStore(settings.data_dir).put(keys.dataset_image(dataset.id, 0), png_bytes(brick64))
    store.add(dataset)
    queue = JobQueue(make_celery(settings), queue_name)
    job_id = submit(store, queue, JobKind.learn, {"preset": "texture-fast", "overrides": {"iterations": 400, "image_size": 32}},
                    dataset_id=dataset.id, model_id=new_id(), total=400).id
    queue.close()
    worker = start_worker(settings, tmp_path / "worker.log", f"doomed-{queue_name}")
    try:
        killed: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = store.get(job_id)
            if job.status in TERMINAL:
                break
            if job.status == "running" and job.owner not in killed and job.step >= 2:
                killed.add(job.owner)
                os.kill(int(job.owner.rpartition(":")[2]), signal.SIGKILL)
            time.sleep(0.05)
        job = store.get(job_id)
    finally:
        stop_process(worker)
        cleanup_unacked(redis_url, queue_name)
        cleanup_redis(redis_url, queue_name)
        db.dispose()
    assert len(killed) == 2
    assert job.status == "failed" and "gave up after 2 attempts" in job.error and "worker lost" in job.error, job.error
    assert store.model(job.model_id) is None
