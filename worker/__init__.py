"""Celery worker: thin tasks that load a job, call models/, report progress, honour cancellation
and write artifacts. Never imports FastAPI; talks to the API only through the job table."""
