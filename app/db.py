"""Postgres access: the connection pool, named SQL queries loaded from app/sql, and migrations."""

from __future__ import annotations

import re
import textwrap
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from app import jsontext

# "-- name: claim_attempt" starts a named query; "(outbox)" after the name marks a run state
# change, which the loader wraps in app/sql/outbox.sql so that it also writes its events.
_NAME = re.compile(r"^--\s*name:\s*(\w+)(.*)$", re.MULTILINE)
MIGRATION_LOCK = 72_616_101  # advisory lock key held while migrating


@cache
def queries() -> dict[str, str]:
    """Every named query of app/sql/queries/*.sql, read once on first use."""
    found: dict[str, str] = {}
    for entry in sorted(resources.files("app.sql.queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _NAME.split(entry.read_text())
        for name, mark, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
            if name in found:
                raise ValueError(f"query {name} is defined twice")
            outbox = mark.strip() == "(outbox)"
            if not outbox and mark.strip():
                raise ValueError(f"query {name}: {mark.strip()!r} is not (outbox)")
            found[name] = _with_outbox(body) if outbox else body.strip()
    return found


def _with_outbox(change: str) -> str:
    """A run state change as one statement that also appends the events of the rows it returns."""
    body = textwrap.indent(change.strip().removesuffix(";"), "    ").lstrip()
    return _outbox_template().replace("CHANGE", body)


@cache
def _outbox_template() -> str:
    lines = resources.files("app.sql").joinpath("outbox.sql").read_text().splitlines()
    while lines and lines[0].startswith("--"):  # the file's header says why; the server needn't
        lines.pop(0)
    return "\n".join(lines).strip()


def q(name: str) -> str:
    return queries()[name]


def connect(url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, row_factory=dict_row, autocommit=True, **kwargs)


def make_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, name: str = "runlane"
) -> ConnectionPool:
    """A pool of autocommit connections: a single-statement state change is its own transaction."""
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        # application_name: pg_stat_activity tells which process holds which connection
        kwargs={"row_factory": dict_row, "autocommit": True, "application_name": name},
        name=name,
        open=True,
        # No check on checkout: it costs a round trip per request. A connection that broke is
        # discarded when it is returned in a bad state, and the pool reconnects in the background.
    )


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value)


def request_jsonb(value: Any) -> Jsonb:
    """jsonb of what a request body carried, encoded by orjson (app.jsontext says when that is
    safe): a batch's rows, a thousand runs in one parameter."""
    return Jsonb(value, dumps=jsontext.dumps)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for each app/sql/migrations/NNNN_name.sql, in order."""
    found = []
    for entry in resources.files("app.sql.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text()))
    return sorted(found)


def schema_sql() -> str:
    return resources.files("app.sql").joinpath("schema.sql").read_text()


def migrate(url: str) -> list[int]:
    """Apply pending migrations under an advisory lock; safe to run concurrently and repeatedly."""
    applied: list[int] = []
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(q("create_migrations_table"))
            done = {row["version"] for row in conn.execute(q("applied_migrations"))}
            for version, name, sql in migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute(q("record_migration"), {"version": version, "name": name})
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


def schema_current(conn: psycopg.Connection[Any]) -> bool:
    latest = max(version for version, _, _ in migrations())
    row = conn.execute(q("latest_migration")).fetchone()
    return row is not None and row["version"] == latest
