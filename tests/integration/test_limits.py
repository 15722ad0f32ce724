"""Queue limits in Postgres (app.limits, migration 0007): what a claim admits and holds, what an
ended attempt releases, in priority then FIFO order, per tenant, queue and limit key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from app import attempts, limits, runs
from app.domain import Run, RunStatus
from app.limits import Limits, Rate
from app.runs import Conn
from app.services import Services
from tests.helpers import new_run


@pytest.fixture
def conn(services: Services) -> Iterator[Conn]:
    with services.pool.connection() as conn:
        yield conn


def create(conn: Conn, **fields: object) -> Run:
    run, _ = runs.create_run(conn, new_run(**fields))
    return run


def claim(conn: Conn, *batch: Run) -> list[Run | None]:
    """One worker's claim of a batch of popped runs, in one group commit."""
    changes = [attempts.claim_change(run.id, worker="w", lease_s=30) for run in batch]
    return attempts.commit(conn, changes).done


def finish(conn: Conn, run: Run) -> list[Run]:
    """The attempt succeeds; the held runs its slot released."""
    return attempts.commit(conn, [attempts.finish_change(run, None)]).released


def held(conn: Conn, run: Run) -> tuple[str | None, datetime | None]:
    row = conn.execute("SELECT held, held_until FROM runs WHERE id = %s", (run.id,)).fetchone()
    assert row is not None
    return row["held"], row["held_until"]


def ids(found: list[Run | None]) -> list[str | None]:
    return [run.id if run else None for run in found]


def test_limits_are_set_merged_removed_and_the_tenants_own(conn: Conn) -> None:
    got, released = limits.set_limits(conn, "alpha", "default", {"concurrency": 2})
    assert got == Limits(concurrency=2) and released == []
    got, _ = limits.set_limits(conn, "alpha", "default", {"rate": Rate(10, 1.5)})
    assert got == Limits(concurrency=2, rate=Rate(10, 1.5))
    assert limits.queue_limits(conn, "alpha") == {"default": got}
    assert limits.queue_limits(conn, "beta") == {}
    got, _ = limits.set_limits(conn, "alpha", "default", {"concurrency": None, "rate": None})
    assert got == Limits() and limits.queue_limits(conn, "alpha") == {}


def test_concurrency_holds_the_rest_of_a_batch_and_a_finish_releases_the_next(
    conn: Conn,
) -> None:
    limits.set_limits(conn, "alpha", "default", {"concurrency": 2})
    batch = [create(conn) for _ in range(5)]
    claimed = claim(conn, *batch)
    assert ids(claimed) == [batch[0].id, batch[1].id, None, None, None]
    assert held(conn, batch[2]) == ("concurrency_limited", None)
    first = claimed[0]
    assert first is not None
    assert ids(finish(conn, first)) == [batch[2].id]  # oldest first
    assert held(conn, batch[2])[0] == "released"
    # a newcomer cannot take the slot the released run is on its way to
    newcomer = create(conn)
    assert claim(conn, newcomer) == [None]
    assert ids(claim(conn, batch[2])) == [batch[2].id]
    assert held(conn, batch[2]) == (None, None)


def test_a_popped_run_gives_its_place_to_a_held_run_ahead_of_it(conn: Conn) -> None:
    limits.set_limits(conn, "alpha", "default", {"concurrency": 1})
    running, waiting = create(conn), create(conn)
    assert claim(conn, running, waiting)[1] is None
    urgent = create(conn, priority=1)
    assert claim(conn, urgent) == [None]
    # the slot frees with no release (a stalled worker's run, found later): the next claim of
    # the queue starts the first held run in priority then FIFO order, whichever was popped
    conn.execute("UPDATE runs SET status = 'failed' WHERE id = %s", (running.id,))
    late = create(conn)
    assert ids(claim(conn, late)) == [urgent.id]
    assert held(conn, late)[0] == "concurrency_limited"


def test_other_tenants_and_queues_are_never_held(conn: Conn) -> None:
    limits.set_limits(conn, "alpha", "default", {"concurrency": 1})
    batch = [create(conn), create(conn), create(conn, tenant="beta"), create(conn, queue="mail")]
    assert ids(claim(conn, *batch)) == [batch[0].id, None, batch[2].id, batch[3].id]


def test_key_concurrency_counts_each_limit_key_apart(conn: Conn) -> None:
    limits.set_limits(conn, "alpha", "default", {"key_concurrency": 1})
    a1, a2 = create(conn, limit_key="a"), create(conn, limit_key="a")
    b1, free = create(conn, limit_key="b"), create(conn)
    claimed = claim(conn, a1, a2, b1, free)
    assert ids(claimed) == [a1.id, None, b1.id, free.id]
    assert held(conn, a2)[0] == "key_concurrency_limited"
    first_b = claimed[2]
    assert first_b is not None
    assert finish(conn, first_b) == []  # b's slot frees nothing of a's
    first_a = claimed[0]
    assert first_a is not None
    assert ids(finish(conn, first_a)) == [a2.id]


