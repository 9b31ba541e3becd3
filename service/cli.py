"""The ``gcn`` command: the models' command line (train, sample, ...) plus the service commands
``serve``, ``worker``, ``keys`` (create, list, revoke API keys) and ``cleanup``.

``models.cli`` owns the science commands and the typer app; this module adds the service
commands to that same app, so one ``gcn`` does both (``[project.scripts] gcn = "service.cli:main"``).
Every failure is one line on stderr and a non-zero exit (2 for a bad command line).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

try:  # recent typer vendors click and does not re-export its usage errors
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - typer on top of click
    from click import exceptions as click_errors

from models.cli import app, fail, set_threads_from_env

__all__ = ["app", "main"]


def _settings(data_dir: Optional[Path]):
    from pydantic import ValidationError

    from .settings import Settings

    try:
        return Settings(data_dir=data_dir) if data_dir is not None else Settings()
    except ValidationError as e:
        err = e.errors()[0]
        fail(f"bad setting GCN_{str(err['loc'][0]).upper()}: {err['msg']}", 2)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=0, max=64, help="Worker processes to run beside the API (0: API only)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: GCN_DATA_DIR or ./gcn-data)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run the HTTP API and worker(s): with no GCN_BROKER_URL / GCN_DATABASE_URL, no server is needed."""
    from .embedded import PortInUse, serve as run

    settings = _settings(data_dir)
    try:
        run(settings, host=host, port=port, workers=workers, log_level=log_level.lower())
    except PortInUse as e:
        fail(str(e), 1)
    except OSError as e:
        fail(str(e), 1)


@app.command()
def worker(
    concurrency: int = typer.Option(1, min=1, max=64, help="Job processes (one per GPU)."),
    queue: Optional[str] = typer.Option(None, help="Queue to consume (default: GCN_QUEUE or gpu)."),
    name: Optional[str] = typer.Option(None, help="Worker name (default: celery@host)."),
    loglevel: str = typer.Option("info", "--loglevel", "--log-level", help="debug, info, warning or error."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: GCN_DATA_DIR or ./gcn-data)."),
) -> None:
    """Run a Celery worker for jobs (for Redis deployments: one per GPU, same GCN_* settings as the API)."""
    from .embedded import run_worker

    settings = _settings(data_dir)
    run_worker(settings if data_dir is not None else None, concurrency=concurrency, log_level=loglevel.upper(),
               name=name, queue=queue)


keys_app = typer.Typer(help="API keys: create (printed once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DATA_DIR = typer.Option(None, "--data-dir", help="Data folder (default: GCN_DATA_DIR or ./gcn-data).")


def _database(data_dir: Optional[Path]):
    from .db import Database

    settings = _settings(data_dir)
    db = Database(settings.database_url)
    try:
        db.create_all()
    except Exception as e:
        fail(f"cannot open the job database: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}", 1)
    return settings, db


@keys_app.command("create")
def keys_create(
    name: str = typer.Option("", "--name", help="A label to recognise the key by."),
    admin: bool = typer.Option(False, "--admin", help="An admin key sees every dataset, model and job."),
    max_running: Optional[int] = typer.Option(None, "--max-running", min=1, help="Jobs running at once (default: GCN_MAX_RUNNING_JOBS)."),
    max_queued: Optional[int] = typer.Option(None, "--max-queued", min=1, help="Jobs waiting (default: GCN_MAX_QUEUED_JOBS)."),
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    from .auth import KeyStore

    _, db = _database(data_dir)
    new = KeyStore(db).create(name=name, admin=admin, max_running_jobs=max_running, max_queued_jobs=max_queued)
    typer.echo(new.token)
    typer.echo(f"gcn: created {'admin ' if admin else ''}key {new.row.id}{f' ({name})' if name else ''}; "
               "it is shown only now: send it as `Authorization: Bearer <key>`", err=True)


@keys_app.command("list")
def keys_list(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per key."),
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """List API keys (id, token prefix, name, admin, limits, created, revoked); never the tokens."""
    import json

    from .auth import KeyStore

    _, db = _database(data_dir)
    for k in KeyStore(db).list():
        row = {"id": k.id, "prefix": k.prefix, "name": k.name, "admin": k.admin,
               "max_running_jobs": k.max_running_jobs, "max_queued_jobs": k.max_queued_jobs,
               "created_at": k.created_at.isoformat(), "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}
        if as_json:
            typer.echo(json.dumps(row))
        else:
            state = f"revoked {row['revoked_at'][:19]}" if k.revoked_at else "active"
            typer.echo(f"{k.id}  {k.prefix}...  {'admin' if k.admin else 'user '}  {state:28}  "
                       f"{row['created_at'][:19]}  {k.name}")


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="The key's id (or a unique start of it), or the start of the token."),
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Revoke an API key: requests with it get 401 from now on; what it made stays."""
    from .auth import KeyStore

    _, db = _database(data_dir)
    store = KeyStore(db)
    found = store.find(key)
    if not found:
        fail(f"no API key matches {key!r}", 1)
    if len(found) > 1:
        fail(f"{key!r} matches {len(found)} keys; give more of the id", 1)
    if store.revoke(found[0].id):
        typer.echo(f"gcn: revoked key {found[0].id}", err=True)
    else:
        typer.echo(f"gcn: key {found[0].id} was already revoked", err=True)


@app.command()
def cleanup(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Remove expired results and uploads (GCN_RESULT_TTL, GCN_UPLOAD_TTL) and leftover files.

    Workers do this every GCN_CLEANUP_INTERVAL seconds; this command does one pass now."""
    from .artifacts import LocalArtifactStore
    from .cleanup import cleanup as run

    settings, db = _database(data_dir)
    report = run(settings, db, LocalArtifactStore(settings.data_dir), dry_run=dry_run)
    typer.echo(f"gcn: {'would remove' if dry_run else 'removed'} {report.summary()}")


def main() -> None:
    """Console entry point: typer's own errors become one line too."""
    set_threads_from_env()
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError:
        sys.exit(2)  # the help was printed
    except click_errors.UsageError as e:
        typer.echo(f"gcn: error: {e.format_message()}", err=True)
        sys.exit(2)
    except click_errors.ClickException as e:
        typer.echo(f"gcn: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("gcn: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
