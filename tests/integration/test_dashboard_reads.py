"""The dashboard's reads on real Postgres: queue counts exact up to the cap and estimated above,
runs searched by idempotency and dedupe key, recent finishes per minute, and the indexes that
keep them fast with millions of runs (migration 0012)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import db, queues, runs
from app.domain import RunStatus
from app.runs import Conn
from app.services import Services
from tests.conftest import auth

ALPHA, BETA = auth("tok-alpha"), auth("tok-beta")


@pytest.fixture
def conn(services: Services) -> Iterator[Conn]:
    with services.pool.connection() as conn:
        yield conn


def insert(conn: Conn, n: int, *, tenant: str = "alpha", **columns: Any) -> None:
    """n runs of demo.echo in queue default, succeeded unless `columns` say otherwise."""
    values = {"task": "demo.echo", "queue": "default", "status": "succeeded", **columns}
    names = ", ".join(values)
    conn.execute(
        f"INSERT INTO runs (id, tenant, {names}) SELECT gen_random_uuid(), %(tenant)s, "  # type: ignore[arg-type]
        + ", ".join(f"%({name})s" for name in values)
        + " FROM generate_series(1, %(n)s)",
        {"tenant": tenant, "n": n, **values},
    )


def test_counts_are_exact_up_to_the_cap_and_estimated_above_it(conn: Conn) -> None:
    insert(conn, 40)
    insert(conn, 3, status="failed")
    insert(conn, 2, status="queued", queue="mail")
    insert(conn, 50, tenant="beta")
    conn.execute("ANALYZE runs")

    counts = queues.run_counts(conn, "alpha", cap=10)
    assert counts["default"].estimated == {"succeeded"}
    assert counts["default"].by_status["succeeded"] > 10  # never below what was counted
    assert counts["default"].by_status["failed"] == 3
    assert counts["mail"] == queues.Counts(Counter(queued=2), frozenset())
    exact = queues.run_counts(conn, "alpha", cap=40)  # 40 is at the cap: still exact
    assert exact["default"] == queues.Counts(Counter(succeeded=40, failed=3), frozenset())
    assert queues.run_counts(conn, "alpha", "mail", cap=1) == {
        "mail": queues.Counts(Counter(queued=2), frozenset({"queued"}))
    }


def test_queues_say_which_counts_are_estimates(
    client: FlaskClient, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(conn, 30)
    insert(conn, 2, status="failed")
    conn.execute("ANALYZE runs")
    monkeypatch.setattr(queues, "COUNT_CAP", 10)
    item = client.get("/v1/queues", headers=ALPHA).get_json()["items"][0]
    assert item["counts_estimated"] == ["succeeded"]
    assert item["counts"]["succeeded"] > 10
    assert item["counts"]["failed"] == 2
    one = client.post("/v1/queues/default/pause", headers=ALPHA).get_json()
    assert one["counts_estimated"] == ["succeeded"]
    monkeypatch.setattr(queues, "COUNT_CAP", 1000)
    assert client.get("/v1/queues", headers=ALPHA).get_json()["items"][0]["counts"] == {
        "waiting": 0, "queued": 0, "delayed": 0, "running": 0, "succeeded": 30, "failed": 2,
        "cancelled": 0,
    }  # fmt: skip


def submit(client: FlaskClient, headers: dict[str, str], key: str | None, **body: Any) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    response = client.post(
        "/v1/runs", json={"task": "demo.echo", **body}, headers={**headers, **extra}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def listed(client: FlaskClient, headers: dict[str, str] = ALPHA, **query: str) -> list[str]:
    response = client.get("/v1/runs", query_string=query, headers=headers)
    assert response.status_code == 200, response.get_json()
    return [run["id"] for run in response.get_json()["items"]]


def test_runs_are_searched_by_idempotency_key_and_dedupe_key_of_the_caller_only(
    client: FlaskClient,
) -> None:
    keyed = submit(client, ALPHA, "order-42")
    deduped = submit(client, ALPHA, None, queue="mail", dedupe={"key": "cust-7"})
    submit(client, ALPHA, "order-43", dedupe={"key": "cust-8"})
    theirs = submit(client, BETA, "order-42", dedupe={"key": "cust-7"})

    assert listed(client, idempotency_key="order-42") == [keyed["id"]]
    assert listed(client, BETA, idempotency_key="order-42") == [theirs["id"]]
    assert listed(client, dedupe_key="cust-7") == [deduped["id"]]
    assert listed(client, dedupe_key="cust-7", queue="mail", status="queued") == [deduped["id"]]
    assert listed(client, dedupe_key="cust-7", queue="default") == []
    assert listed(client, idempotency_key="order-42", status="failed") == []
    assert listed(client, idempotency_key="nope") == []
    refused = client.get("/v1/runs?dedupe_key=a%00b", headers=ALPHA)
    assert refused.status_code == 422
    assert refused.get_json()["errors"][0]["field"] == "dedupe_key"


def test_recent_finishes_are_counted_per_minute_and_outcome(conn: Conn) -> None:
    now = datetime(2026, 12, 3, 9, 30, 20, tzinfo=UTC)
    for ago, status, queue in [
        (timedelta(seconds=10), "succeeded", "default"),  # the minute in progress
        (timedelta(seconds=15), "failed", "default"),
        (timedelta(minutes=3), "succeeded", "default"),
        (timedelta(minutes=3), "cancelled", "default"),
        (timedelta(minutes=9, seconds=20), "succeeded", "default"),  # the oldest minute's start
        (timedelta(minutes=9, seconds=21), "succeeded", "default"),  # before the window
        (timedelta(minutes=3), "failed", "mail"),
    ]:
        insert(conn, 1, status=status, queue=queue, finished_at=now - ago)
    insert(conn, 5, tenant="beta", finished_at=now)

    recent = queues.recent_finishes(conn, "alpha", now=now)
    shown = recent.to_json("default")
    assert shown["window_s"] == 600
    assert [m["at"] for m in shown["minutes"]][::9] == [
        "2026-12-03T09:21:00.000000Z",
        "2026-12-03T09:30:00.000000Z",
    ]
    outcomes = [(m["succeeded"], m["failed"], m["cancelled"]) for m in shown["minutes"]]
    assert outcomes == [(1, 0, 0)] + [(0, 0, 0)] * 5 + [(1, 0, 1), (0, 0, 0), (0, 0, 0), (1, 1, 0)]
    assert [m["failed"] for m in recent.to_json("mail")["minutes"]][6] == 1
    assert sum(m["succeeded"] for m in recent.to_json("nothing")["minutes"]) == 0
    beta = queues.recent_finishes(conn, "beta", now=now).to_json("default")
    assert beta["minutes"][-1]["succeeded"] == 5


def test_queues_show_recent_finishes(client: FlaskClient, conn: Conn) -> None:
    finished = datetime.now(UTC) - timedelta(seconds=1)
    insert(conn, 2, finished_at=finished)
    insert(conn, 1, status="failed", finished_at=finished)
    recent = client.get("/v1/queues", headers=ALPHA).get_json()["items"][0]["recent"]
    at = finished.replace(second=0, microsecond=0).isoformat(timespec="microseconds")
    bucket = next(m for m in recent["minutes"] if m["at"] == at.replace("+00:00", "Z"))
    assert (bucket["succeeded"], bucket["failed"], bucket["cancelled"]) == (2, 1, 0)
    assert len(recent["minutes"]) == 10


def plan(conn: Conn, name: str, params: dict[str, Any]) -> list[str]:
    return [row["QUERY PLAN"] for row in conn.execute("EXPLAIN " + db.q(name), params)]  # type: ignore[operator]


def seed_mix(conn: Conn) -> None:
    """A few thousand runs of five queues and ten tasks, mostly succeeded, then ANALYZE."""
    conn.execute("""
        INSERT INTO runs (id, tenant, task, queue, status, dedupe_key, created_at, finished_at)
        SELECT gen_random_uuid(), 'alpha', 'task.' || (i % 10), 'queue.' || (i % 5),
               CASE WHEN i % 97 = 0 THEN 'failed' WHEN i % 89 = 0 THEN 'queued'
                    ELSE 'succeeded' END,
               CASE WHEN i % 7 = 0 THEN 'dd-' || i END,
               now() - make_interval(secs => i), now() - make_interval(secs => i - 1)
        FROM generate_series(1, 6000) AS i""")
    conn.execute("ANALYZE runs")


STATUSES = [status.value for status in RunStatus]
LIST = {
    "tenant": "alpha", "status": None, "queue": None, "task": None, "parent_id": None,
    "idempotency_key": None, "dedupe_key": None, "limit": 51, "before_created": None,
    "before_id": None,
}  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "scan"),
    [
        ({}, "Index Scan using runs_tenant_created_idx"),
        ({"status": "failed"}, "Index Only Scan using runs_tenant_queue_status_idx"),
        ({"queue": "queue.3"}, "Index Only Scan using runs_tenant_queue_status_idx"),
        (
            {"status": "failed", "queue": "queue.2"},
            "Index Only Scan using runs_tenant_queue_status_idx",
        ),
        ({"task": "task.7"}, "Index Scan using runs_tenant_task_idx"),
        ({"task": "task.7", "queue": "queue.2"}, "Index Scan using runs_tenant_task_idx"),
        ({"dedupe_key": "dd-70"}, "Index Scan using runs_tenant_dedupe_key_idx"),
        ({"idempotency_key": "k"}, "Index Scan using runs_tenant_idempotency_key_key"),
    ],
)
def test_a_first_page_of_runs_reads_the_index_of_its_filter(
    conn: Conn, filters: dict[str, str], scan: str
) -> None:
    seed_mix(conn)
    conn.execute("VACUUM runs")  # index-only scans need the visibility map autovacuum keeps
    merged = (
        ("queue" in filters or "status" in filters) and len(filters) <= 2 and "task" not in filters
    )
    statuses = [filters["status"]] if "status" in filters else STATUSES
    params = LIST | filters | {"statuses": statuses}
    lines = plan(conn, "list_runs_by_queue_status" if merged else "list_runs", params)
    assert any(f"{scan} on runs" in line for line in lines), lines
    assert not any("Seq Scan on runs" in line for line in lines), lines
    plain = conn.execute(db.q("list_runs"), LIST | filters, prepare=False).fetchall()
    page = runs.list_runs(conn, "alpha", limit=51, **filters)  # type: ignore[arg-type]
    assert [str(run.id) for run in page] == [str(row["id"]) for row in plain]  # merged: the same


def test_counts_and_recent_finishes_read_their_indexes_alone(conn: Conn) -> None:
    insert(conn, 6000, tenant="beta", finished_at=datetime.now(UTC))  # another tenant's finishes
    seed_mix(conn)
    conn.execute("VACUUM runs")  # index-only scans need the visibility map autovacuum keeps
    params = {"tenant": "alpha", "queue": None, "cap": 1000, "statuses": STATUSES}
    counts = plan(conn, "queue_counts", params)
    assert any("Index Only Scan using runs_tenant_queue_status_idx" in line for line in counts)
    assert not any("Seq Scan on runs" in line for line in counts), counts
    since = datetime.now(UTC) - timedelta(minutes=10)
    recent = plan(conn, "queue_recent", {"tenant": "alpha", "queue": None, "since": since})
    assert any("Index Only Scan using runs_tenant_finished_idx" in line for line in recent), recent
    assert not any("Seq Scan on runs" in line for line in recent), recent
