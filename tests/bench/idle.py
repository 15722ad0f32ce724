"""`scripts/bench idle`: the CPU each process of an idle stack uses, as % of one core.

Starts embedded Redis and Postgres and the Procfile processes (web, worker, relay, scheduler),
lets them settle, then reads their CPU time from /proc over --seconds with nothing to do."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from runlane.embedded import EmbeddedServers
from tests.bench import cpu
from tests.bench.submit import start_stack
from tests.helpers import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench idle", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to measure")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start-up")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        servers = EmbeddedServers(Path(tmp) / "servers").start()
        try:
            stack = start_stack(
                servers.redis_url, servers.database_url, f"idle{uuid.uuid4().hex[:6]}",
                Path(tmp), web_only=False, worker=True,
            )  # fmt: skip
            try:
                usage, counts = measure(stack, servers, args.settle, args.seconds)
            finally:
                stack.stop()
        finally:
            servers.stop()
    print(f"idle stack, CPU over {args.seconds:g} s (% of one core):")
    for name, share in usage.items():
        print(f"  {name:<10} {share:6.2f} %   ({counts[name]} processes)")
    return 0


def measure(
    stack: Stack, servers: EmbeddedServers, settle: float, seconds: float
) -> tuple[dict[str, float], Counter[str]]:
    procs = [p.pid for group in stack.procs.values() for p in group]
    roots = [*procs, servers.redis_pid, servers.postgres_pid]
    time.sleep(settle)  # start-up work (registrations, first sweeps) is not idle
    before = cpu.snapshot(roots)
    began = time.monotonic()
    time.sleep(seconds)
    after = cpu.snapshot(roots)
    elapsed = time.monotonic() - began
    used = cpu.spent(before, after)
    shares = {k: 100 * v / elapsed for k, v in used.items() if k != "bench"}
    return shares, cpu.processes(roots)


if __name__ == "__main__":
    sys.exit(main())
