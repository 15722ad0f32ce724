"""A run's timings and ETA (contract §6), worked out when it is shown, never stored: the ETA moves
with the clock and with other runs, as `waiting` does (app.waiting).

`timings` are milliseconds from created_at to its first dispatch to a queue (first ever: a retry
does not move it), to the start of its last attempt, to its end; a part that has not happened
is left out. A running run's ETA comes from its own progress rate once it has reported any
(started_at + elapsed × 100 / percent), else from the median duration of the tenant's last
succeeded runs of its task (started_at + median), else there is none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from app.db import q
from app.domain import Run, RunStatus, rfc3339
from app.runs import Conn

SAMPLE = 100  # the succeeded runs a median is taken over, newest first
MEDIAN_TTL_S = 5.0  # how long a web process keeps a median before asking Postgres again
_MS = timedelta(milliseconds=1)
TaskKey = tuple[str, str]  # (tenant, task)


def timings_of(run: Run) -> dict[str, int]:
    """{queued_ms, started_ms, finished_ms}, each only once it has happened."""
    found: dict[str, int] = {}
    created = run.created_at
    # max: a batch's runs are created a microsecond apart and dispatched at one instant
    if (at := run.first_dispatched_at) is not None:
        found["queued_ms"] = max(0, (at - created) // _MS)
    if (at := run.started_at) is not None:
        found["started_ms"] = max(0, (at - created) // _MS)
    if (at := run.finished_at) is not None:
        found["finished_ms"] = max(0, (at - created) // _MS)
    return found


def needs_median(run: Run) -> bool:
    """Whether the run's ETA comes from its task's history: running, no progress yet."""
    return run.status is RunStatus.RUNNING and run.started_at is not None and not _percent(run)


def eta_of(run: Run, now: datetime, median_s: float | None) -> datetime | None:
    """When the run should end, if it is running and there is anything to tell it by."""
    if run.status is not RunStatus.RUNNING or run.started_at is None:
        return None
    percent = _percent(run)
    if percent:
        elapsed = max(now - run.started_at, timedelta(0))
        return run.started_at + elapsed * (100 / min(percent, 100))
    if median_s is None:
        return None
    # may be past: the run is slower than its task's recent runs
    return run.started_at + timedelta(seconds=median_s)


def _percent(run: Run) -> float:
    percent = (run.progress or {}).get("percent")
    return float(percent) if isinstance(percent, int | float) and percent > 0 else 0.0


class TaskDurations:
    """The median durations of tasks' recent succeeded runs, per (tenant, task), kept a few
    seconds per process: a page of running runs costs one query for the tasks it lacks, not one
    per row, and a busy dashboard refreshing it costs Postgres nothing most of the time."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        ttl_s: float = MEDIAN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool, self.ttl_s, self.clock = pool, ttl_s, clock
        self._lock = threading.Lock()
        self._found: dict[TaskKey, tuple[float, float | None]] = {}  # key: (read at, median)

    def medians(self, keys: Iterable[TaskKey]) -> dict[TaskKey, float | None]:
        """The median duration in seconds of each (tenant, task), None without history."""
        now = self.clock()
        wanted = set(keys)
        with self._lock:
            known = {k: v for k in wanted if (v := self._found.get(k)) and now - v[0] < self.ttl_s}
        found = {key: median for key, (_, median) in known.items()}
        missing = wanted - known.keys()
        if missing:
            read = self._read(missing)
            with self._lock:
                if len(self._found) > 10_000:  # tenants and tasks come and go
                    self._found.clear()
                self._found.update({key: (now, median) for key, median in read.items()})
            found.update(read)
        return found

    def _read(self, keys: Collection[TaskKey]) -> dict[TaskKey, float | None]:
        by_tenant: dict[str, list[str]] = {}
        for tenant, task in keys:
            by_tenant.setdefault(tenant, []).append(task)
        found: dict[TaskKey, float | None] = dict.fromkeys(keys)
        with self.pool.connection() as conn:
            for tenant, tasks in by_tenant.items():
                found.update(median_durations(conn, tenant, tasks))
        return found


def median_durations(conn: Conn, tenant: str, tasks: list[str]) -> dict[TaskKey, float | None]:
    """The median duration in seconds of the tenant's last SAMPLE succeeded runs of each task."""
    params = {"tenant": tenant, "tasks": tasks, "sample": SAMPLE}
    rows = conn.execute(q("median_durations"), params).fetchall()
    return {(tenant, row["task"]): row["median_s"] for row in rows}


def shown_timings(
    found: dict[str, Any], run: Run, now: datetime, medians: Mapping[TaskKey, float | None]
) -> dict[str, Any]:
    """The run as shown (`found`, its to_json) with its eta and timings filled in: its last API
    fields, so setting them keeps the contract's order."""
    found["eta"] = rfc3339(eta_of(run, now, medians.get((run.tenant, run.task))))
    found["timings"] = timings_of(run)
    return found
