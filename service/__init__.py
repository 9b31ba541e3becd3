"""The service layer that the API (app/) and the workers (worker/) share.

Settings, the job table and its state transitions, the artifact store, upload decoding and the
Celery configuration live here so that app/ never imports worker/ and worker/ never imports
FastAPI: dependencies point one way, app -> service <- worker -> models.
"""
