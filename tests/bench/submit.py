"""`scripts/bench submit`: POST /v1/runs throughput and latency against the Procfile processes.

Starts release, web, worker, relay and scheduler (tests.helpers.Stack) on REDIS_URL/DATABASE_URL
or on embedded servers, in a database and key prefix of its own, then drives POST /v1/runs with a
unique Idempotency-Key per request from concurrent keep-alive clients, and prints requests/s and
latency percentiles. Then it waits until every run submitted has succeeded and every event of
every run is in its Redis stream, and prints that end-to-end rate too: runs over the time from
the first submit to the last event in its stream. `--url` benchmarks an already running API
(submits only). `--batch N` posts N runs per request to POST /v1/runs/batch instead (Python
generator) with the worker held back, as a bulk load is: it prints the runs/s accepted, then starts
the worker and prints the rate the backlog drains at (`--workers-during` keeps the worker running
through the submits instead, sharing the machine with them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import make_conninfo
from redis import Redis

from app import db
from app.redis_keys import Keys
from runlane.embedded import EmbeddedServers, free_port
from tests.bench import cpu, wrk
from tests.helpers import Stack
from workers import relay

TOKEN = "bench-token"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench submit", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to drive load")
    parser.add_argument("--clients", type=int, help="concurrent clients (16; 4 with --batch)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not measured (python)")
    parser.add_argument("--url", help="an API already running (then --token is needed)")
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--web-only", action="store_true", help="start release and web only")
    parser.add_argument("--rounds", type=int, default=1, help="repeat, then print the medians")
    parser.add_argument(
        "--batch", type=int, default=1, metavar="N",
        help="runs per request: above 1, POST /v1/runs/batch (and 4 clients unless --clients)",
    )  # fmt: skip
    parser.add_argument(
        "--workers-during", action="store_true",
        help="with --batch: run the worker through the submits (else it starts after them)",
    )  # fmt: skip
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto",
        help="the load generator: wrk when installed (auto), else Python threads",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 1000:
        parser.error("--batch takes 1 to 1000 runs per request")
    if args.clients is None:
        args.clients = 16 if args.batch == 1 else 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.url:
        report(load(args, args.url, args.token), args)
        return 0
    results = [one_round(args) for _ in range(args.rounds)]
    for result in results:
        report(result, args)
    if len(results) > 1:
        report_medians(results, args)
    return 0 if all(result["errors"] == 0 for result in results) else 1


def one_round(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    backlog = args.batch > 1 and not args.workers_during and not args.web_only
    with servers() as (redis_url, database_url), tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(
            redis_url, database_url, prefix, Path(tmp), web_only=args.web_only, worker=not backlog
        )
        roots = [p.pid for group in stack.procs.values() for p in group] + cpu.server_pids()
        try:
            wal_before, cpu_before = wal_lsn(database_url), cpu.snapshot(roots)
            began = time.monotonic()
            result = load(args, stack.base, TOKEN, run_id=prefix)
            if backlog:  # what accepting cost, the worker not yet started
                accepted = runs_created(database_url)
                result["accept_cpu_ms_per_run"] = {
                    kind: 1000 * spent / max(1, accepted)
                    for kind, spent in cpu.spent(cpu_before, cpu.snapshot(roots)).items()
                }
                roots.append(stack.start("worker").pid)
                wait_first_start(database_url)
            if not args.web_only:
                result["end_to_end"] = settle(redis_url, database_url, prefix, began)
                result["drain"] = result["end_to_end"].pop("drain")
            runs = runs_created(database_url)
            result["cpu_ms_per_run"] = {
                kind: 1000 * spent / max(1, runs)
                for kind, spent in cpu.spent(cpu_before, cpu.snapshot(roots)).items()
            }
            result["wal_bytes_per_run"] = wal_bytes(database_url, wal_before) / max(1, runs)
        finally:
            stack.stop()
            forget(redis_url, prefix)
    return result


def load(
    args: argparse.Namespace, base: str, token: str, run_id: str | None = None
) -> dict[str, Any]:
    """Drive POST /v1/runs; `run_id` goes into each Idempotency-Key, new for each call unless
    given, so that a second round against one API (--url) submits new runs, not replays."""
    wanted = args.generator == "wrk" or (args.generator == "auto" and wrk.available())
    if wanted and args.batch == 1:
        return wrk.drive(base, token, args.clients, args.seconds, run_id or uuid.uuid4().hex[:8])
    result = drive(base, token, args.clients, args.seconds, args.warmup, args.batch)
    latencies = result.pop("latencies")
    assert isinstance(latencies, list)
    result.update(p50=percentile(latencies, 50), p99=percentile(latencies, 99), generator="python")
    return result


def wal_lsn(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def wal_bytes(database_url: str, since: str) -> float:
    """WAL written since `since`, by every database of the server (ours is the only busy one)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (since,))
        found = row.fetchone()
    return float(found[0]) if found else 0.0


