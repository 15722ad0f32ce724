"""Worker throughput: stock `rq worker --burst` on plain no-op jobs vs RunlaneWorker on demo.noop
runs (Postgres + RQ), medians of 3 rounds. Needs REDIS_URL and DATABASE_URL.

    python -m tests.bench.worker [--jobs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from redis import Redis
from rq import Queue

from app import db, dispatch, runs
from app.config import Settings
from app.redis_keys import Keys
from app.runs import NewRun

BIN = Path(sys.executable).parent


def noop() -> None:
    """The stock RQ job."""


def stock_rq(redis_url: str, jobs: int) -> float:
    redis = Redis.from_url(redis_url)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, connection=redis)
    job = Queue.prepare_data("tests.bench.worker.noop", result_ttl=0)
    queue.enqueue_many([job._replace() for _ in range(jobs)])
    began = time.perf_counter()
    subprocess.run(
        [str(BIN / "rq"), "worker", "--burst", "-q", "--url", redis_url, name],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    return jobs / (time.perf_counter() - began)


def runlane(redis_url: str, admin_url: str, jobs: int) -> float:
    """Runs submitted into Postgres + RQ; rate from the first claim to the last success."""
    name = f"rl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    try:
        db.migrate(url)
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        new = NewRun("bench", "demo.noop", "default", None, 5, 1, None, None, {}, None)
        with db.connect(url) as conn:
            made = [runs.create_run(conn, new)[0] for _ in range(jobs)]
        dispatch.enqueue(Redis.from_url(redis_url), Keys(prefix), made)
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "RUNLANE_PREFIX": prefix}
        worker_class = "workers.worker.RunlaneWorker"
        subprocess.run(
            [
                str(BIN / "rq"),
                "worker",
                "--burst",
                "-q",
                "--worker-class",
                worker_class,
                "--url",
                redis_url,
            ],
            check=True,
            env=env,
        )
        with db.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok,"
                " extract(epoch FROM max(finished_at) - min(started_at)) AS secs FROM runs"
            ).fetchone()
        assert row["ok"] == jobs, row
        return jobs / float(row["secs"])
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    redis_url, admin_url = settings.require_urls()
    stock = [stock_rq(redis_url, min(args.jobs, 1000)) for _ in range(args.rounds)]
    ours = [runlane(redis_url, admin_url, args.jobs) for _ in range(args.rounds)]
    s, o = statistics.median(stock), statistics.median(ours)
    print(
        f"stock rq worker (fork per job), no-op:     {s:8.0f} jobs/s  {[round(x) for x in stock]}"
    )
    print(f"RunlaneWorker, demo.noop via Postgres+RQ:  {o:8.0f} runs/s  {[round(x) for x in ours]}")
    print(f"ratio: {o / s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
