"""`scripts/bench worker --peers`: BullMQ's Node worker on the same Redis, beside RQ and runlane.

tests/bench/bullmq/worker.mjs runs one round: N no-op jobs added with addBulk to a fresh queue
(removeOnComplete: true), then one Worker drains them; it times itself, from worker.run() on a
ready connection to the last job's 'completed' event, and prints one JSON line. BullMQ comes from
npm into tests/bench/bullmq/node_modules (git-ignored), installed on first use. Without node or
npm, or when the install or a round fails, BullMQ is skipped with one line saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

FOLDER = Path(__file__).with_name("bullmq")
CONCURRENCY = (1, 50)
# A round of a few thousand jobs takes seconds; this only stops a hung worker from hanging the run.
TIMEOUT = 600


class Skipped(Exception):
    pass


@dataclass
class Round:
    rate: float
    cpu_ms: float  # Node's CPU per job over the timed span
    commands: float  # Redis commands per job, those inside BullMQ's Lua scripts included


@dataclass
class Bullmq:
    node: str = ""
    skipped: str = ""
    jobs: int = 0
    rounds: dict[int, list[Round]] = field(default_factory=dict)

    @classmethod
    def prepare(cls) -> Bullmq:
        """Finds node and installs BullMQ before the other variants run: a failure shows early."""
        try:
            return cls(node=_node())
        except Skipped as skipped:
            return cls(skipped=str(skipped))

    def run(self, redis_url: str, jobs: int, rounds: int) -> None:
        if self.skipped:
            return
        self.jobs = max(1, jobs)  # worker.mjs waits for the Nth 'completed' event
        try:
            self.rounds = {
                n: [_round(self.node, redis_url, self.jobs, n) for _ in range(rounds)]
                for n in CONCURRENCY
            }
        except Skipped as skipped:
            self.skipped = str(skipped)

    def print_rates(self) -> None:
        if self.skipped:
            print(f"BullMQ skipped: {self.skipped}")
        for n, rounds in self.rounds.items():
            name = f"BullMQ Worker (Node) concurrency {n}"
            rates = [r.rate for r in rounds]
            median = statistics.median(rates)
            print(f"{name:50s} {median:7.0f} jobs/s  rounds {[round(r) for r in rates]}")

    def print_against(self, runlane: float) -> None:
        """The headline ratio (concurrency 50 has no runlane counterpart on no-op jobs), costs."""
        if not self.rounds:
            return
        one = self.rounds[1]
        median = statistics.median(r.rate for r in one)
        print(f"runlane RunlaneWorker / BullMQ concurrency 1: {runlane / median:.1f}x")
        cpu = statistics.median(r.cpu_ms for r in one)
        commands = statistics.median(r.commands for r in one)
        print(f"BullMQ concurrency 1 per job: {cpu:.3f} Node CPU ms, {commands:.2f} Redis commands")
        print(
            f"BullMQ timed in Node: worker.run() to the last 'completed' event of {self.jobs} jobs"
            " added before (addBulk, removeOnComplete: true)"
        )


def _node() -> str:
    wanted = os.environ.get("RUNLANE_BENCH_NODE", "node")
    node = shutil.which(wanted)
    if node is None:
        raise Skipped(f"node not found: {wanted!r} (RUNLANE_BENCH_NODE names a node binary)")
    if not _installed():
        _install(node)
    return node


def _installed() -> bool:
    """Whether node_modules holds the bullmq that package.json pins (a bump reinstalls)."""
    pinned = json.loads((FOLDER / "package.json").read_text())["dependencies"]["bullmq"]
    found = FOLDER / "node_modules" / "bullmq" / "package.json"
    return found.exists() and json.loads(found.read_text())["version"] == pinned


def _install(node: str) -> None:
    npm = shutil.which("npm", path=f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if npm is None:
        raise Skipped("npm not found, so BullMQ cannot be installed")
    print("installing BullMQ into tests/bench/bullmq (npm ci)", file=sys.stderr)
    # Scripts are not run: the one dependency with an install script (msgpackr-extract) only
    # locates the prebuilt binary that npm installs anyway as an optional package.
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=FOLDER,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not _installed():
        raise Skipped(f"npm ci failed: {_reason(done.stderr)}")


def _round(node: str, redis_url: str, jobs: int, concurrency: int) -> Round:
    name = f"bench-bullmq-{uuid.uuid4().hex[:8]}"
    # A key prefix of its own too, so the keys of a round that died can be found and deleted.
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    args = [node, str(FOLDER / "worker.mjs"), redis_url, name, str(jobs), str(concurrency), prefix]
    try:
        done = subprocess.run(args, cwd=FOLDER, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as error:
        raise Skipped(f"a round took over {TIMEOUT} s") from error
    finally:
        redis = Redis.from_url(redis_url)
        for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            redis.delete(key)
    if done.returncode != 0:
        raise Skipped(f"worker.mjs exited {done.returncode}: {_reason(done.stderr)}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Round(
        result["jobs"] / result["seconds"],
        result["cpu_seconds"] * 1000 / result["jobs"],
        result["commands"] / result["jobs"],
    )


def _reason(text: str) -> str:
    """The lines of npm's or Node's stderr that name the error; both end on boilerplate."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "error" in line.lower() and "complete log" not in line]
    return "; ".join((named or lines or ["no output"])[:2])
