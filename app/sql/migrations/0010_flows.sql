-- Flows and batches (contract §5.4, §5.5).
--
-- A flow is a tree of runs made in one transaction: a parent is 'waiting' until each of its
-- children is terminal. The children's ends drive it, in the transaction of each end, from a
-- trigger (runlane_flow_changed): whichever path ends a child (a worker's group commit, a cancel,
-- a stall recovery), the parent is queued with its run.children_done event, or failed with
-- ChildFailed, in that same commit; no sweep is needed and no wake-up can be lost.
--
-- Locks go from a child to its parent only (a child's row, then its parent's), so flows never
-- deadlock. Cancelling what a parent leaves behind (it failed or was cancelled before its
-- children ended) goes the other way, so it is not done in that transaction: the parent is
-- marked cascade_pending and whoever made the change (or the scheduler, after a crash) cancels
-- its children next (app.flows.settle), each child's cancel a change of its own.

ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (
    status IN ('waiting', 'queued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled'));

-- No foreign key to the parent: a run's row is written on the submit's hot path, and retention
-- deletes a flow whole (its root last).
ALTER TABLE runs
    ADD COLUMN parent_id        uuid,
    ADD COLUMN root_id          uuid,     -- the flow's root (itself for the root); null: no flow
    ADD COLUMN child_index      integer,  -- its place among its parent's children, from 0
    ADD COLUMN on_child_failure text CHECK (on_child_failure IN ('fail', 'ignore')),
    ADD COLUMN children_total   integer NOT NULL DEFAULT 0,
    ADD COLUMN children_pending integer NOT NULL DEFAULT 0,  -- its children not terminal
    ADD COLUMN cascade_pending  boolean NOT NULL DEFAULT false;

CREATE INDEX runs_parent_idx ON runs (parent_id, child_index) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_cascade_idx ON runs (root_id) WHERE cascade_pending;
CREATE INDEX runs_flow_undispatched_idx ON runs (root_id)
    WHERE root_id IS NOT NULL AND status = 'queued' AND dispatched_at IS NULL;

-- The Postgres record of a batch's Idempotency-Key (a single run's is its row's column).
CREATE TABLE batch_requests (
    tenant              text NOT NULL,
    idempotency_key     text NOT NULL,
    request_fingerprint text NOT NULL,
    run_ids             uuid[] NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX batch_requests_created_idx ON batch_requests (created_at);

-- An event of a change made in PL/pgSQL (the flow trigger's): numbered with the run's new
-- last_seq, as app/sql/outbox.sql numbers those of the statements in app/sql/queries.
CREATE FUNCTION runlane_emit(r runs, of_type text, of_data jsonb) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO run_events (run_id, seq, type, data, tenant, queue)
    VALUES (r.id, r.last_seq, of_type, of_data, r.tenant, r.queue);
$$;

-- How a parent's children ended, for run.children_done.
CREATE FUNCTION runlane_children_ended(parent uuid) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'succeeded', count(*) FILTER (WHERE status = 'succeeded'),
        'failed', count(*) FILTER (WHERE status = 'failed'),
        'cancelled', count(*) FILTER (WHERE status = 'cancelled'))
    FROM runs WHERE parent_id = parent;
$$;

-- A parent's `children` summary as runs show it (null for a run without children).
CREATE FUNCTION runlane_children_summary(r runs) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF r.children_total = 0 THEN
        RETURN NULL;
    END IF;
    RETURN runlane_children_ended(r.id) || jsonb_build_object(
        'total', r.children_total, 'pending', r.children_pending);
END $$;

-- A child crossed the line between live and terminal (either way: a retry brings it back):
-- its parent's count of live children follows, under the parent's row lock, which orders the
-- ends of siblings; the last end queues the parent, a failure under 'fail' fails it. A parent
-- that ends while children live is marked for the cascade that cancels them.
CREATE FUNCTION runlane_flow_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_done boolean := OLD.status IN ('succeeded', 'failed', 'cancelled');
    is_done boolean := NEW.status IN ('succeeded', 'failed', 'cancelled');
    parent runs;
BEGIN
    IF was_done = is_done THEN
        RETURN NULL;
    END IF;
    IF is_done AND NEW.children_pending > 0 THEN
        UPDATE runs SET cascade_pending = true WHERE id = NEW.id;
    END IF;
    IF NEW.parent_id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE runs SET children_pending = children_pending + CASE WHEN is_done THEN -1 ELSE 1 END
    WHERE id = NEW.parent_id
    RETURNING * INTO parent;
    IF NOT is_done OR parent.status IS DISTINCT FROM 'waiting' THEN
        RETURN NULL;
    END IF;
    IF NEW.status <> 'succeeded' AND parent.on_child_failure = 'fail' THEN
        UPDATE runs SET status = 'failed', finished_at = now(), last_seq = last_seq + 1,
            error = jsonb_build_object('type', 'ChildFailed', 'message', format(
                'child %s (%s) %s%s', NEW.id, NEW.task, NEW.status,
                COALESCE(': ' || (NEW.error ->> 'message'), '')))
        WHERE id = parent.id
        RETURNING * INTO parent;
        PERFORM runlane_emit(parent, 'run.failed',
                             jsonb_build_object('attempt', parent.attempt, 'error', parent.error));
    ELSIF parent.children_pending = 0 THEN
        -- dispatched_at null: whoever ended the child enqueues it (app.flows.settle), else the
        -- scheduler's sweep; a parent given a start time still waits for it
        UPDATE runs SET status = CASE WHEN scheduled_for > now() THEN 'delayed' ELSE 'queued' END,
                        dispatched_at = NULL, last_seq = last_seq + 1
        WHERE id = parent.id
        RETURNING * INTO parent;
        PERFORM runlane_emit(parent, 'run.children_done', runlane_children_ended(parent.id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER runs_flow_changed AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (NEW.parent_id IS NOT NULL OR NEW.children_total > 0))
    EXECUTE FUNCTION runlane_flow_changed();
