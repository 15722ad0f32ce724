"""`scripts/bench reads`: the dashboard's reads over HTTP with N runs of one tenant stored.

Makes a database of its own (REDIS_URL/DATABASE_URL, else embedded servers), migrates it, seeds
`--runs` runs (default 1,000,000) of one tenant in SQL (tests/bench/reads_seed.sql: mostly
succeeded, some failed and cancelled, a few thousand live, five queues, ten tasks, idempotency
and dedupe keys, flows), VACUUM ANALYZE as autovacuum would, starts the web process and registers
two live workers that run some of the runs, then times each read `--times` times from one
keep-alive client: GET /v1/queues, the first page of GET /v1/runs under every filter and their
combinations, GET /v1/workers and GET /v1/runs/{id}. Prints p50, p99 and max per read and exits
1 when a p99 is over the budget (50 ms).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from redis import Redis
from rq import Queue, Worker

from app.redis_keys import Keys
from tests.bench.submit import TOKEN, connect, forget, percentile, servers, start_stack

TENANT = "bench"  # start_stack's token belongs to this tenant
SEED = Path(__file__).with_name("reads_seed.sql")
CHUNK = 100_000  # runs a seeding statement inserts


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench reads", description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to seed")
    parser.add_argument("--times", type=int, default=100, help="timed requests per read")
    parser.add_argument("--budget-ms", type=float, default=50.0, help="the p99 each read must meet")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    with servers() as (redis_url, database_url), tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(redis_url, database_url, prefix, Path(tmp), web_only=True, worker=False)
        redis = Redis.from_url(redis_url)
        workers: list[Worker] = []
        try:
            seed(database_url, args.runs, worker_names(prefix))
            workers = register_workers(redis, prefix)
            timings = time_reads(stack.base, reads(database_url), args.times, workers)
        finally:
            for worker in workers:
                worker.register_death()
            redis.close()
            stack.stop()
            forget(redis_url, prefix)
    return report(timings, args)


def worker_names(prefix: str) -> list[str]:
    return [f"{prefix}-worker-{n}" for n in (1, 2)]


def seed(database_url: str, n: int, workers: list[str]) -> None:
    began = time.monotonic()
    sql = SEED.read_text()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for first in range(1, n + 1, CHUNK):
            params = {
                "tenant": TENANT, "first": first, "last": min(n, first + CHUNK - 1), "n": n,
                "workers": workers,
            }  # fmt: skip
            conn.execute(sql, params)  # type: ignore[arg-type]  # read from a file, not a literal
            print(f"seeded {params['last']:,} runs ({time.monotonic() - began:.0f} s)", flush=True)
        conn.execute("VACUUM ANALYZE runs")
    print(f"seeded and analysed {n:,} runs in {time.monotonic() - began:.0f} s", flush=True)


def register_workers(redis: Redis, prefix: str) -> list[Worker]:
    """Two live registrations as RQ workers make them, serving every seeded queue."""
    keys = Keys(prefix)
    names = [name for queue in ("mail", "reports", "billing", "media", "default")
             for name in keys.rq_queues(queue)]  # fmt: skip
    workers = [
        Worker([Queue(q, connection=redis) for q in names], connection=redis, name=name)
        for name in worker_names(prefix)
    ]
    for worker in workers:
        worker.register_birth()
    return workers


def reads(database_url: str) -> list[tuple[str, str]]:
    """(label, path) of each read timed, with values the seed holds (a flow parent, a run with an
    idempotency key and one with a dedupe key)."""
    with psycopg.connect(database_url) as conn:
        parent, run_id, key, dedupe = conn.execute(
            """SELECT (SELECT id FROM runs WHERE children_total > 0 ORDER BY created_at DESC
                       LIMIT 1),
                      (SELECT id FROM runs ORDER BY created_at LIMIT 1),
                      (SELECT idempotency_key FROM runs WHERE idempotency_key = 'idem-3000'),
                      (SELECT dedupe_key FROM runs WHERE dedupe_key = 'dedupe-7000')"""
        ).fetchone() or (None, None, None, None)

    def runs(**query: str) -> tuple[str, str]:
        label = " ".join(f"{k}={v}" for k, v in query.items()) or "(no filter)"
        return f"runs {label}", "/v1/runs?" + urlencode(query) if query else "/v1/runs"

    return [
        ("queues", "/v1/queues"),
        runs(),
        runs(status="succeeded"),
        runs(status="failed"),
        runs(status="queued"),
        runs(status="running"),
        runs(queue="billing"),
        runs(task="media.resize"),
        runs(parent_id=str(parent)),
        runs(status="failed", queue="billing"),
        runs(status="delayed", queue="mail"),
        runs(status="cancelled", task="reports.export"),
        runs(queue="media", task="media.transcode"),
        runs(status="failed", queue="mail", task="mail.digest"),
        runs(status="queued", queue="reports", task="reports.build"),
        runs(idempotency_key=str(key)),
        runs(dedupe_key=str(dedupe)),
        runs(status="succeeded", dedupe_key=str(dedupe)),
        ("workers", "/v1/workers"),
        ("run by id", f"/v1/runs/{run_id}"),
    ]


def time_reads(
    base: str, paths: list[tuple[str, str]], times: int, workers: list[Worker]
) -> list[dict[str, Any]]:
    conn = connect(base)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timings = []
    for label, path in paths:
        for worker in workers:  # live for the next reads (a registration is live for 15 s)
            worker.heartbeat()
        latencies: list[float] = []
        first: Any = None
        for i in range(times + 3):  # three unmeasured: the web's pool and caches warm up
            began = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if i >= 3:
                latencies.append(1000 * (time.perf_counter() - began))
            if response.status != 200:
                raise SystemExit(f"bench: GET {path} answered {response.status}: {body[:300]!r}")
            first = first or json.loads(body)
        latencies.sort()
        timings.append({
            "label": label, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "max": latencies[-1], "items": len(first.get("items", [first])),
        })  # fmt: skip
    conn.close()
    return timings


def report(timings: list[dict[str, Any]], args: argparse.Namespace) -> int:
    width = max(len(t["label"]) for t in timings)
    print(f"\nreads with {args.runs:,} runs of one tenant, {args.times} requests each (ms):")
    print(f"{'read':<{width}}  {'p50':>7}  {'p99':>7}  {'max':>7}  items")
    over = []
    for t in timings:
        mark = "  OVER BUDGET" if t["p99"] > args.budget_ms else ""
        print(
            f"{t['label']:<{width}}  {t['p50']:7.1f}  {t['p99']:7.1f}  {t['max']:7.1f}"
            f"  {t['items']:>5}{mark}"
        )
        if mark:
            over.append(t["label"])
    if over:
        print(f"\nFAIL: p99 over {args.budget_ms:.0f} ms for: {', '.join(over)}")
        return 1
    print(f"\nevery read's p99 is within {args.budget_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
