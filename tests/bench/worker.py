"""`scripts/bench worker`: no-op jobs per second of one worker process, stock RQ beside runlane.

Each variant is one `rq worker --burst` process draining N jobs queued before it starts; its rate
is N over the process's wall time minus that of the same command on an empty queue (start-up and
shut-down), so every variant is timed the same way. Variants:
- stock `rq worker` (a fork per job) and stock `rq worker -w rq.SimpleWorker` on a plain no-op job;
- `rq worker -w workers.worker.RunlaneWorker` on demo.noop runs: each is claimed in Postgres, emits
  run.started and run.succeeded events in the outbox, and ends succeeded;
- I/O-bound, printed apart: RunlaneWorker on demo.sleep runs of 0.05 s, one attempt at a time
  beside RUNLANE_WORKER_CONCURRENCY=50 (attempts in threads);
- with --limits, only RunlaneWorker on demo.noop runs under no queue limits, limits that never
  bind, and a binding one: what checking limits costs at the claim;
- with --peers, BullMQ's Node worker on no-op jobs at concurrency 1 and 50, timed by itself from
  worker.run() to the last job completed (tests/bench/peers.py, which installs it from npm).
Uses REDIS_URL / DATABASE_URL when set, else embedded servers. Prints medians of the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue

from app import db, dispatch, runs
from app.limits import Limits, Rate, set_limits
from app.redis_keys import Keys
from tests.bench.peers import Bullmq
from tests.bench.submit import servers

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def burst(args: list[str], env: dict[str, str]) -> float:
    """The wall seconds of one burst; its CPU seconds are added to CPU_SECONDS."""
    began = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [str(BIN / "rq"), "worker", "--burst", "-q", *args],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return time.perf_counter() - began


# CPU seconds of each burst, in order. Wall time on a shared 2-core VM swings by a quarter
# between identical rounds; the worker's own CPU and the Redis commands per job are steadier
# figures to compare two versions by.
CPU_SECONDS: list[float] = []


def stock(redis_url: str, jobs: int, worker_class: str | None) -> float:
    redis = Redis.from_url(redis_url)
    name = f"bench-stock-{uuid.uuid4().hex[:8]}"
    args = ["--url", redis_url, name] + (["-w", worker_class] if worker_class else [])
    idle = burst(args, {})
    queue = Queue(name, connection=redis)
    data = Queue.prepare_data("tests.bench.noop.noop", result_ttl=0)
    for start in range(0, jobs, 1000):
        queue.enqueue_many([data for _ in range(min(1000, jobs - start))])
    took = burst(args, {}) - idle
    queue.delete(delete_jobs=True)
    return jobs / took


def runlane(
    redis_url: str,
    database_url: str,
    jobs: int,
    task: str = "demo.noop",
    input: Any = None,
    concurrency: int = 1,
    limits: Limits | None = None,
) -> float:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "RUNLANE_PREFIX": prefix}
    if concurrency > 1:
        env["RUNLANE_WORKER_CONCURRENCY"] = str(concurrency)
    args = ["--worker-class", "workers.worker.RunlaneWorker", "--url", redis_url]
    idle = burst(args, env)
    idle_cpu = CPU_SECONDS[-1]
    new = runs.NewRun("bench", task, "default", input, 5, 1, None, None, {}, None)
    with db.connect(database_url) as conn:
        conn.execute("TRUNCATE runs, tenant_streams, queue_limits, limit_starts CASCADE")
        if limits is not None:
            set_limits(conn, "bench", "default", dataclasses.asdict(limits) | _rates(limits))
        keyed = [replace(new, limit_key=f"k{i % 10}") for i in range(10)]
        made = [runs.create_run(conn, keyed[i % 10])[0] for i in range(jobs)]
    redis = Redis.from_url(redis_url)
    for start in range(0, jobs, 1000):
        dispatch.enqueue(redis, Keys(prefix), made[start : start + 1000])
    commands = _commands(redis)
    took = burst(args, env) - idle
    COSTS.append(((CPU_SECONDS[-1] - idle_cpu) * 1000 / jobs, (_commands(redis) - commands) / jobs))
    with db.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) AS n FROM runs WHERE status = 'succeeded'").fetchone()
    assert row is not None and row["n"] == jobs, f"only {row} of {jobs} runs succeeded"
    for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        redis.delete(key)
    return jobs / took


COSTS: list[tuple[float, float]] = []  # per runlane round: worker CPU ms per job, Redis commands

NEVER = 10**9  # a limit no run of a benchmark reaches: what checking limits costs by itself
LIMITS = {
    "no limits": None,
    "limits that never bind (all four)": Limits(NEVER, Rate(NEVER, 1.0), NEVER, Rate(NEVER, 1.0)),
    "a binding limit (concurrency 1)": Limits(concurrency=1),
}


def _rates(limits: Limits) -> dict[str, Any]:
    return {"rate": limits.rate, "key_rate": limits.key_rate}  # asdict made them dicts


def limited(redis_url: str, database_url: str, jobs: int, rounds: int) -> dict[str, list[float]]:
    """demo.noop runs (ten limit keys) with and without queue limits, the settings taking turns
    round by round so that a slow spell of the machine falls on each of them alike."""
    rates: dict[str, list[float]] = {name: [] for name in LIMITS}
    for _ in range(rounds):
        for name, limits in LIMITS.items():
            rates[name].append(runlane(redis_url, database_url, jobs, limits=limits))
    return rates


def print_limited(rates: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(r) for name, r in rates.items()}
    base = medians["no limits"]
    for name, r in rates.items():
        cost = 100 * (1 - medians[name] / base)
        print(
            f"RunlaneWorker, {name:34s} {medians[name]:7.0f} jobs/s ({cost:+.0f} % cost)"
            f"  rounds {[round(x) for x in r]}"
        )


def _commands(redis: Redis) -> int:
    return int(redis.info("stats")["total_commands_processed"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per round for runlane")
    parser.add_argument("--stock-jobs", type=int, default=1000, help="jobs per round for stock RQ")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--io-jobs", type=int, default=3000, help="demo.sleep jobs, concurrency 50")
    parser.add_argument("--peers", action="store_true", help="BullMQ's Node worker too (--jobs)")
    parser.add_argument("--limits", action="store_true", help="the cost of queue limits only")
    args = parser.parse_args(argv)
    bullmq = Bullmq.prepare() if args.peers else None
    with servers() as (redis_url, database_url):
        db.migrate(database_url)
        if args.limits:
            print_limited(limited(redis_url, database_url, args.jobs, args.rounds))
            return 0
        results: dict[str, list[float]] = {
            "stock rq worker (fork per job)": [
                stock(redis_url, args.stock_jobs, None) for _ in range(args.rounds)
            ],
            "stock rq worker -w rq.SimpleWorker": [
                stock(redis_url, args.stock_jobs, "rq.SimpleWorker") for _ in range(args.rounds)
            ],
            "runlane RunlaneWorker (Postgres claim + events)": [
                runlane(redis_url, database_url, args.jobs) for _ in range(args.rounds)
            ],
        }
        costs = list(COSTS)
        if bullmq:
            bullmq.run(redis_url, args.jobs, args.rounds)
        io = io_bound(redis_url, database_url, args.io_jobs, args.rounds)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    for name, rates in results.items():
        print(f"{name:50s} {medians[name]:7.0f} jobs/s  rounds {[round(r) for r in rates]}")
    if bullmq:
        bullmq.print_rates()
    ours = medians["runlane RunlaneWorker (Postgres claim + events)"]
    for name in list(medians)[:2]:
        print(f"runlane / {name}: {ours / medians[name]:.1f}x")
    cpu = statistics.median(c for c, _ in costs)
    commands = statistics.median(n for _, n in costs)
    print(f"RunlaneWorker per job: {cpu:.3f} worker CPU ms, {commands:.2f} Redis commands")
    if bullmq:
        bullmq.print_against(ours)
    print_io(io)
    return 0


IO_SLEEP = {"seconds": 0.05}
IO_CONCURRENCY = (1, 50)


def io_bound(redis_url: str, database_url: str, jobs: int, rounds: int) -> dict[int, list[float]]:
    """demo.sleep 0.05 s runs: jobs/s of one RunlaneWorker process per concurrency."""
    rates: dict[int, list[float]] = {}
    for n in IO_CONCURRENCY:
        count = max(20, jobs * n // max(IO_CONCURRENCY))  # about the same seconds per variant
        args = (redis_url, database_url, count, "demo.sleep", IO_SLEEP, n)
        rates[n] = [runlane(*args) for _ in range(rounds)]
    return rates


def print_io(rates: dict[int, list[float]]) -> None:
    medians = {n: statistics.median(r) for n, r in rates.items()}
    for n, r in rates.items():
        name = f"I/O-bound demo.sleep 0.05 s, concurrency {n}"
        print(f"{name:50s} {medians[n]:7.0f} jobs/s  rounds {[round(x, 1) for x in r]}")
    low, high = min(medians), max(medians)
    print(f"I/O-bound concurrency {high} / concurrency {low}: {medians[high] / medians[low]:.1f}x")


if __name__ == "__main__":
    raise SystemExit(main())
