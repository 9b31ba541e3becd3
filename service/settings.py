"""Service settings, read once from ``GCN_``-prefixed environment variables (pydantic-settings).

Every process (API, worker, ``gcn serve``) builds the same ``Settings`` from the same environment,
so ``gcn serve`` configures its worker subprocesses simply by exporting ``to_env()``.
Defaults make a laptop run need nothing: SQLite for jobs and a SQLite-backed broker, both under
``data_dir``. Production sets ``GCN_DATABASE_URL`` (PostgreSQL) and ``GCN_BROKER_URL`` (Redis).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.precision import amp_setting


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GCN_", extra="ignore")

    # ---- where things live ---------------------------------------------------------------
    data_dir: Path = Field(Path("gcn-data"), description="Artifacts (datasets, weights, PNGs) and the embedded databases.")
    database_url: str = Field("", description="SQLAlchemy URL of the job table; empty: sqlite:///DATA_DIR/jobs.db.")
    broker_url: str = Field("", description="Celery broker; empty: sqla+sqlite:///DATA_DIR/broker.db (no server).")
    queue: str = Field("gpu", description="The Celery queue that jobs are sent to and workers consume.")

    # ---- worker --------------------------------------------------------------------------
    device: Optional[str] = Field(None, description="cpu, cuda or cuda:N; empty: CUDA when present.")
    torch_threads: Optional[int] = Field(None, ge=1, description="Cap on torch CPU threads in the worker child.")
    cpu_conv: Literal["auto", "onednn", "nnpack"] = Field(
        "auto",
        description="CPU convolutions (models.cpu_conv): auto times NNPACK against oneDNN per shape; "
        "onednn (with cpu_split off) for bitwise run-to-run reproducibility.",
    )
    cpu_split: Literal["auto", "off", "on"] = Field(
        "auto",
        description="CPU Langevin steps (models.cpu_split): auto times one pass against the chains split "
        "across the cores, one thread each (a single float32 chain: its convolutions' channels); off always "
        "one pass.",
    )
    amp: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bfloat16 autocast for the net (chains stay float32): auto (CUDA, and CPUs with AMX or "
        "AVX512-BF16; without AMX sampling loops time float32 beside it and keep bfloat16 only if under 90 % "
        "of float32's time), on, or off (float32 everywhere).",
    )
    checkpoint_every: int = Field(50, ge=1, description="Learning writes its checkpoint every N iterations.")
    progress_interval: float = Field(1.0, gt=0, description="At most one progress write per job per this many seconds.")
    cancel_poll_interval: float = Field(0.5, gt=0, description="Seconds between reads of a running job's cancel flag.")
    preview_interval: float = Field(5.0, gt=0, description="At least one preview PNG per this many seconds while learning.")
    heartbeat_interval: float = Field(5.0, gt=0, description="A running job's heartbeat period.")
    heartbeat_timeout: float = Field(60.0, gt=0, description="A running job whose heartbeat is older is orphaned.")
    reconcile_interval: float = Field(30.0, gt=0, description="Seconds between reconciler passes in each worker.")
    max_attempts: int = Field(3, ge=1, description="A job whose worker was lost this many times fails.")
    republish_after: float = Field(
        600.0, gt=0,
        description="A job queued this many seconds whose id is not waiting in the broker is published again.",
    )
    defer_interval: float = Field(
        10.0, gt=0, description="A job held back by its key's running-jobs limit is offered again after this many seconds.",
    )
    visibility_timeout: int = Field(
        7 * 24 * 3600, ge=60,
        description="Redis redelivers an unacknowledged job after this many seconds: keep it above the longest job.",
    )
    shutdown_grace: float = Field(10.0, ge=0, description="`gcn serve`: seconds a worker may finish its job on exit.")

    # ---- API -----------------------------------------------------------------------------
    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="API keys: required, off, or auto (required unless `gcn serve` binds a loopback address).",
    )
    auth_failure_limit: int = Field(
        30, ge=0,
        description="Requests with an invalid API key per client address per minute (per API process); past it, "
                    "that address's requests with a key get 429 until a minute after the oldest. 0: no limit.",
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Per uploaded file; larger is 413.")
    max_request_bytes: int = Field(
        100 * 1024 * 1024, ge=4096, description="Per request body (all files of an upload together); larger is 413.",
    )
    max_image_pixels: int = Field(40_000_000, ge=64, description="Per decoded image (width x height); more is 422.")
    max_dataset_images: int = Field(64, ge=1, description="Files per dataset upload.")
    max_job_memory_mb: int = Field(
        8192, ge=16, description="A job whose estimated tensor memory is larger is refused (422) when submitted.",
    )
    max_running_jobs: int = Field(2, ge=1, description="Per API key: jobs running at once (others wait, queued).")
    max_queued_jobs: int = Field(20, ge=1, description="Per API key: jobs waiting; beyond it, submitting is 429.")
    events_poll_interval: float = Field(0.5, gt=0, description="How often an SSE stream looks at its job.")
    idempotency_ttl: float = Field(24 * 3600.0, gt=0, description="Seconds an Idempotency-Key is remembered.")

    # ---- retention -----------------------------------------------------------------------
    result_ttl: float = Field(
        0, ge=0, description="Finished jobs (rows and result files) and models expire this many seconds after; 0: never.",
    )
    upload_ttl: float = Field(0, ge=0, description="Datasets expire this many seconds after upload; 0: never.")
    tombstone_ttl: float = Field(
        30 * 24 * 3600.0, ge=0,
        description="After cleanup removes an expired job, model or dataset, its owner gets 410 Gone for it (not 404) "
                    "for this many seconds; 0: forever.",
    )
    max_data_bytes: int = Field(
        0, ge=0, description="Quota on the data folder; new uploads past it are refused (507). 0: no quota.",
    )
    cleanup_interval: float = Field(600.0, gt=0, description="Seconds between cleanup passes in each worker.")

    # ---- webhooks (service/webhooks.py) --------------------------------------------------
    webhook_secret: str = Field(
        "", repr=False,
        description="HMAC-SHA256 key that signs webhook POSTs (X-GCN-Signature); empty: generated once and kept in "
                    "DATA_DIR/webhook-secret. Set it explicitly when workers do not share the data folder.",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhook URLs on loopback, private, link-local and other non-public addresses (refused "
                    "by default: a server-side request forgery risk). Development and tests only.",
    )
    webhook_timeout: float = Field(5.0, gt=0, le=60, description="Seconds one webhook POST may take.")
    webhook_max_attempts: int = Field(
        15, ge=1, le=50, description="POSTs of a completed event before its delivery fails (progress events: one).",
    )
    webhook_backoff: float = Field(5.0, gt=0, description="Seconds before the first retry; doubles each time (with jitter).")
    webhook_backoff_max: float = Field(3600.0, gt=0, description="Longest wait between two attempts.")
    webhook_progress_interval: float = Field(
        5.0, gt=0, description="At most one progress event per job per this many seconds (when asked for).",
    )
    webhook_poll_interval: float = Field(2.0, gt=0, description="How often a worker's sender looks for due deliveries.")
    webhook_concurrency: int = Field(4, ge=1, le=64, description="POSTs one worker's sender makes at once.")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, value: object) -> str:
        return amp_setting(str(value))  # auto / on / off; 1, 0, true, false, yes, no accepted

    @model_validator(mode="after")
    def _derive(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'jobs.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if self.webhook_secret and len(self.webhook_secret) < 16:
            raise ValueError("webhook_secret: use at least 16 characters (e.g. `openssl rand -hex 32`)")
        return self

    @property
    def embedded_broker(self) -> bool:
        """True for kombu's SQLAlchemy transport (the no-server default)."""
        return self.broker_url.startswith(("sqla+", "sqlalchemy+"))

    def auth_required(self, host: Optional[str] = None) -> bool:
        """Whether requests need an API key: ``auto`` is off only for a loopback bind address
        (``gcn serve`` passes its ``--host``); with no host known (``uvicorn app.main:app``) keys
        are required."""
        if self.auth != "auto":
            return self.auth == "required"
        return not (host is not None and is_loopback(host))

    def to_env(self) -> dict[str, str]:
        """These settings as ``GCN_*`` variables, for child processes."""
        env = {}
        for name, value in self.model_dump().items():
            if value is not None:
                env[f"GCN_{name.upper()}"] = str(value)
        return env


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; never 0.0.0.0 or a hostname that could resolve elsewhere."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
