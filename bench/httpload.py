"""A lean HTTP/1.1 load generator for one GET path: N keep-alive connections on raw asyncio streams.

Why not httpx: on a 2-core machine the generator shares the cores with the server it measures,
and httpx spends ~2 ms of CPU per request (more than the server's own work), so the figures
measured the client. This one parses only the status line and Content-Length (~0.1 ms per
request), and can run in its own process pinned to its own core (``run_in_process``).

Two ways to load the server:

- closed loop (``rate=None``): every client sends its next request as soon as the last answer
  arrives, the most the server can take; latency then grows with the queue (32 clients / req/s).
- bounded (``rate=R``): the clients together send R requests per second on a fixed schedule
  (each client every clients/R seconds), latency measured from the scheduled send time, so
  a stalled server is charged for the requests it delayed (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import time
from typing import Any, Optional
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length is None:
        raise HttpError("answer without Content-Length (chunked answers are not supported here)")
    await reader.readexactly(length)
    return status


async def load(url: str, path: str, clients: int, max_requests: int, max_seconds: float,
               rate: Optional[float] = None, headers: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Load ``url + path`` with ``clients`` connections; latencies in seconds, per request."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    conns = [await asyncio.open_connection(host, port) for _ in range(clients)]
    for r, w in conns:  # one warm-up request per connection
        if await _get(r, w, request) != 200:
            raise HttpError(f"GET {path} did not answer 200")
    latencies: list[float] = []
    errors = 0
    budget = [max_requests]
    t0 = time.perf_counter()
    stop_at = t0 + max_seconds
    interval = clients / rate if rate else 0.0

    async def client(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal errors
        due = t0 + interval * i / clients  # spread the clients' schedules over one interval
        while budget[0] > 0:
            if rate:
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                start = due
                due += interval
            else:
                start = time.perf_counter()
            if start >= stop_at:
                return
            budget[0] -= 1
            status = await _get(reader, writer, request)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors += 1

    c0 = time.process_time()
    await asyncio.gather(*(client(i, r, w) for i, (r, w) in enumerate(conns)))
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - c0
    for _, w in conns:
        w.close()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"clients": clients, "mode": f"bounded at {rate:g} req/s" if rate else "closed loop",
            "offered_rps": rate, "requests": len(latencies), "errors": errors, "seconds": elapsed,
            "rps": len(latencies) / elapsed, "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3,
            "max_ms": max(latencies) * 1e3, "client_cpu_per_s": client_cpu / elapsed}


def _child(conn, cpus: Optional[set[int]], args: tuple, kwargs: dict) -> None:
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        conn.send(("ok", asyncio.run(load(*args, **kwargs))))
    except BaseException as e:  # report, do not hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))


def run_in_process(*args: Any, cpus: Optional[set[int]] = None, **kwargs: Any) -> dict[str, Any]:
    """``load(...)`` in a fresh process (optionally pinned to ``cpus``), so that the generator's
    event loop competes with nothing of this process."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, cpus, args, kwargs), daemon=True)
    p.start()
    child.close()
    timeout = float(kwargs.get("max_seconds", args[4] if len(args) > 4 else 60)) + 60
    if not parent.poll(timeout):
        p.kill()
        raise HttpError(f"the load generator did not finish in {timeout:.0f} s")
    kind, value = parent.recv()
    p.join(5)
    if kind != "ok":
        raise HttpError(value)
    return value


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m bench.httpload URL [--path P] [--clients N] [--seconds S] [--rate R]``: load a
    running server and print the figures as JSON (closed loop unless ``--rate``)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.httpload", description=__doc__.splitlines()[0])
    ap.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--path", default="/healthz")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=None, help="requests per second in all (default: closed loop)")
    args = ap.parse_args(argv)
    r = run_in_process(args.url, args.path, args.clients, 10 ** 7, args.seconds, rate=args.rate)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