def runs_created(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM runs").fetchone()
    return int(row[0]) if row else 0


def wait_first_start(database_url: str) -> None:
    """Returns once the worker just started has taken its first run (its start-up not counted
    in the drain)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(database_url, autocommit=True) as conn:
        taken = "SELECT 1 FROM runs WHERE status <> 'queued' LIMIT 1"
        while conn.execute(taken).fetchone() is None:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the worker took no run within 60 s")
            time.sleep(0.01)


def settle(redis_url: str, database_url: str, prefix: str, began: float) -> dict[str, float]:
    """Waits until every run has succeeded and every event is in its run's stream; the runs per
    second from the first submit until then, counting every run (warm-up ones too)."""
    keys = Keys(prefix)
    redis = Redis.from_url(redis_url)
    deadline = time.monotonic() + 120
    with db.connect(database_url) as conn:
        # the backlog the submits left, and how fast it drains (the workers' rate, alone)
        load_ended = time.monotonic()
        left = conn.execute("SELECT count(*) AS n FROM runs WHERE status <> 'succeeded'")
        backlog = row["n"] if (row := left.fetchone()) else 0
        while True:
            unfinished = conn.execute("SELECT count(*) AS n FROM runs WHERE status <> 'succeeded'")
            row = unfinished.fetchone()
            pending = (row["n"] if row else 0) + relay.backlog(conn)
            if pending == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {pending} runs or events still pending after 120 s")
            time.sleep(0.01)
        done = time.monotonic()
        rows = conn.execute("SELECT id::text AS id, last_seq FROM runs").fetchall()
        runs = [(row["id"], row["last_seq"]) for row in rows]
    pipe = redis.pipeline(transaction=False)
    for run_id, _ in runs:
        pipe.xlen(keys.run_stream(run_id))
    lengths = pipe.execute()
    missing = sum(
        1 for (_, last_seq), length in zip(runs, lengths, strict=True) if length != last_seq
    )
    redis.close()
    if missing:
        raise SystemExit(f"bench: {missing} runs lack events in their streams")
    drain = {"runs": backlog, "seconds": done - load_ended}
    return {"runs": len(runs), "seconds": done - began, "drain": drain}


@contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """The given servers (with a database made for this run), else embedded ones."""
    redis_url, admin_url = os.environ.get("REDIS_URL"), os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory() as home:
        embedded = EmbeddedServers(Path(home))
        embedded.start(redis=not redis_url, postgres=not admin_url)
        admin_url = admin_url or embedded.database_url
        name = f"runlane_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield redis_url or embedded.redis_url, make_conninfo(admin_url, dbname=name)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            embedded.stop()


def start_stack(
    redis_url: str, database_url: str, prefix: str, tmp: Path, *, web_only: bool, worker: bool
) -> Stack:
    env = {
        "PORT": str(free_port()),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "RUNLANE_PREFIX": prefix,
        "RUNLANE_HOME": str(tmp / "home"),
        "RUNLANE_API_TOKENS": f"bench:{TOKEN}",
    }
    logdir = tmp / "logs"
    logdir.mkdir()
    stack = Stack(env, logdir)
    if web_only or not worker:
        stack.run_release()
        stack.start("web")
        if not web_only:
            stack.start("relay")
            stack.start("scheduler")
        stack.wait_ready()
    else:
        stack.start_all()
    return stack


def forget(redis_url: str, prefix: str) -> None:
    """Deletes this run's keys, RQ queues and the jobs left in them (Redis may be shared)."""
    redis = Redis.from_url(redis_url)
    queues = list(redis.scan_iter(match=f"rq:queue:{prefix}.*", count=1000))
    for queue in queues:
        job_ids = redis.lrange(queue, 0, -1)
        for start in range(0, len(job_ids), 1000):
            redis.delete(*[b"rq:job:" + job_id for job_id in job_ids[start : start + 1000]])
    if queues:
        redis.srem("rq:queues", *queues)
    batch: list[bytes] = list(queues)
    for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            redis.delete(*batch)
            batch = []
    if batch:
        redis.delete(*batch)
    redis.close()


def drive(
    base: str, token: str, clients: int, seconds: float, warmup: float, batch: int = 1
) -> dict[str, object]:
    """`clients` threads, each on one keep-alive connection, posting until the time is up;
    `batch` runs per request (above 1: POST /v1/runs/batch)."""
    path = "/v1/runs" if batch == 1 else "/v1/runs/batch"
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def client(index: int) -> None:
        mine: Counter[int] = Counter()
        conn = connect(base)
        run = {"task": "demo.noop", "input": {"client": index}}
        body = json.dumps(run if batch == 1 else {"runs": [run] * batch})
        while (now := time.monotonic()) < stop_at:
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": uuid.uuid4().hex,
            }
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = connect(base)
                status = 0
            if now >= measure_from:
                latencies[index].append(time.monotonic() - now)
                mine[status] += 1
        conn.close()
        with lock:
            statuses.update(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = sorted(latency for per_client in latencies for latency in per_client)
    return {
        "requests": len(merged),
        "runs_per_request": batch,
        "seconds": seconds,
        "statuses": dict(statuses),
        "errors": sum(n for status, n in statuses.items() if status != 201),
        "latencies": merged,
    }


def connect(base: str) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    rate = result["requests"] / args.seconds
    print(
        f"submit ({result['generator']}): {args.clients} clients, {args.seconds:.0f} s: "
        f"{result['requests']} requests, {rate:,.0f} req/s, p50 {result['p50'] * 1000:.1f} ms, "
        f"p99 {result['p99'] * 1000:.1f} ms, statuses {result['statuses']}"
    )
    per_request = result.get("runs_per_request", 1)
    if per_request > 1:
        runs = result["requests"] * per_request
        print(f"batches of {per_request}: {runs} runs accepted, {runs / args.seconds:,.0f} runs/s")
    settled = result.get("end_to_end")
    if isinstance(settled, dict):
        print(
            f"end to end: {settled['runs']} runs submitted, succeeded and every event in its "
            f"stream in {settled['seconds']:.1f} s: {settled['runs'] / settled['seconds']:,.0f} "
            f"runs/s"
        )
    drain = result.get("drain")
    if isinstance(drain, dict) and drain["runs"]:
        print(
            f"drain: the {drain['runs']} runs not done when the submits stopped (with --batch: "
            f"when the worker took its first) were done in {drain['seconds']:.1f} s: "
            f"{drain['runs'] / drain['seconds']:,.0f} runs/s"
        )
    accepting = result.get("accept_cpu_ms_per_run")
    if isinstance(accepting, dict):
        kinds = ", ".join(f"{kind} {ms:.2f}" for kind, ms in accepting.items())
        print(f"CPU ms per run accepted, while accepting: {kinds}; "
              f"all {sum(accepting.values()):.2f}")  # fmt: skip
    per_run = result.get("cpu_ms_per_run")
    if isinstance(per_run, dict):
        kinds = ", ".join(f"{kind} {ms:.2f}" for kind, ms in per_run.items())
        print(f"CPU ms per run: {kinds}; all {sum(per_run.values()):.2f}")
        print(f"WAL bytes per run: {result['wal_bytes_per_run']:,.0f}")


def report_medians(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    rates = [r["requests"] / args.seconds for r in results]
    accepted = [r["requests"] * r.get("runs_per_request", 1) / args.seconds for r in results]
    line = (
        f"medians of {len(results)}: {median(rates):,.0f} req/s, {median(accepted):,.0f} runs/s, "
        f"p99 {median([r['p99'] for r in results]) * 1000:.1f} ms"
    )
    settled = [r["end_to_end"] for r in results if isinstance(r.get("end_to_end"), dict)]
    if settled:
        line += f", end to end {median([e['runs'] / e['seconds'] for e in settled]):,.0f} runs/s"
    totals = [sum(r["cpu_ms_per_run"].values()) for r in results]
    line += f", CPU {median(totals):.2f} ms/run"
    line += f", WAL {median([r['wal_bytes_per_run'] for r in results]):,.0f} B/run"
    print(line)


if __name__ == "__main__":
    sys.exit(main())
