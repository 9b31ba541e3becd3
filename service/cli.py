"""The ``gcn`` command: the models' command line (train, sample, ...) plus ``serve`` and ``worker``.

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
