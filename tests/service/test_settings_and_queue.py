"""Settings from GCN_* variables, and the Celery configuration for long GPU jobs."""

from __future__ import annotations

from service.queue import TASK_NAME, make_celery
from service.settings import Settings


def test_defaults_need_no_server_and_live_under_the_data_dir(tmp_path, monkeypatch):
    for var in ("GCN_DATABASE_URL", "GCN_BROKER_URL", "GCN_DATA_DIR", "GCN_QUEUE"):
        monkeypatch.delenv(var, raising=False)
    s = Settings(data_dir=tmp_path / "d")
    assert s.data_dir == (tmp_path / "d").resolve()
    assert s.database_url == f"sqlite:///{s.data_dir / 'jobs.db'}"
    assert s.broker_url == f"sqla+sqlite:///{s.data_dir / 'broker.db'}" and s.embedded_broker
    assert s.queue == "gpu"


def test_environment_variables_configure_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("GCN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GCN_DATABASE_URL", "postgresql+psycopg2://u@db/gcn")
    monkeypatch.setenv("GCN_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("GCN_CHECKPOINT_EVERY", "7")
    monkeypatch.setenv("GCN_DEVICE", "cuda:1")
    s = Settings()
    assert (s.data_dir, s.database_url, s.broker_url) == (tmp_path.resolve(), "postgresql+psycopg2://u@db/gcn",
                                                           "redis://redis:6379/0")
    assert s.checkpoint_every == 7 and s.device == "cuda:1" and not s.embedded_broker
    env = s.to_env()
    assert env["GCN_CHECKPOINT_EVERY"] == "7" and "GCN_TORCH_THREADS" not in env
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings() == s  # what `gcn serve` exports, a worker reads back unchanged


def test_celery_is_configured_for_long_jobs(tmp_path):
    redis = make_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0", visibility_timeout=90000))
    c = redis.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.task_ignore_result
    assert c.worker_prefetch_multiplier == 1 and c.worker_concurrency == 1 and c.worker_pool == "prefork"
    assert c.broker_transport_options["visibility_timeout"] == 90000
    assert c.result_backend_transport_options["visibility_timeout"] == 90000
    assert c.task_routes[TASK_NAME]["queue"] == "gpu" and c.task_default_queue == "gpu"
    assert not c.worker_cancel_long_running_tasks_on_connection_loss

    embedded = make_celery(Settings(data_dir=tmp_path)).conf
    assert embedded.task_acks_late and embedded.worker_prefetch_multiplier == 1
    assert "visibility_timeout" not in embedded.broker_transport_options  # would go to create_engine()
    assert not embedded.worker_enable_remote_control


def test_amp_is_validated_and_normalised_for_the_workers(tmp_path, monkeypatch):
    import pydantic
    import pytest

    monkeypatch.setenv("GCN_AMP", "1")
    s = Settings(data_dir=tmp_path)
    assert s.amp == "on" and s.to_env()["GCN_AMP"] == "on"
    assert Settings(data_dir=tmp_path, amp="OFF").amp == "off"
    monkeypatch.setenv("GCN_AMP", "fast")
    with pytest.raises(pydantic.ValidationError, match="GCN_AMP must be auto, on or off"):
        Settings(data_dir=tmp_path)
