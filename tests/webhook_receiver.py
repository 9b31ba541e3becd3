"""A webhook receiver for tests: a threaded ``http.server`` on 127.0.0.1 that records every POST
and answers from a script (statuses in order, then ``default``)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

HANG = "hang"  # script entry: hold the request open until ``release()``, then drop it unanswered


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return self.headers.get("X-GCN-Event", "")

    @property
    def delivery(self) -> str:
        return self.headers.get("X-GCN-Delivery", "")


class Receiver:
    def __init__(self, *script: Union[int, str], default: int = 200):
        self.script = list(script)
        self.default = default
        self.received: list[Received] = []
        self.hanging = threading.Event()  # set while a request is held (HANG)
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
                    action = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver._changed.notify_all()
                if action == HANG:
                    receiver.hanging.set()
                    receiver._release.wait(120)
                    self.close_connection = True
                    return
                self.send_response(int(action))
                if int(action) == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/gcn?token=t"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self._release.set()

    def wait(self, count: int = 1, timeout: float = 30.0, event: str | None = None) -> list[Received]:
        """Until ``count`` POSTs (of ``event``, if given) arrived; returns them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self.received if event is None or r.event == event]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                assert left > 0, f"{len(got)} of {count} webhook POST(s) arrived in {timeout} s"
                self._changed.wait(left)
