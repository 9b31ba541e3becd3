"""Prometheus metrics: request counts and latencies by route template, and job counts by state.

Each app gets its own registry (several apps can live in one test process). Job counts are read
from the job table when /metrics is scraped, so they are right however many API replicas run.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send

from service.jobs import JobKind, JobStatus, JobStore


class JobCollector:
    def __init__(self, store: JobStore):
        self.store = store

    def collect(self):
        family = GaugeMetricFamily("gcn_jobs", "Jobs in the job table, by kind and status.", labels=["kind", "status"])
        try:
            counts = self.store.counts()
        except Exception:
            counts = None
        if counts is not None:
            for kind in JobKind:
                for status in JobStatus:
                    family.add_metric([kind.value, status.value], counts.get((kind.value, status.value), 0))
        yield family


class Metrics:
    def __init__(self, store: JobStore):
        self.registry = CollectorRegistry()
        self.requests = Counter("gcn_http_requests", "HTTP requests.", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("gcn_http_request_duration_seconds", "Time to the response's first byte.",
                                 ["method", "route"], registry=self.registry)
        self.registry.register(JobCollector(store))


class MetricsMiddleware:
    """Pure ASGI (streams such as SSE pass straight through); labels use the route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - started)
                self.metrics.requests.labels(scope["method"], path, str(status[0])).inc()
            await send(message)

        await self.app(scope, receive, send_wrapper)
