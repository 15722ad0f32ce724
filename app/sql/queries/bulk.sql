-- Bulk cancel and retry (contract §2, app.bulk): the single-run rules of runs.sql and flows.sql
-- applied to many runs of a tenant, each kind of change one statement over a list of ids.

-- name: bulk_match
-- The tenant's runs a bulk change names (ids, and/or the list filters; none: every run of the
-- tenant): how many, and the ids of those in `eligible` statuses (`parents`: those of them with
-- children, whose retry is a flow's). One snapshot, so changed never exceeds matched.
SELECT count(*) AS matched,
       COALESCE(array_agg(id) FILTER (WHERE status = ANY(%(eligible)s::text[])
                                        AND children_total = 0), '{}') AS plain,
       COALESCE(array_agg(id) FILTER (WHERE status = ANY(%(eligible)s::text[])
                                        AND children_total > 0), '{}') AS parents
FROM runs
WHERE tenant = %(tenant)s
  AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s);

-- name: cancel_runs (outbox)
-- cancel_waiting over a list: waiting, queued and delayed runs cancelled at once.
UPDATE runs SET status = 'cancelled', finished_at = now(), cancel_requested_at = now(),
                cancel_reason = 'cancelled', last_seq = last_seq + 1
WHERE id = ANY(%(ids)s::uuid[]) AND tenant = %(tenant)s
  AND status IN ('waiting', 'queued', 'delayed')
RETURNING *, 'run.cancelled' AS event_type,
          jsonb_build_object('reason', cancel_reason) AS event_data;

-- name: request_cancel_runs
-- request_cancel_running over a list, after cancel_runs (a run claimed in between is asked to
-- stop here). A run whose cancel was requested before is left as it is: not a change.
UPDATE runs SET cancel_requested_at = now(), cancel_reason = 'cancelled'
WHERE id = ANY(%(ids)s::uuid[]) AND tenant = %(tenant)s AND status = 'running'
  AND cancel_requested_at IS NULL
RETURNING *;

-- name: retry_runs (outbox)
-- retry_run over a list of runs without children: queued with a fresh budget.
UPDATE runs SET status = 'queued', attempt_base = attempt, stalls = 0, error = NULL,
                result = NULL, progress = NULL, finished_at = NULL, started_at = NULL,
                worker = NULL, cancel_requested_at = NULL, cancel_reason = NULL,
                scheduled_for = now(), dispatched_at = now(), last_seq = last_seq + 1
WHERE id = ANY(%(ids)s::uuid[]) AND tenant = %(tenant)s
  AND status IN ('failed', 'cancelled') AND children_total = 0
RETURNING *, 'run.queued' AS event_type,
          jsonb_build_object('queue', queue, 'priority', priority) AS event_data;

-- name: retry_levels
-- The parents a retry of these parents re-runs: them, and below them every child that is a
-- parent and failed or was cancelled (app.flows' rule), grouped by depth, deepest first: each
-- parent comes after its children (a parent reached by two paths counts at its deepest).
WITH RECURSIVE t(id, depth) AS (
    SELECT p.id, 0 FROM unnest(%(ids)s::uuid[]) AS p(id)
    UNION
    SELECT c.id, t.depth + 1 FROM t JOIN runs c ON c.parent_id = t.id
    WHERE c.status IN ('failed', 'cancelled') AND c.children_total > 0
)
SELECT d.depth, array_agg(d.id) AS ids
FROM (SELECT t.id, max(t.depth) AS depth FROM t GROUP BY t.id) d
GROUP BY d.depth
ORDER BY d.depth DESC;

-- name: retry_children_of (outbox)
-- retry_children over a list of parents: their failed and cancelled children without children
-- of their own queued again (the flow trigger counts them live again in each parent).
UPDATE runs SET status = 'queued', attempt_base = attempt, stalls = 0, error = NULL,
                result = NULL, progress = NULL, finished_at = NULL, started_at = NULL,
                worker = NULL, cancel_requested_at = NULL, cancel_reason = NULL,
                scheduled_for = now(), dispatched_at = now(), last_seq = last_seq + 1
WHERE parent_id = ANY(%(ids)s::uuid[]) AND status IN ('failed', 'cancelled')
  AND children_total = 0
RETURNING *, 'run.queued' AS event_type,
          jsonb_build_object('queue', queue, 'priority', priority) AS event_data;

-- name: retry_parents (outbox)
-- A level of parents retried, after their children: wait_again for those with children to run
-- again (waiting, run.waiting), retry_run for the others (queued, run.queued).
UPDATE runs SET status = CASE WHEN children_pending > 0 THEN 'waiting' ELSE 'queued' END,
                attempt_base = attempt, stalls = 0, error = NULL, result = NULL,
                progress = NULL, finished_at = NULL, started_at = NULL, worker = NULL,
                cancel_requested_at = NULL, cancel_reason = NULL, cascade_pending = false,
                scheduled_for = CASE WHEN children_pending > 0 THEN scheduled_for ELSE now() END,
                dispatched_at = CASE WHEN children_pending > 0 THEN dispatched_at ELSE now() END,
                last_seq = last_seq + 1
WHERE id = ANY(%(ids)s::uuid[]) AND tenant = %(tenant)s AND status IN ('failed', 'cancelled')
RETURNING *,
    CASE WHEN status = 'waiting' THEN 'run.waiting' ELSE 'run.queued' END AS event_type,
    CASE WHEN status = 'waiting' THEN jsonb_build_object('children', children_pending)
         ELSE jsonb_build_object('queue', queue, 'priority', priority) END AS event_data;
