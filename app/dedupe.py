"""Deduplication (contract §5.3): a submit whose dedupe key a live run holds creates nothing.

The key's row in dedupe_keys is taken in the same transaction that inserts the run, so concurrent
submits of one key from any number of web processes agree on one run (the second waits on the
first's row lock, then sees its run), and Redis plays no part: the answer survives an emptied
Redis. An Idempotency-Key is checked first, so a replay stays a replay.
"""

from __future__ import annotations

import uuid
from typing import Any

from app import runs
from app.db import jsonb, q
from app.domain import Run
from app.runs import Conn, Dedupe, NewRun

# A key changes hands only between one look and the next (a debounced run started meanwhile), so
# a few tries always settle it; the bound only keeps a bug from looping.
TRIES = 5


def create_run(conn: Conn, new: NewRun) -> tuple[Run, bool]:
    """runs.create_run, honouring `new.dedupe`: (the run holding the key, False) when a live run
    holds it; a debounced submit first gives that run its input and metadata and restarts its
    delay (event run.debounced)."""
    if new.dedupe is None:
        return runs.create_run(conn, new)
    for _ in range(TRIES):
        with conn.transaction():
            done = _once(conn, new, new.dedupe)
        if done is not None:
            return done
    raise RuntimeError(f"dedupe key {new.dedupe.key!r} changed hands {TRIES} times")


def _once(conn: Conn, new: NewRun, dedupe: Dedupe) -> tuple[Run, bool] | None:
    if new.idempotency_key is not None:
        held = runs.run_by_idempotency_key(conn, new.tenant, new.idempotency_key)
        if held is not None:
            return held, False
    run_id = uuid.uuid4()
    key: dict[str, Any] = {"tenant": new.tenant, "key": dedupe.key}
    debounce = dedupe.debounce_ms is not None
    taken = conn.execute(
        q("take_dedupe_key"),
        {**key, "run_id": run_id, "ttl_s": dedupe.ttl_s, "debounce": debounce},
    ).fetchone()
    if taken is not None:
        return runs.create_run(conn, new, run_id=run_id)
    holder = conn.execute(q("dedupe_holder"), key).fetchone()
    if holder is None:
        return None  # its run was deleted (retention) since: look again
    if not (debounce and holder["debounce"]):
        return Run.from_row(holder), False
    replaced = conn.execute(
        q("debounce_run"),
        {
            "id": holder["id"],
            "input": jsonb(new.input),
            "metadata": jsonb(new.metadata),
            "until": new.scheduled_for,
        },
    ).fetchone()
    return (Run.from_row(replaced), False) if replaced else None  # None: it started meanwhile
