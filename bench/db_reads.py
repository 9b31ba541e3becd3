"""A job's point read on PostgreSQL, the way the status endpoint makes it, in two session kinds:

    python -m bench.db_reads [--url postgresql+psycopg2://postgres@127.0.0.1:5432/test] [--rounds 15]

- ``session``: ``Database.session()``, the pooled connection the writes use (pinged before use, the
  SELECT inside a transaction, a ROLLBACK when the session hands the connection back);
- ``read_session``: ``Database.read_session()`` (autocommit connections of its own, not pinged:
  the SELECT alone).

Both read the same job by primary key (``session.get``) in interleaved rounds of 200 reads, in a
fresh schema dropped at the end; prints the median and best milliseconds per read. The
database server's own CPU shares the machine, so the figures include its share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from service.db import Database, Job
from service.jobs import JobKind, JobStore, new_id

from .service import POSTGRES, postgres_schema


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.db_reads", description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=POSTGRES, help="the server (default: GCN_BENCH_POSTGRES_URL or the local one)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    found = postgres_schema(args.url)
    if found is None:
        print(f"python -m bench.db_reads: error: no PostgreSQL at {args.url}", file=sys.stderr)
        return 1
    url, drop = found
    db = Database(url)
    try:
        db.create_all()
        job = JobStore(db).create(JobKind.sample, {"n": 1}, model_id=new_id())

        def reads(factory):
            def run():
                with factory() as s:
                    return s.get(Job, job.id)
            return run

        kinds = {"session": reads(db.session), "read_session": reads(db.read_session)}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for f in kinds.values():  # warm both pools
            for _ in range(50):
                f()
        for _ in range(args.rounds):
            for name, f in kinds.items():
                t = time.perf_counter()
                for _ in range(200):
                    f()
                times[name].append((time.perf_counter() - t) / 200 * 1e3)
        print("| session kind | median ms per read | best ms |\n|---|---|---|")
        for name, v in times.items():
            print(f"| {name} | {statistics.median(v):.3f} | {min(v):.3f} |")
    finally:
        db.dispose()
        drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
