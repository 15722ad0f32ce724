"""Migrations: they build exactly app/sql/schema.sql, and applying them is safe to repeat and to
run from several processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app import db
from tests.conftest import scratch_database

# Everything a schema is made of, per object, as comparable text. Column order is left out on
# purpose: a later migration can only append columns, while schema.sql may keep them grouped.
CATALOG: dict[str, str] = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default,
               character_maximum_length, numeric_precision, is_identity, generation_expression
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """
        SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        WHERE rel.relnamespace = 'public'::regnamespace""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "triggers": """
        SELECT rel.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class rel ON rel.oid = t.tgrelid
        WHERE NOT t.tgisinternal AND rel.relnamespace = 'public'::regnamespace""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace""",
    "sequences": """
        SELECT sequence_name, data_type, start_value, increment
        FROM information_schema.sequences WHERE sequence_schema = 'public'""",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "types": """
        SELECT t.typname, t.typtype, coalesce(array_agg(e.enumlabel ORDER BY e.enumsortorder)
               FILTER (WHERE e.enumlabel IS NOT NULL), '{}')
        FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)
        GROUP BY t.typname, t.typtype""",
    "extensions": "SELECT extname FROM pg_extension",
}
# The migration runner's own bookkeeping is not part of the schema.
BOOKKEEPING = "schema_migrations"


def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            kind: sorted(
                (row for row in conn.execute(sql).fetchall() if BOOKKEEPING not in str(row)),
                key=repr,
            )
            for kind, sql in CATALOG.items()
        }


@pytest.fixture
def schema_database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A second empty database, for app/sql/schema.sql."""
    with scratch_database(servers[1]) as url:
        yield url


def test_migrations_build_exactly_the_schema(
    empty_database_url: str, schema_database_url: str
) -> None:
    db.migrate(empty_database_url)
    with psycopg.connect(schema_database_url, autocommit=True) as conn:
        conn.execute(db.schema_sql())

    migrated, declared = catalog(empty_database_url), catalog(schema_database_url)

    assert migrated["columns"], "the migrations created no tables"
    for kind in CATALOG:
        assert migrated[kind] == declared[kind], f"{kind} differ between migrations and schema.sql"


def test_migration_versions_are_numbered_one_by_one() -> None:
    versions = [version for version, _, _ in db.migrations()]

    assert versions == list(range(1, len(versions) + 1))


def test_migrate_twice_applies_nothing_the_second_time(empty_database_url: str) -> None:
    first = db.migrate(empty_database_url)
    second = db.migrate(empty_database_url)

    assert first == [version for version, _, _ in db.migrations()]
    assert second == []
    assert applied_rows(empty_database_url) == first


def test_concurrent_migrates_apply_each_migration_once(empty_database_url: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def run() -> None:
        try:
            barrier.wait(10)
            results.append(db.migrate(empty_database_url))
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(results) == 6
    all_versions = [version for version, _, _ in db.migrations()]
    assert sorted(v for applied in results for v in applied) == all_versions
    assert applied_rows(empty_database_url) == all_versions
    with db.connect(empty_database_url) as conn:
        assert db.schema_current(conn)


def test_runlane_migrate_command_reports_what_it_applied(empty_database_url: str) -> None:
    runlane = Path(sys.executable).parent / "runlane"
    env = {**os.environ, "DATABASE_URL": empty_database_url}

    first = subprocess.run(
        [runlane, "migrate"], env=env, capture_output=True, text=True, check=True
    )
    again = subprocess.run(
        [runlane, "migrate"], env=env, capture_output=True, text=True, check=True
    )

    assert "0001" in first.stdout
    assert "up to date" in again.stdout


def applied_rows(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(f"SELECT version FROM {BOOKKEEPING} ORDER BY 1")]


def test_the_relay_place_starts_below_the_first_event_not_yet_sent(
    empty_database_url: str,
) -> None:
    """Upgrading to 0004 while some numbered events were never marked published: the relay's
    place stops short of them, so they are sent again, and events sent stay sent."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for version, _, sql in db.migrations():
            if version < 4:
                conn.execute(sql)
        conn.execute(db.q("create_migrations_table"))
        for version in (1, 2, 3):
            conn.execute(db.q("record_migration"), {"version": version, "name": f"m{version}"})
        conn.execute(
            "INSERT INTO runs (id, tenant, task, queue, status, scheduled_for)"
            " VALUES (gen_random_uuid(), 'alpha', 't', 'q', 'queued', now()),"
            " (gen_random_uuid(), 'beta', 't', 'q', 'queued', now())"
        )
        conn.execute(
            "INSERT INTO run_events (run_id, seq, type, tenant, queue, tseq, published)"
            " SELECT id, s, 'run.progress', tenant, 'q', CASE WHEN s <= 4 THEN s END, s <= 2"
            " FROM runs, generate_series(1, 5) AS s"
        )
        conn.execute("INSERT INTO tenant_streams VALUES ('alpha', 4), ('beta', 4)")
        conn.execute(  # beta's numbered events all went out; alpha's 3 and 4 did not
            "UPDATE run_events SET published = true WHERE tenant = 'beta' AND tseq IS NOT NULL"
        )

    assert db.migrate(empty_database_url)[0] == 4
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT tenant, published_tseq FROM tenant_streams ORDER BY 1")
        assert [tuple(r) for r in rows] == [("alpha", 2), ("beta", 4)]


def test_runs_stored_before_0011_get_their_first_dispatch_from_their_events(
    empty_database_url: str,
) -> None:
    """Upgrading to 0011: a run's first dispatch is its first run.queued (a parent's
    run.children_done) event, not its latest dispatch; a run never queued has none."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(db.q("create_migrations_table"))
        for version, name, sql in db.migrations():
            if version < 11:
                conn.execute(sql)
                conn.execute(db.q("record_migration"), {"version": version, "name": name})
        conn.execute(
            "INSERT INTO runs (id, tenant, task, queue, status, dispatched_at) VALUES"
            " ('00000000-0000-0000-0000-000000000001', 'a', 't', 'q', 'queued', now()),"
            " ('00000000-0000-0000-0000-000000000002', 'a', 't', 'q', 'queued', now()),"
            " ('00000000-0000-0000-0000-000000000003', 'a', 't', 'q', 'delayed', NULL)"
        )
        conn.execute(  # run 1 queued twice (a retry), run 2 a parent queued by its children
            "INSERT INTO run_events (run_id, seq, type, tenant, queue, at) VALUES"
            " ('00000000-0000-0000-0000-000000000001', 1, 'run.queued', 'a', 'q', '2030-01-01'),"
            " ('00000000-0000-0000-0000-000000000001', 2, 'run.queued', 'a', 'q', '2030-01-02'),"
            " ('00000000-0000-0000-0000-000000000002', 1, 'run.waiting', 'a', 'q', '2030-01-01'),"
            " ('00000000-0000-0000-0000-000000000002', 2, 'run.children_done', 'a', 'q',"
            "  '2030-01-03'),"
            " ('00000000-0000-0000-0000-000000000003', 1, 'run.delayed', 'a', 'q', '2030-01-01')"
        )

    assert db.migrate(empty_database_url) == [11, *range(12, len(db.migrations()) + 1)]
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT to_char(first_dispatched_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM runs"
            " ORDER BY id"
        ).fetchall()
    assert [row[0] for row in rows] == ["2030-01-01", "2030-01-03", None]
