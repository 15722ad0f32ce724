"""Benchmark of the tails: `scripts/bench tail [--runs 10 --tails-per-run 5 --steps 200
--interval-ms 10 --drain 100000]`.

Starts the Procfile processes (one web process) on a fresh database, tails runs emitting progress
events over websockets, and prints commit-to-client latency p50/p99 (from each event's `at`),
the relay's throughput (live, and draining a backlog), and the web process's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import requests
from websockets.sync.client import connect

from app import db
from runlane.embedded import EmbeddedServers, free_port
from tests.helpers import Stack, wait_for
from workers import relay

TOKEN = "bench-token"
START_DELAY_MS = 2000


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runlane-bench-") as tmp:
        servers = EmbeddedServers(Path(tmp) / "servers")
        servers.start(redis=not os.environ.get("REDIS_URL"),
                      postgres=not os.environ.get("DATABASE_URL"))  # fmt: skip
        redis_url = os.environ.get("REDIS_URL") or servers.redis_url
        admin_url = os.environ.get("DATABASE_URL") or servers.database_url
        database_url = _create_database(admin_url)
        stack = Stack(_env(redis_url, database_url, Path(tmp)), Path(tmp))
        try:
            stack.start_all(workers=args.workers)
            _live(stack, database_url, args)
            if args.drain:
                _drain(stack, database_url, args.drain)
        finally:
            stack.stop()
            _drop_database(admin_url, database_url)
            servers.stop()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench tail", description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tails-per-run", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--interval-ms", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--drain", type=int, default=100_000, help="backlog events (0: skip)")
    return parser


def _env(redis_url: str, database_url: str, home: Path) -> dict[str, str]:
    return {
        "PORT": str(free_port()),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "RUNLANE_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        "RUNLANE_HOME": str(home / "home"),
        "RUNLANE_API_TOKENS": f"bench:{TOKEN}",
        "WEB_CONCURRENCY": "1",
    }


def _live(stack: Stack, database_url: str, args: argparse.Namespace) -> None:
    run_ids = [_submit(stack, args.steps, args.interval_ms) for _ in range(args.runs)]
    tails = [
        TailRecorder(stack.base, run_id) for run_id in run_ids for _ in range(args.tails_per_run)
    ]
    started = time.monotonic()
    for tail in tails:
        tail.thread.start()
    for tail in tails:
        tail.thread.join(600)
    elapsed = time.monotonic() - started
    complete = sum(tail.complete() for tail in tails)
    latencies = sorted(lat for tail in tails for lat in tail.latencies)
    events = _event_count(database_url, run_ids)
    print(f"tails: {len(tails)} on one web process, {complete} complete "
          f"(ordered, gapless, no duplicate, ended with the terminal event)")  # fmt: skip
    print(
        f"events: {events} committed by {args.runs} runs in {elapsed:.1f}s "
        f"({events / elapsed:.0f}/s, as fast as the runs emit them); {len(latencies)} delivered"
    )
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"commit-to-client latency: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {latencies[-1] * 1000:.1f} ms")  # fmt: skip
    print(f"web process memory (RSS): {_web_rss_mb(stack):.0f} MiB")


def _drain(stack: Stack, database_url: str, count: int) -> None:
    """The relay's throughput on a backlog: stop it, commit `count` events, time the catch-up."""
    stack.kill("relay")
    with db.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO runs (id, tenant, task, queue, status) SELECT gen_random_uuid(), 'bench',"
            " 'demo.progress', 'default', 'running' FROM generate_series(1, 100)"
        )
        conn.execute(
            "INSERT INTO run_events (run_id, seq, type, data, tenant, queue)"
            " SELECT r.id, s, 'run.progress', jsonb_build_object('percent', 1, 'message', 'x'),"
            " r.tenant, r.queue FROM runs r, generate_series(1, %s) s WHERE r.status = 'running'"
            " AND r.task = 'demo.progress' AND r.last_seq = 0",
            (count // 100,),
        )
        pending = _pending(conn)
        started = time.monotonic()
        stack.start("relay")
        wait_for(lambda: _pending(conn) == 0, 600, interval=0.05, message="the backlog to drain")
        elapsed = time.monotonic() - started
    print(f"relay backlog: {pending} events published in {elapsed:.2f}s "
          f"(including the relay's start) = {pending / elapsed:.0f} events/s")  # fmt: skip


def _pending(conn: psycopg.Connection[Any]) -> int:
    return relay.backlog(conn)


class TailRecorder:
    """One websocket tail, noting for each event how long after its `at` it arrived."""

    def __init__(self, base: str, run_id: str) -> None:
        self.url = f"{base.replace('http://', 'ws://')}/v1/runs/{run_id}/tail?token={TOKEN}"
        self.seqs: list[int] = []
        self.types: list[str] = []
        self.latencies: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with connect(self.url, open_timeout=30, max_size=None) as ws:
            for message in ws:
                received = time.time()
                event = json.loads(message)
                at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
                self.seqs.append(event["seq"])
                self.types.append(event["type"])
                if event["seq"] > 2:  # what happened after the tail connected (runs start late)
                    self.latencies.append(received - at)

    def complete(self) -> bool:
        return self.seqs == list(range(1, len(self.seqs) + 1)) and self.types[-1:] == [
            "run.succeeded"
        ]


def _submit(stack: Stack, steps: int, interval_ms: int) -> str:
    response = requests.post(
        f"{stack.base}/v1/runs",
        json={
            "task": "demo.progress",
            "input": {"steps": steps, "interval_ms": interval_ms},
            "delay_ms": START_DELAY_MS,  # every tail is connected before its run starts
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _event_count(database_url: str, run_ids: list[str]) -> int:
    with db.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM run_events WHERE run_id = ANY(%s::uuid[])", (run_ids,)
        ).fetchone()
    return int(row["n"]) if row else 0


def _web_rss_mb(stack: Stack) -> float:
    """RSS of the web line: the gunicorn master and its worker process(es)."""
    master = stack.procs["web"][0].pid
    pids = [master] + [pid for pid in _all_pids() if _ppid(pid) == master]
    return sum(_rss_kb(pid) for pid in pids) / 1024


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _create_database(admin_url: str) -> str:
    name = f"rl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def _drop_database(admin_url: str, database_url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    raise SystemExit(main())
