"""Service overhead: the real `gcn serve`, embedded and on Redis, against the same work called directly.

Every mode runs as subprocesses of this one (PYTHONPATH set, their own GCN_DATA_DIR in a temporary
folder, GCN_TORCH_THREADS=1 like the direct calls here), on 127.0.0.1 only:

- embedded: ``gcn serve --workers 1`` (SQLite job table, SQLite broker, one worker subprocess);
- redis: ``gcn serve --workers 0`` plus ``gcn worker``, GCN_BROKER_URL=redis://127.0.0.1:6379/<db>
  on a database number that is empty when the run starts (11-14); it is emptied again at the end;
  the job table is SQLite;
- redis+postgres: the same with the job table on PostgreSQL (``GCN_BENCH_POSTGRES_URL``, a fresh
  schema, dropped at the end), as docker-compose deploys it. The job table decides how the API
  reads a job: SQLite on the event loop, PostgreSQL in a worker thread (``Database.reads_inline``).

Measured in each mode, after learning one tiny model through the API:

1. submit-to-done latency of a tiny sampling job (POST /v1/models/{id}/samples, then GET
   /v1/jobs/{id} every ``POLL_S`` seconds until it has succeeded), repeated; and the same work
   called directly in this process (``checkpoint.load`` + ``synthesize`` + ``sample_images`` +
   PNG encoding, what the worker's task body does). Overhead = median latency - median direct.
   The server's own view (``finished_at - created_at``) is reported beside it.
2. GET /v1/jobs/{id} from 32 concurrent keep-alive clients (``status_load``): p50 / p99 latency
   at a bounded 320 requests per second, then requests per second and latency closed loop.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import httpx
import torch

from . import common

POLL_S = 0.01
STATUS_CLIENTS = 32
# The bounded load: 32 clients each asking every 100 ms, as 32 scripts polling their jobs at
# 10 Hz would (the page follows a job by server-sent events instead).
STATUS_RPS = 320.0
SAMPLE_JOB = {"n": 1, "size": 32, "steps": 10, "seed": 0}
TINY_MODEL = {"iterations": 2, "image_size": 32}
REDIS = "redis://127.0.0.1:6379"
# the docker-compose deployment's job table; a fresh schema per run, dropped at the end
POSTGRES = os.environ.get("GCN_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
MODES = ("embedded", "redis", "redis+postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(data_dir: Path, **gcn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCN_")}
    env.update({"PYTHONPATH": str(common.ROOT), "GCN_DATA_DIR": str(data_dir), "GCN_TORCH_THREADS": "1", **gcn})
    return env


class Processes:
    """Subprocesses started here (each in its own session), stopped by their own ids only."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, args: list[str], env: dict[str, str], name: str) -> tuple[subprocess.Popen, Path]:
        log = self.logs / f"{name}.log"
        p = subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=common.ROOT, env=env,
                             stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((p, log))
        return p, log

    def wait_for(self, p: subprocess.Popen, log: Path, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in log.read_text(errors="replace"):
                return
            if p.poll() is not None:
                raise RuntimeError(f"{p.args} exited {p.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"{text!r} not seen in {timeout} s:\n{log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        for p, _ in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group of a process we started (its workers)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def wait_job(http: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = http.get(f"/v1/jobs/{job_id}").json()
        if j["status"] in ("succeeded", "failed", "canceled"):
            if j["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {j['status']}: {j.get('error')}")
            return j
        time.sleep(POLL_S)
    raise RuntimeError(f"job {job_id} not done in {timeout} s")


def learn_tiny_model(http: httpx.Client) -> str:
    buf = io.BytesIO()
    common.brick_crop(64).save(buf, format="PNG")
    r = http.post("/v1/datasets", files=[("images", ("brick.png", buf.getvalue(), "image/png"))],
                  data={"kind": "texture"})
    r.raise_for_status()
    r = http.post("/v1/models", json={"dataset_id": r.json()["id"], "preset": "texture-fast", "overrides": TINY_MODEL})
    r.raise_for_status()
    job = wait_job(http, r.json()["id"], timeout=600)
    return job["model_id"]


def _ts(s: Optional[str]) -> Optional[float]:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def sampling_latency(http: httpx.Client, model_id: str, repeats: int) -> dict[str, Any]:
    client, server, loads = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        r = http.post(f"/v1/models/{model_id}/samples", json=SAMPLE_JOB)
        r.raise_for_status()
        j = wait_job(http, r.json()["id"])
        client.append(time.perf_counter() - t)
        c, f = _ts(j.get("created_at")), _ts(j.get("finished_at"))
        if c is not None and f is not None:
            server.append(f - c)
        loads.append(round(os.getloadavg()[0], 2))
    return {"client_s": client, "server_s": server, "median_client_s": statistics.median(client),
            "median_server_s": statistics.median(server) if server else None, "load_avg_1m": loads}


def direct_time(weights: Path, repeats: int) -> dict[str, Any]:
    """The sampling job's work without the service: load, synthesize, images, PNG bytes."""
    from models import checkpoint
    from models.pipeline import default_init, sample_images, synthesize

    def work() -> None:
        model, state = checkpoint.load(weights, torch.device("cpu"))
        chains = state[1].get("chains") if state else None
        init = default_init(model, chains, SAMPLE_JOB["size"])
        x = synthesize(model, SAMPLE_JOB["n"], size=SAMPLE_JOB["size"], steps=SAMPLE_JOB["steps"],
                       seed=SAMPLE_JOB["seed"], init=init, chains=chains, callback=lambda *a: None, callback_every=1)
        images, grid = sample_images(model, x)
        for im in [*images, grid]:
            im.save(io.BytesIO(), format="PNG")

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = common.interleaved({"direct": work}, torch.device("cpu"), repeats, warmup=2)["direct"]
    finally:
        torch.set_num_threads(old)
    return {"median_s": t.median, "timing": t.as_dict()}


def _cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of these processes (Linux /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (and of its children, e.g. embedded workers) onto ``cpus``."""
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:
                pass


def status_load(url: str, job_id: str, quick: bool, server_pid: Optional[int] = None) -> dict[str, Any]:
    """GET /v1/jobs/{id} from ``STATUS_CLIENTS`` keep-alive connections, in a load generator
    process of its own (bench/httpload.py): first bounded at ``STATUS_RPS`` requests per second
    in all (what the target is judged on), then closed loop (the most the server answers).

    With two or more CPUs the generator gets the last one and the server the others, so the two
    do not take turns on the same core; on one CPU they share it (``pinned`` says which)."""
    from . import httpload

    path = f"/v1/jobs/{job_id}"
    cpus = sorted(os.sched_getaffinity(0))
    pinned = len(cpus) >= 2 and server_pid is not None
    gen_cpus = {cpus[-1]} if pinned else None
    if pinned:
        _pin(server_pid, set(cpus[:-1]))
    pids = [server_pid] if server_pid else []
    seconds = 8 if quick else 20
    out: dict[str, Any] = {"pinned": f"generator on CPU {cpus[-1]}, server on {cpus[:-1]}" if pinned else "no"}
    try:
        for name, rate in (("bounded", STATUS_RPS), ("closed", None)):
            s0 = _cpu_seconds(pids)
            r = httpload.run_in_process(url, path, STATUS_CLIENTS, 10 ** 7, seconds, rate=rate, cpus=gen_cpus)
            server_cpu = _cpu_seconds(pids) - s0
            r.update(load_avg_1m=round(os.getloadavg()[0], 2), server_cpu_per_s=server_cpu / r["seconds"],
                     server_cpu_ms_per_request=1e3 * server_cpu / max(1, r["requests"]))
            out[name] = r
    finally:
        if pinned:
            _pin(server_pid, set(cpus))
    return out


def free_redis_db() -> Optional[int]:
    try:
        import redis
    except ImportError:
        return None
    for db in range(11, 15):
        try:
            r = redis.Redis.from_url(f"{REDIS}/{db}", socket_timeout=2)
            if r.dbsize() == 0:
                return db
        except Exception:
            return None
    return None


def postgres_schema(server: str = POSTGRES) -> Optional[tuple[str, Any]]:
    """(URL of a fresh schema on ``server``, drop function), or None when it is not reachable."""
    from sqlalchemy import create_engine, text

    schema = f"gcn_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception:
        engine.dispose()
        return None

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()

    return f"{server}?options=-csearch_path%3D{schema}", drop


def run_mode(mode: str, quick: bool, tmp: Path) -> dict[str, Any]:
    data = tmp / mode.replace("+", "-")
    data.mkdir()
    procs = Processes(tmp)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra: dict[str, str] = {}
    db = None
    drop = None
    if mode.startswith("redis"):
        db = free_redis_db()
        if db is None:
            return {"skipped": "no Redis at 127.0.0.1:6379 with an empty database among 11-14"}
        extra["GCN_BROKER_URL"] = f"{REDIS}/{db}"
    if mode.endswith("postgres"):
        found = postgres_schema()
        if found is None:
            return {"skipped": f"no PostgreSQL at {POSTGRES.split('@')[-1]}"}
        extra["GCN_DATABASE_URL"], drop = found
    env = child_env(data, **extra)
    try:
        common.log(f"service: {mode}: starting")
        if mode.startswith("redis"):
            server, slog = procs.start(["serve", "--port", str(port), "--workers", "0", "--log-level", "warning"],
                                       env, f"{mode}-serve")
            worker, wlog = procs.start(["worker", "--name", f"bench{port}", "--loglevel", "info"], env, f"{mode}-worker")
            procs.wait_for(worker, wlog, "ready.")
        else:
            server, slog = procs.start(["serve", "--port", str(port), "--workers", "1", "--log-level", "warning"],
                                       env, f"{mode}-serve")
        wait_http(url)
        with httpx.Client(base_url=url, timeout=30) as http:
            model_id = learn_tiny_model(http)
            common.log(f"service: {mode}: sampling jobs")
            repeats = 5 if quick else 15
            sampling_latency(http, model_id, 1)  # the worker loads what it needs once
            lat = sampling_latency(http, model_id, repeats)
            weights = next(data.rglob("*.safetensors"))
            direct = direct_time(weights, repeats)
            job_id = http.get("/v1/jobs", params={"limit": 1}).json()["items"][0]["id"]
        common.log(f"service: {mode}: status endpoint under 32 clients")
        load = status_load(url, job_id, quick, server.pid)
        return {
            "broker": extra.get("GCN_BROKER_URL", "sqla+sqlite (embedded)"),
            "job_table": "postgresql" if drop else "sqlite",
            "job": SAMPLE_JOB,
            "poll_s": POLL_S,
            "latency": lat,
            "direct": direct,
            "overhead_s": lat["median_client_s"] - direct["median_s"],
            "overhead_server_view_s": (lat["median_server_s"] - direct["median_s"]) if lat["median_server_s"] else None,
            "status_load": load,
        }
    finally:
        procs.stop()
        if db is not None:
            import redis

            redis.Redis.from_url(f"{REDIS}/{db}").flushdb()  # it was empty when we took it
        if drop is not None:
            drop()


def run(quick: bool, modes: Optional[list[str]] = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gcn-bench-") as tmp:
        for mode in modes or MODES:
            try:
                out[mode] = run_mode(mode, quick, Path(tmp))
            except Exception as e:  # one mode failing must not lose the other's figures
                out[mode] = {"error": f"{type(e).__name__}: {e}"[:3000]}
                common.log(f"service: {mode}: {out[mode]['error'][:300]}")
    out["load_avg_after"] = common.load()
    return out
