"""CPU time by process kind, from /proc via psutil: web, worker, relay, scheduler, Redis,
Postgres, and the benchmark itself. A snapshot before and one after give the CPU each kind spent
in between."""

from __future__ import annotations

import os
from collections import Counter

import psutil

KINDS = ("web", "worker", "relay", "scheduler", "redis", "postgres", "bench")


def kind(proc: psutil.Process) -> str | None:
    try:
        line = " ".join(proc.cmdline())
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if proc.pid == os.getpid():
        return "bench"
    for needle, found in (
        ("gunicorn", "web"), ("RunlaneWorker", "worker"), ("runlane relay", "relay"),
        ("runlane scheduler", "scheduler"), ("redis-server", "redis"),
    ):  # fmt: skip
        if needle in line:
            return found
    if name.startswith("postgres") or line.startswith("postgres"):
        return "postgres"
    return None


def server_pids() -> list[int]:
    """Every Redis and Postgres server process on the machine: the stack's servers are not its
    children (the embedded Postgres daemonizes; external ones run on their own)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name.startswith(("redis-server", "postgres")):
            found.append(proc.pid)
    return found


def processes(roots: list[int]) -> Counter[str]:
    """How many live processes of each kind are at or below `roots`."""
    return Counter(k for proc in _tree(roots).values() if (k := kind(proc)))


def snapshot(roots: list[int]) -> Counter[str]:
    """CPU seconds (user + system) so far of every process of a kind at or below `roots` (pass
    the pids of the Redis and Postgres servers too: they are not the stack's children)."""
    totals: Counter[str] = Counter()
    for proc in _tree(roots).values():
        found = kind(proc)
        if found is None:
            continue
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        totals[found] += times.user + times.system
    return totals


def _tree(roots: list[int]) -> dict[int, psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for proc in [root, *root.children(recursive=True)]:
            seen[proc.pid] = proc
    return seen


def spent(before: Counter[str], after: Counter[str]) -> dict[str, float]:
    """CPU seconds each kind spent between two snapshots (a process that exited meanwhile is
    not counted: the snapshots read live processes only)."""
    return {k: max(0.0, after[k] - before[k]) for k in KINDS if k in after or k in before}
