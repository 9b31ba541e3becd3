"""The broker restarted under queued jobs. With append-only persistence (as in docker-compose)
the queued messages survive the restart; without it they are gone, and the worker's reconciler
notices queued jobs that are not waiting in the broker and publishes them again. Either way every
job finishes, and restarting the API loses nothing either (the job table is the truth).

Runs its own redis-server on a free port with a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

from gcn_e2e import Api, ApiThread, free_port, start_worker, stop_process

pytestmark = pytest.mark.slow

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    def __init__(self, folder, port: int, appendonly: bool):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=(folder / "redis.log").open("a"), stderr=subprocess.STDOUT)
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=port, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def llen(self, queue: str) -> int:
        import redis

        return redis.Redis(port=self.port).llen(queue)

    def stop(self, kill: bool = False) -> None:
        self.proc.kill() if kill else self.proc.terminate()  # SIGTERM: Redis flushes its append-only file
        self.proc.wait(20)


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
def test_queued_jobs_survive_a_broker_restart(tmp_path, own_postgres_url, brick64):
    from service.settings import Settings

    port = free_port()
    queue = f"gpu-restart-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path / "data", database_url=own_postgres_url, broker_url=f"redis://127.0.0.1:{port}/0",
                        queue=queue, checkpoint_every=5, progress_interval=0.3, heartbeat_interval=1,
                        reconcile_interval=1, republish_after=3, torch_threads=1, device="cpu")
    redis_server = RedisServer(tmp_path / "redis", port, appendonly=True)
    worker = None
    try:
        with ApiThread(settings) as api_server:
            api = Api(api_server.url)
            dataset = api.upload(brick64)
            first = [api.learn(dataset["id"], iterations=15)["id"] for _ in range(3)]
        assert redis_server.llen(queue) == 3  # no worker: all three wait in the broker

        # 1. With append-only persistence, the messages survive a restart of Redis.
        redis_server.stop()
        redis_server = RedisServer(tmp_path / "redis", port, appendonly=True)
        assert redis_server.llen(queue) == 3
        worker = start_worker(settings, tmp_path / "worker1.log", f"restart1-{queue}")
        with ApiThread(settings) as api_server:  # a restarted API: the same jobs, nothing lost
            api = Api(api_server.url)
            done = [api.wait(j, timeout=120) for j in first]
            assert [j["status"] for j in done] == ["succeeded"] * 3, done
            assert [j["attempts"] for j in done] == [1, 1, 1]
            stop_process(worker)
            worker = None

            # 2. Without persistence the messages are gone; the reconciler publishes them again.
            second = [api.learn(dataset["id"], iterations=15)["id"] for _ in range(2)]
            redis_server.stop(kill=True)
            redis_server = RedisServer(tmp_path / "redis-empty", port, appendonly=False)
            assert redis_server.llen(queue) == 0
            worker = start_worker(settings, tmp_path / "worker2.log", f"restart2-{queue}")
            done = [api.wait(j, timeout=120) for j in second]
            assert [j["status"] for j in done] == ["succeeded"] * 2, done
            log = (tmp_path / "worker2.log").read_text()
            assert all(f"job {j} republished" in log for j in second), log[-3000:]
    finally:
        if worker is not None:
            stop_process(worker)
        redis_server.stop(kill=True)
