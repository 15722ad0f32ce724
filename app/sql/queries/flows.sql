-- Flows and batches (contract §5.4, §5.5; the columns, the trigger and batch_requests are
-- migration 0010's): many runs inserted in one statement, and what follows a flow run's change.

-- name: insert_runs (outbox)
-- A batch's runs, or a flow's tree, in one statement with their first events; `runs` is a JSON
-- array of rows. Each row's created_at and scheduled_for follow its place in the array by a
-- microsecond, so the runs keep the order given (FIFO within a priority, newest-first lists).
-- Only a flow's root carries an Idempotency-Key: a conflict leaves it out of the rows returned.
-- (A JSON null in a row reads as SQL NULL: the input null is put back as the JSON null.)
-- Every run of one request shares its traceparent: one parameter, not a field of each row.
INSERT INTO runs (id, tenant, task, queue, status, input, max_attempts, backoff, timeout_s,
                  priority, metadata, idempotency_key, request_fingerprint, dedupe_key,
                  limit_key, parent_id, root_id, child_index, on_child_failure, children_total,
                  children_pending, traceparent, created_at, scheduled_for, dispatched_at,
                  first_dispatched_at, last_seq)
SELECT n.id, %(tenant)s, n.task, n.queue, n.status, COALESCE(n.input, 'null'), n.max_attempts, n.backoff,
       n.timeout_s, n.priority, n.metadata, n.idempotency_key, n.request_fingerprint,
       n.dedupe_key, n.limit_key, n.parent_id, n.root_id, n.child_index, n.on_child_failure,
       n.children_total, n.children_total, %(traceparent)s,
       now() + make_interval(secs => (n.place - 1) / 1e6),
       COALESCE(n.scheduled_for, now() + make_interval(secs => (n.place - 1) / 1e6)),
       CASE WHEN n.status = 'queued' THEN now() END,
       -- its created_at: dispatched in the transaction that made it (timings.queued_ms 0)
       CASE WHEN n.status = 'queued' THEN now() + make_interval(secs => (n.place - 1) / 1e6) END,
       1
FROM jsonb_to_recordset(%(runs)s) AS n(
    id uuid, task text, queue text, status text, input jsonb, max_attempts integer,
    backoff jsonb, timeout_s double precision, priority smallint, metadata jsonb,
    idempotency_key text, request_fingerprint text, dedupe_key text, limit_key text,
    parent_id uuid, root_id uuid, child_index integer, on_child_failure text,
    children_total integer, scheduled_for timestamptz, place bigint)
ON CONFLICT (tenant, idempotency_key) DO NOTHING
RETURNING *,
    runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused,
    CASE status WHEN 'waiting' THEN 'run.waiting' WHEN 'queued' THEN 'run.queued'
                ELSE 'run.delayed' END AS event_type,
    CASE status
        WHEN 'waiting' THEN jsonb_build_object('children', children_total)
        WHEN 'queued' THEN jsonb_build_object('queue', queue, 'priority', priority)
        ELSE jsonb_build_object('until', to_char(scheduled_for AT TIME ZONE 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) END
        AS event_data;

-- name: take_batch_key
-- A batch's Idempotency-Key, taken in the transaction that inserts its runs; no row: it was
-- taken before (batch_by_key says by which request).
INSERT INTO batch_requests (tenant, idempotency_key, request_fingerprint, run_ids)
VALUES (%(tenant)s, %(key)s, %(fingerprint)s, %(run_ids)s)
ON CONFLICT (tenant, idempotency_key) DO NOTHING
RETURNING run_ids;

-- name: batch_by_key
SELECT * FROM batch_requests WHERE tenant = %(tenant)s AND idempotency_key = %(key)s;

-- name: runs_by_ids
-- These runs of a tenant, in the order of the list.
SELECT r.*, runlane_queue_paused(r.tenant, r.queue) AS queue_paused,
       runlane_children_summary(r) AS children
FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS l(id, place)
JOIN runs r ON r.id = l.id AND r.tenant = %(tenant)s
ORDER BY l.place;

-- name: children_of
-- A parent's children in the order given (what its task sees as ctx.children).
SELECT id, task, status, result, error FROM runs
WHERE parent_id = %(id)s
ORDER BY child_index;

-- name: take_cascades
-- Parents that ended before their children (marked cascade_pending by the flow trigger), in
-- flows `roots` (null: every flow), their marks cleared: cascade_cancel handles their children
-- in the same transaction.
UPDATE runs SET cascade_pending = false
WHERE cascade_pending AND (%(roots)s::uuid[] IS NULL OR root_id = ANY(%(roots)s::uuid[]))
RETURNING id, status;

-- name: cascade_cancel (outbox)
-- The live children of those parents: cancelled, or for a running one its attempt asked to
-- stop as a cancel does (no event yet: it ends cancelled when its worker stops it). One
-- statement for both, so that a child a worker claims meanwhile is asked to stop once the
-- claim commits, not skipped as no longer queued.
UPDATE runs c SET
    status = CASE WHEN c.status = 'running' THEN 'running' ELSE 'cancelled' END,
    finished_at = CASE WHEN c.status = 'running' THEN NULL ELSE now() END,
    cancel_requested_at = COALESCE(c.cancel_requested_at, now()),
    cancel_reason = COALESCE(c.cancel_reason, 'parent ' || p.status),
    last_seq = c.last_seq + CASE WHEN c.status = 'running' THEN 0 ELSE 1 END
FROM unnest(%(parents)s::uuid[], %(statuses)s::text[]) AS p(id, status)
WHERE c.parent_id = p.id AND c.status IN ('waiting', 'queued', 'delayed', 'running')
RETURNING c.*,
    CASE WHEN c.status = 'cancelled' THEN 'run.cancelled' END AS event_type,
    jsonb_build_object('reason', c.cancel_reason) AS event_data;

-- name: dispatch_flow_runs
-- Runs of these flows queued and not yet handed to RQ: parents whose children are done.
UPDATE runs SET dispatched_at = now()
WHERE root_id = ANY(%(roots)s::uuid[]) AND status = 'queued' AND dispatched_at IS NULL
RETURNING *;

-- name: retry_children
-- The children of a parent being retried that did not succeed: back to queued like any retry
-- (retry_run), each with its run.queued event; a child that is a parent itself is retried
-- first by app.flows, from the bottom up.
UPDATE runs SET status = 'queued', attempt_base = attempt, stalls = 0, error = NULL,
                result = NULL, progress = NULL, finished_at = NULL, started_at = NULL,
                worker = NULL, cancel_requested_at = NULL, cancel_reason = NULL,
                scheduled_for = now(), dispatched_at = now(), last_seq = last_seq + 1
WHERE parent_id = %(id)s AND status IN ('failed', 'cancelled') AND children_total = 0
RETURNING *, 'run.queued' AS event_type,
          jsonb_build_object('queue', queue, 'priority', priority) AS event_data;

-- name: failed_parents_among_children
SELECT id FROM runs
WHERE parent_id = %(id)s AND status IN ('failed', 'cancelled') AND children_total > 0
ORDER BY child_index;

-- name: wait_again (outbox)
-- A parent retried with children to run again: waiting for them, with a fresh budget.
UPDATE runs SET status = 'waiting', attempt_base = attempt, stalls = 0, error = NULL,
                result = NULL, progress = NULL, finished_at = NULL, started_at = NULL,
                worker = NULL, cancel_requested_at = NULL, cancel_reason = NULL,
                cascade_pending = false, last_seq = last_seq + 1
WHERE id = %(id)s AND tenant = %(tenant)s AND status IN ('failed', 'cancelled')
RETURNING *, runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused,
          'run.waiting' AS event_type,
          jsonb_build_object('children', children_pending) AS event_data;

-- name: children_pending
SELECT children_pending FROM runs WHERE id = %(id)s AND tenant = %(tenant)s;
