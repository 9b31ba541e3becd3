"""`gcn serve` / `gcn worker` on the models' command line: one-line errors, non-zero exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def gcn(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCN_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_help_lists_the_science_and_the_service_commands():
    r = gcn("--help")
    assert r.returncode == 0
    for command in ("train", "sample", "presets", "serve", "worker"):
        assert command in r.stdout


@pytest.mark.parametrize("args,word", [
    (["serve", "--port", "0"], "--port"),
    (["serve", "--workers", "-1"], "--workers"),
    (["serve", "--bogus"], "--bogus"),
    (["worker", "--concurrency", "0"], "--concurrency"),
    (["nonsense"], "nonsense"),
])
def test_bad_options_are_one_line_and_exit_2(args, word):
    r = gcn(*args)
    assert r.returncode == 2 and word in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("gcn: error:")


def test_a_busy_port_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = gcn("serve", "--port", str(s.getsockname()[1]), "--workers", "0", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "cannot listen" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_console_script_is_the_service_cli():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'gcn = "service.cli:main"' in text


def test_dependencies_point_one_way():
    """worker/ never imports FastAPI; app/ never imports worker/ (nor Celery's worker machinery)."""
    code = "import sys, worker.tasks; assert 'fastapi' not in sys.modules and 'starlette' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-c", "import sys, app.main; "
                        "assert not [m for m in sys.modules if m == 'worker' or m.startswith('worker.')]"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_test_modules_have_unique_names():
    """The test folders are not packages, so pytest imports each test module by its file name:
    two files of one name in different folders break collection of the whole suite."""
    names = [p.name for p in (ROOT / "tests").rglob("*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1 and n != "conftest.py") == []


def test_keys_are_created_once_listed_without_tokens_and_revoked(tmp_path):
    import hashlib
    import json

    from service.auth import KeyStore
    from service.db import Database

    r = gcn("keys", "create", "--admin", "--name", "ops", "--max-queued", "5", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("gcn_") and len(token) >= 40 and "shown only now" in r.stderr
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    principal = KeyStore(db).authenticate(token)
    assert principal is not None and principal.admin and principal.max_queued_jobs == 5
    with db.engine.connect() as conn:  # only its hash is stored
        stored = [str(v) for row in conn.exec_driver_sql("SELECT * FROM gcn_api_keys") for v in row]
    assert hashlib.sha256(token.encode()).hexdigest() in stored and not any(token in v for v in stored)

    listed = gcn("keys", "list", "--json", "--data-dir", str(tmp_path))
    row = json.loads(listed.stdout)
    assert row["name"] == "ops" and row["admin"] and row["revoked_at"] is None and token not in listed.stdout

    revoked = gcn("keys", "revoke", row["id"][:8], "--data-dir", str(tmp_path))
    assert revoked.returncode == 0 and "gcn: revoked key" in revoked.stderr, revoked.stderr
    assert KeyStore(db).authenticate(token) is None
    missing = gcn("keys", "revoke", "ffffffff", "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and missing.stderr.startswith("gcn: error:")
    db.dispose()


def test_cleanup_command(tmp_path):
    r = gcn("cleanup", "--dry-run", "--data-dir", str(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith("gcn: would remove 0 job(s)"), r.stderr
