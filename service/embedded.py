"""``gcn serve``: the API (uvicorn, in this process) plus worker subprocesses, nothing else to run.

Each worker is a real Celery worker (``gcn worker`` in a subprocess: same tasks, same code path
as production, not eager mode) in its own session, so a terminal's Ctrl-C reaches only this
process, which then stops everything in order:

1. uvicorn stops serving (open event streams get a few seconds);
2. each worker gets SIGTERM (warm shutdown: it stops taking jobs and may finish the current one
   within ``GCN_SHUTDOWN_GRACE`` seconds);
3. then SIGQUIT (cold shutdown), then SIGKILL to its process group. A job cut off this way stays
   ``running`` with its checkpoint; the next worker's reconciler sees its process gone, requeues
   it, and it resumes.

Workers also get SIGTERM from the kernel if this process dies without cleaning up (Linux
``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from .settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class PortInUse(RuntimeError):
    pass


class _Stop(Exception):
    """Raised by our signal handlers (after uvicorn has shut down) to leave ``serve``."""


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUse(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **settings.to_env()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def spawn_worker(settings: Settings, index: int, log_level: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "service.cli", "worker", "--loglevel", log_level, "--name", f"embedded{index}"]
    return subprocess.Popen(cmd, env=child_env(settings), start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def stop_workers(procs: list[subprocess.Popen], grace: float, hurry: Optional[list[bool]] = None) -> None:
    """SIGTERM, then SIGQUIT after ``grace`` seconds, then SIGKILL to the whole group; when
    ``hurry[0]`` turns true (a second Ctrl-C) the current wait is cut short."""
    hurry = hurry if hurry is not None else [False]
    steps = [(signal.SIGTERM, grace, False), (signal.SIGQUIT, 10.0, False), (signal.SIGKILL, 5.0, True)]
    for sig, wait, group in steps:
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            try:
                os.killpg(p.pid, sig) if group else os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(p.poll() is None for p in alive) and not hurry[0]:
            time.sleep(0.1)
        hurry[0] = False


def _safe(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)


def serve(settings: Settings, *, host: str, port: int, workers: int, log_level: str = "info") -> None:
    import uvicorn

    from app.main import create_app
    from service.db import Database

    from service.auth import KeyStore

    check_port(host, port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    db.create_all()
    keys_required = settings.auth_required(host)
    have_keys = KeyStore(db).any_active()
    procs = [spawn_worker(settings, i, log_level) for i in range(workers)]

    def stop(_sig, _frame):
        raise _Stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    print(f"gcn: serving {url}  (API docs {url}/docs; data in {settings.data_dir}; "
          f"{workers} worker{'s' if workers != 1 else ''}; Ctrl-C stops)", flush=True)
    print(f"gcn: job table {_safe(settings.database_url)}; broker {_safe(settings.broker_url)}", flush=True)
    if keys_required:
        hint = "" if have_keys else " (none exists yet: create one with `gcn keys create`)"
        print(f"gcn: API keys required (GCN_AUTH={settings.auth}){hint}", flush=True)
    else:
        print(f"gcn: API keys off (GCN_AUTH={settings.auth}, listening on {host})", flush=True)
    try:
        config = uvicorn.Config(create_app(settings, host=host), host=host, port=port, log_level=log_level,
                                 timeout_graceful_shutdown=3)
        uvicorn.Server(config).run()
    except _Stop:
        pass
    finally:
        hurry = [False]

        def again(_sig, _frame):  # another Ctrl-C while stopping: skip to the next, harder signal
            hurry[0] = True

        signal.signal(signal.SIGINT, again)
        signal.signal(signal.SIGTERM, again)
        if any(p.poll() is None for p in procs):
            print("gcn: stopping worker(s) (Ctrl-C again to hurry)", flush=True)
        stop_workers(procs, settings.shutdown_grace, hurry)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("gcn: stopped", flush=True)


def run_worker(settings: Optional[Settings] = None, *, concurrency: int = 1, log_level: str = "info",
               name: Optional[str] = None, queue: Optional[str] = None) -> None:
    """A Celery worker in this process (prefork, one child per GPU): ``gcn worker``."""
    if queue:
        os.environ["GCN_QUEUE"] = queue
    if settings is not None:
        os.environ.update(settings.to_env())
    from worker.celery_app import celery

    argv = ["worker", f"--loglevel={log_level}", "--pool=prefork", f"--concurrency={concurrency}",
            f"--queues={celery.conf.task_default_queue}", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--prefetch-multiplier=1"]
    if name:
        argv.append(f"--hostname={name}@%h")
    celery.worker_main(argv)