def test_a_rate_holds_until_its_window_reopens_and_the_scheduler_releases_then(
    conn: Conn,
) -> None:
    limits.set_limits(conn, "alpha", "default", {"rate": Rate(2, 0.3)})
    batch = [create(conn) for _ in range(3)]
    assert ids(claim(conn, *batch)) == [batch[0].id, batch[1].id, None]
    reason, until = held(conn, batch[2])
    assert reason == "rate_limited" and until is not None
    assert limits.next_release_due(conn) == until
    assert limits.release_due(conn) == []  # not yet
    while datetime.now(UTC) < until:
        time.sleep(0.01)
    assert ids(limits.release_due(conn)) == [batch[2].id]
    assert limits.next_release_due(conn) is None
    assert ids(claim(conn, batch[2])) == [batch[2].id]


def test_raising_or_removing_a_limit_releases_held_runs_at_once(conn: Conn) -> None:
    limits.set_limits(conn, "alpha", "default", {"concurrency": 1})
    batch = [create(conn) for _ in range(4)]
    claim(conn, *batch)
    _, released = limits.set_limits(conn, "alpha", "default", {"concurrency": 2})
    assert ids(released) == [batch[1].id]
    _, released = limits.set_limits(conn, "alpha", "default", {"concurrency": None})
    assert ids(released) == [batch[2].id, batch[3].id]


def test_lowering_a_limit_stops_no_running_attempt(conn: Conn) -> None:
    limits.set_limits(conn, "alpha", "default", {"concurrency": 3})
    batch = [create(conn) for _ in range(3)]
    claimed = claim(conn, *batch)
    limits.set_limits(conn, "alpha", "default", {"concurrency": 1})
    assert all(run and run.status is RunStatus.RUNNING for run in claimed)
    assert claim(conn, create(conn)) == [None]


def test_a_stalled_attempt_frees_its_slot_when_found(conn: Conn) -> None:
    limits.set_limits(conn, "alpha", "default", {"concurrency": 1})
    first, second = create(conn), create(conn)
    changes = [attempts.claim_change(r.id, worker="dead", lease_s=0.05) for r in (first, second)]
    attempts.commit(conn, changes)
    deadline = time.monotonic() + 5
    while not (recovered := attempts.recover_stalled(conn))[0]:  # until the lease lapses
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stalled, released = recovered
    assert ids(list(stalled)) == [first.id]
    assert ids(list(released)) == [second.id]


def test_a_batch_far_from_its_limits_is_admitted_whole_and_its_starts_counted(
    conn: Conn,
) -> None:
    """The fast path (runlane_admit_all): every start is still counted, per queue and per key."""
    limits.set_limits(conn, "alpha", "default", {"rate": Rate(100, 60), "key_rate": Rate(3, 60)})
    batch = [create(conn, limit_key="a") for _ in range(3)] + [create(conn, limit_key="b")]
    assert None not in claim(conn, *batch)
    starts = conn.execute(
        "SELECT key, sum(count) AS n, count(*) AS rows FROM limit_starts GROUP BY key ORDER BY key"
    ).fetchall()
    assert [(row["key"], row["n"], row["rows"]) for row in starts] == [
        ("", 4, 1),
        ("a", 3, 1),
        ("b", 1, 1),
    ]  # a row per queue and key for the batch
    late_a, late_b = create(conn, limit_key="a"), create(conn, limit_key="b")
    claimed = claim(conn, late_a, late_b)
    assert ids(claimed) == [None, late_b.id]  # a's window is full, b's is not
    assert held(conn, late_a)[0] == "key_rate_limited"


def test_a_window_counts_right_after_older_batches_of_starts_are_pruned(conn: Conn) -> None:
    """A batch's starts share a row: once a row is pruned, a window is read from the rows left."""
    limits.set_limits(conn, "alpha", "default", {"rate": Rate(2, 60)})
    assert None not in claim(conn, create(conn), create(conn))  # one row: starts 1 and 2
    conn.execute("UPDATE limit_starts SET at = at - interval '2 minutes'")  # out of the window
    assert None not in claim(conn, create(conn))  # start 3
    limits.prune_starts(conn)  # the row of starts 1 and 2 goes
    assert conn.execute("SELECT n, count FROM limit_starts").fetchall() == [{"n": 3, "count": 1}]
    assert None not in claim(conn, create(conn))  # start 4: the window holds only start 3
    late = create(conn)
    assert claim(conn, late) == [None]  # starts 3 and 4 fill the window
    assert held(conn, late)[0] == "rate_limited"


def test_an_admission_holds_its_queues_limits_locked(conn: Conn, services: Services) -> None:
    """Admissions to one queue serialise: another transaction cannot lock its limits meanwhile."""
    limits.set_limits(conn, "alpha", "default", {"concurrency": 2})
    run = create(conn)
    with services.pool.connection() as other, conn.transaction():
        conn.execute("SELECT * FROM runlane_admit(%s::uuid[])", ([run.id],)).fetchall()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("SELECT * FROM queue_limits FOR UPDATE NOWAIT")
