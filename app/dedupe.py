"""Deduplication (contract §5.3): a submit whose dedupe key a live run holds creates nothing.

The key's row in dedupe_keys is taken in the same transaction that inserts the run, so concurrent
submits of one key from any number of web processes agree on one run (the second waits on the
first's row lock, then sees its run), and Redis plays no part: the answer survives an emptied
Redis. An Idempotency-Key is checked first, so a replay stays a replay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from app import runs
from app.db import jsonb, q
from app.domain import Run
from app.runs import Conn, NewRun

# A key changes hands only between one look and the next (a debounced run started meanwhile), so
# a few tries always settle it; the bound only keeps a bug from looping.
TRIES = 5


# How a run with a dedupe key is made once its key is taken: runs.create_run, or a flow's
# (app.flows.flow_creator), which makes its children with it.
Create = Callable[[Conn, NewRun, uuid.UUID], tuple[Run, bool]]
LOOK_AGAIN = "look again"  # the key's holder was deleted (retention) as we looked


def create_run(conn: Conn, new: NewRun, create: Create | None = None) -> tuple[Run, bool]:
    """runs.create_run (or `create`), honouring `new.dedupe`: (the run holding the key, False)
    when a live run holds it; a debounced submit first gives that run its input and metadata
    and restarts its delay (event run.debounced)."""
    make = create or _plain
    if new.dedupe is None:
        return make(conn, new, uuid.uuid4())
    for _ in range(TRIES):
        with conn.transaction():
            done = _once(conn, new, make)
        if done is not None:
            return done
    raise RuntimeError(f"dedupe key {new.dedupe.key!r} changed hands {TRIES} times")


def _plain(conn: Conn, new: NewRun, run_id: uuid.UUID) -> tuple[Run, bool]:
    return runs.create_run(conn, new, run_id=run_id)


def _once(conn: Conn, new: NewRun, make: Create) -> tuple[Run, bool] | None:
    if new.idempotency_key is not None:
        held = runs.run_by_idempotency_key(conn, new.tenant, new.idempotency_key)
        if held is not None:
            return held, False
    run_id = uuid.uuid4()
    holder = take(conn, new, run_id)
    if holder is None:
        return make(conn, new, run_id)
    return (holder, False) if isinstance(holder, Run) else None  # else: LOOK_AGAIN


def take(conn: Conn, new: NewRun, run_id: uuid.UUID) -> Run | str | None:
    """Point `new.dedupe`'s key at `run_id`, to be inserted in this transaction: None when it
    did; else the live run that holds it (a debounced one given `new`'s input), or LOOK_AGAIN
    when that run was deleted or started meanwhile. Call it in a transaction."""
    assert new.dedupe is not None
    dedupe = new.dedupe
    key: dict[str, Any] = {"tenant": new.tenant, "key": dedupe.key}
    debounce = dedupe.debounce_ms is not None
    taken = conn.execute(
        q("take_dedupe_key"),
        {**key, "run_id": run_id, "ttl_s": dedupe.ttl_s, "debounce": debounce},
    ).fetchone()
    if taken is not None:
        return None
    holder = conn.execute(q("dedupe_holder"), key).fetchone()
    if holder is None:
        return LOOK_AGAIN  # its run was deleted (retention) since, or is not inserted yet
    if not (debounce and holder["debounce"]):
        return Run.from_row(holder)
    replaced = conn.execute(
        q("debounce_run"),
        {
            "id": holder["id"],
            "input": jsonb(new.input),
            "metadata": jsonb(new.metadata),
            "until": new.scheduled_for,
        },
    ).fetchone()
    return Run.from_row(replaced) if replaced else LOOK_AGAIN  # it started meanwhile
