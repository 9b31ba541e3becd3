"""Helpers for end-to-end tests: processes, an API thread, an HTTP client for the service."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("GCN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("GCN_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
TERMINAL = {"succeeded", "failed", "canceled"}
TINY = {"iterations": 30, "image_size": 32}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**gcn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCN_")}
    env.update({"PYTHONPATH": str(ROOT), "GCN_TORCH_THREADS": "1", **gcn})
    return env


def stop_process(p: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL to its whole process group (workers run in their own session)."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait(10)


def wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not seen in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


class ApiThread:
    """uvicorn serving ``create_app(settings)`` in a thread of the test process."""

    def __init__(self, settings):
        import uvicorn

        from app.main import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings, host="127.0.0.1"), host="127.0.0.1", port=self.port,
                                                    log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ApiThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Api:
    """A small client for the service's HTTP API."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def upload(self, *images, kind: str = "texture") -> dict:
        files = []
        for k, im in enumerate(images):
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            files.append(("images", (f"{k}.png", buf.getvalue(), "image/png")))
        r = self.http.post("/v1/datasets", files=files, data={"kind": kind})
        assert r.status_code == 201, r.text
        return r.json()

    def learn(self, dataset_id: str, preset: str = "texture-fast", **overrides) -> dict:
        r = self.http.post("/v1/models", json={"dataset_id": dataset_id, "preset": preset,
                                               "overrides": {**TINY, **overrides}})
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
        return r.json()

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, until=lambda j: j["status"] in TERMINAL, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            j = self.job(job_id)
            if until(j):
                return j
            assert time.monotonic() < deadline, f"job {job_id} still {j['status']} at step {j['progress']}"
            time.sleep(0.1)

    def events(self, job_id: str, timeout: float = 120) -> list[tuple[str, dict]]:
        """Every (event, data) of the job's SSE stream until it closes."""
        out, event = [], None
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    out.append((event, json.loads(line.split(":", 1)[1])))
        return out


def start_worker(settings, log: Path, name: str) -> subprocess.Popen:
    env = child_env(**settings.to_env())
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--name", name, "--loglevel", "info"],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_line(log, "ready.", proc)
    return proc


def cleanup_redis(url: str, queue: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    for key in r.scan_iter(match=f"*{queue}*"):
        r.delete(key)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc), to check that nothing is left behind."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Serve:
    """``gcn serve`` in a subprocess (its own session, so SIGINT reaches it alone, like Ctrl-C)."""

    def __init__(self, data_dir: Path, log: Path, *args: str, **gcn: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = child_env(GCN_DATA_DIR=str(data_dir), **gcn)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), *args],
            cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_line(log, "gcn: serving", self.proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        stop_process(self.proc)


# short intervals, so that progress, cancel and shutdown take a fraction of a second in tests
SERVE_FAST = dict(GCN_CHECKPOINT_EVERY="5", GCN_PROGRESS_INTERVAL="0.3", GCN_CANCEL_POLL_INTERVAL="0.2",
                  GCN_SHUTDOWN_GRACE="2", GCN_DEVICE="cpu")
STACK_FAST = dict(checkpoint_every=5, progress_interval=0.3, cancel_poll_interval=0.2, heartbeat_interval=1,
                  torch_threads=1, device="cpu")


@contextlib.contextmanager
def serving(folder: Path, **gcn: str):
    """``gcn serve`` on ``folder/data`` with ``SERVE_FAST`` (and ``gcn`` overrides), killed at the
    end unless the test stopped it."""
    server = Serve(folder / "data", folder / "serve.log", **{**SERVE_FAST, **gcn})
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.kill()


@contextlib.contextmanager
def redis_stack(folder: Path, database_url: str, redis_url: str, name: str, **settings):
    """As deployed: a Celery worker subprocess on a Redis queue of its own and the API (uvicorn,
    in a thread), on the database at ``database_url``. Yields a dict with ``settings``, ``api``
    (an ``Api``), ``worker`` (a test that replaces it stores the new one there) and ``folder``."""
    from service.db import Database
    from service.settings import Settings

    queue = f"gpu-test-{uuid.uuid4().hex[:10]}"
    s = Settings(data_dir=folder / "data", database_url=database_url, broker_url=redis_url, queue=queue,
                 **{**STACK_FAST, **settings})
    Database(s.database_url).create_all()
    state = {"settings": s, "folder": folder, "worker": start_worker(s, folder / "worker.log", f"{name}-{queue}")}
    try:
        with ApiThread(s) as api:
            state["api"] = Api(api.url)
            yield state
    finally:
        stop_process(state["worker"])
        cleanup_redis(redis_url, queue)
