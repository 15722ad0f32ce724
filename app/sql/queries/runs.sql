-- Run state changes. Each one marked (outbox) is wrapped by app/sql/outbox.sql into a single
-- statement that also writes each returned row's event, so the change and its event commit
-- together; such a change bumps last_seq and returns its rows with event_type and event_data.

-- name: insert_run (outbox)
-- created_at and an immediate run's scheduled_for are the same instant
INSERT INTO runs (id, tenant, task, queue, status, input, max_attempts, backoff, timeout_s,
                  priority, metadata, idempotency_key, request_fingerprint, dedupe_key,
                  limit_key, traceparent, created_at, scheduled_for, dispatched_at,
                  first_dispatched_at, last_seq)
VALUES (%(id)s, %(tenant)s, %(task)s, %(queue)s, %(status)s, %(input)s, %(max_attempts)s,
        %(backoff)s, %(timeout_s)s, %(priority)s, %(metadata)s, %(idempotency_key)s,
        %(request_fingerprint)s, %(dedupe_key)s, %(limit_key)s, %(traceparent)s, now(),
        COALESCE(%(scheduled_for)s, now()),
        CASE WHEN %(status)s = 'queued' THEN now() END,
        CASE WHEN %(status)s = 'queued' THEN now() END, 1)
ON CONFLICT (tenant, idempotency_key) DO NOTHING
RETURNING *,
    runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused,
    CASE WHEN status = 'queued' THEN 'run.queued' ELSE 'run.delayed' END AS event_type,
    CASE WHEN status = 'queued'
         THEN jsonb_build_object('queue', queue, 'priority', priority)
         ELSE jsonb_build_object('until', to_char(scheduled_for AT TIME ZONE 'UTC',
                                                  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) END
        AS event_data;

-- name: run_by_idempotency_key
SELECT *, runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused FROM runs
WHERE tenant = %(tenant)s AND idempotency_key = %(idempotency_key)s;

-- name: get_run
SELECT *, runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused,
       runlane_children_summary(runs) AS children
FROM runs
WHERE id = %(id)s AND tenant = %(tenant)s;

-- name: tenant_run_ids
-- Which of these ids are runs of the tenant (a scoped token may name only those).
SELECT id FROM runs WHERE tenant = %(tenant)s AND id = ANY(%(ids)s::uuid[]);

-- name: get_run_any_tenant
SELECT * FROM runs WHERE id = %(id)s;

-- name: list_runs_by_queue_status
-- A page of runs filtered by queue or status (or both) alone, newest first: the newest `limit`
-- of each queue and status (`statuses`: the one asked for, or all) of
-- runs_tenant_queue_status_idx, merged. Each is read from the
-- index alone, so a page reads at most limit entries per queue and status however rare the
-- value is, and no index per filter is written at every status change. The tenant's queues
-- (when no queue is given) come from the same index, one descent each (a loose index scan).
WITH RECURSIVE every_queue AS (
    (SELECT queue FROM runs WHERE tenant = %(tenant)s AND %(queue)s::text IS NULL
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT r.queue FROM runs r WHERE r.tenant = %(tenant)s AND r.queue > every_queue.queue
            ORDER BY r.queue LIMIT 1)
    FROM every_queue WHERE every_queue.queue IS NOT NULL
), names AS (
    SELECT queue FROM every_queue WHERE queue IS NOT NULL
    UNION ALL
    SELECT %(queue)s::text WHERE %(queue)s::text IS NOT NULL
), page AS (
    SELECT p.id, p.created_at FROM names
    CROSS JOIN unnest(%(statuses)s::text[]) AS s(status)
    CROSS JOIN LATERAL (
        SELECT r.id, r.created_at FROM runs r
        WHERE r.tenant = %(tenant)s AND r.queue = names.queue AND r.status = s.status
          AND (%(before_created)s::timestamptz IS NULL
               OR (r.created_at, r.id) < (%(before_created)s, %(before_id)s::uuid))
        ORDER BY r.created_at DESC, r.id DESC
        LIMIT %(limit)s) AS p
    ORDER BY p.created_at DESC, p.id DESC
    LIMIT %(limit)s
)
-- id = ANY(ARRAY(...)): the page's rows by primary key, never a join the planner might hash
SELECT runs.*, runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused,
       runlane_children_summary(runs) AS children
FROM runs
WHERE runs.id = ANY(ARRAY(SELECT page.id FROM page)) AND runs.tenant = %(tenant)s
ORDER BY runs.created_at DESC, runs.id DESC;

-- name: list_runs
-- Any other page of runs. A filter not given is NULL: run unprepared (app.runs.list_runs), the
-- plan is made for the filters given and reads the index of one of them: the task's, a flow's
-- parent's, the keys' (migration 0012), or with none the tenant's newest first.
SELECT *, runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused,
       runlane_children_summary(runs) AS children
FROM runs
WHERE tenant = %(tenant)s
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(parent_id)s::uuid IS NULL OR parent_id = %(parent_id)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(idempotency_key)s::text IS NULL OR idempotency_key = %(idempotency_key)s)
  AND (%(dedupe_key)s::text IS NULL OR dedupe_key = %(dedupe_key)s)
  AND (%(before_created)s::timestamptz IS NULL
       OR (created_at, id) < (%(before_created)s, %(before_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: list_events
SELECT e.*, runlane_event_json(e) AS json FROM run_events e
WHERE e.run_id = %(run_id)s AND e.seq > %(after)s
ORDER BY e.seq
LIMIT %(limit)s;

-- name: claim_attempt (outbox)
-- Start the next attempt of each run in a list (a worker's group commit claims a batch in one
-- statement). Fencing: only a queued, unpaused, uncancelled run starts; a duplicate delivery
-- updates nothing. Rows are updated in no set order, so started_at is the statement's clock plus
-- a microsecond per place in the list: it orders the batch as popped, the order it runs in.
-- "(status = 'queued') IS TRUE" hides the guard from the planner's partial-index matching: with
-- stale statistics (a bulk of runs just queued) it would scan every queued run's entry of
-- runs_queued_dispatch_idx for each claim instead of looking the ids up by primary key.
-- Queue limits decide first (runlane_admit, migration 0007): it passes each list place a run
-- to claim, which for a limited queue may be a held run ahead of the one popped there;
-- claim_place says which place each claimed run took.
-- runs.id = ANY(...) gives the planner the primary key to look the runs up by: a join alone to
-- the function's rows (or to unnest) has it scan the whole table when its statistics are stale.
WITH w AS MATERIALIZED (SELECT * FROM runlane_admit(%(ids)s::uuid[]) AS a(id, i))
UPDATE runs SET status = 'running', attempt = attempt + 1, held = NULL, held_until = NULL,
                started_at = (SELECT clock_timestamp()) + make_interval(secs => (w.i - 1) / 1e6),
                worker = %(worker)s, last_seq = last_seq + 1,
                lease_expires_at = now() + make_interval(secs => %(lease_s)s)
FROM w
WHERE runs.id = ANY(ARRAY(SELECT w.id FROM w)) AND runs.id = w.id
  AND (status = 'queued') IS TRUE AND cancel_requested_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM queue_pauses p
                  WHERE p.tenant = runs.tenant AND p.queue = runs.queue)
RETURNING runs.*, w.i AS claim_place, 'run.started' AS event_type,
          jsonb_build_object('attempt', attempt, 'worker', worker) AS event_data;

-- name: claimed_by_worker
-- After a claim whose commit lost its connection: which of these runs that commit did start for
-- this worker (the worker names a process, so no other process's attempt can match).
SELECT * FROM runs
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'running' AND worker = %(worker)s;

-- name: release_attempt (outbox)
-- A claimed attempt handed back unstarted (worker shutting down): queued again, no attempt spent.
UPDATE runs SET status = 'queued', attempt = attempt - 1, worker = NULL,
                started_at = CASE WHEN attempt = 1 THEN NULL ELSE started_at END,
                lease_expires_at = NULL, dispatched_at = now(), last_seq = last_seq + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
  AND cancel_requested_at IS NULL
RETURNING *, 'run.queued' AS event_type,
          jsonb_build_object('queue', queue, 'priority', priority) AS event_data;

-- name: record_progress (outbox)
UPDATE runs SET progress = %(data)s, last_seq = last_seq + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
RETURNING id, tenant, queue, last_seq, cancel_requested_at,
          'run.progress' AS event_type, %(data)s AS event_data;

-- name: record_log (outbox)
UPDATE runs SET last_seq = last_seq + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
RETURNING id, tenant, queue, last_seq, cancel_requested_at,
          'run.log' AS event_type, %(data)s AS event_data;

-- name: finish_attempt (outbox)
-- Each attempt in a list succeeded (a worker's group commit records a batch in one statement);
-- not when its cancellation was requested (see cancel_running). The guard is hidden from
-- partial-index matching as in claim_attempt.
UPDATE runs SET status = 'succeeded', result = f.result, finished_at = now(),
                lease_expires_at = NULL, last_seq = last_seq + 1
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(results)s::jsonb[]) AS f(id, attempt, result)
WHERE runs.id = ANY(%(ids)s::uuid[]) AND runs.id = f.id  -- ANY: as in claim_attempt
  AND (runs.status = 'running') IS TRUE AND runs.attempt = f.attempt
  AND runs.cancel_requested_at IS NULL
RETURNING runs.*, 'run.succeeded' AS event_type,
          jsonb_build_object('result', runs.result) AS event_data;

-- name: retry_attempt (outbox)
-- A failed attempt with attempts left: back to delayed (or queued when there is no wait).
UPDATE runs SET status = CASE WHEN %(delay_ms)s > 0 THEN 'delayed' ELSE 'queued' END,
                error = %(error)s, lease_expires_at = NULL, worker = NULL,
                scheduled_for = now() + make_interval(secs => %(delay_ms)s / 1000.0),
                dispatched_at = CASE WHEN %(delay_ms)s > 0 THEN NULL ELSE now() END,
                last_seq = last_seq + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
  AND cancel_requested_at IS NULL
RETURNING *, 'run.retrying' AS event_type,
          jsonb_build_object('attempt', attempt, 'error', error, 'delay_ms', %(delay_ms)s)
              AS event_data;

-- name: fail_attempt (outbox)
UPDATE runs SET status = 'failed', error = %(error)s, finished_at = now(),
                lease_expires_at = NULL, last_seq = last_seq + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
  AND cancel_requested_at IS NULL
RETURNING *, 'run.failed' AS event_type,
          jsonb_build_object('attempt', attempt, 'error', error) AS event_data;

-- name: cancel_waiting (outbox)
UPDATE runs SET status = 'cancelled', finished_at = now(), cancel_requested_at = now(),
                cancel_reason = %(reason)s, last_seq = last_seq + 1
WHERE id = %(id)s AND tenant = %(tenant)s AND status IN ('waiting', 'queued', 'delayed')
RETURNING *, 'run.cancelled' AS event_type,
          jsonb_build_object('reason', cancel_reason) AS event_data;

-- name: request_cancel_running
-- The run stays running until its worker stops the attempt and calls cancel_running.
-- cancel_requested_at so belongs to the attempt running now: every way out of 'running' with it
-- set ends the run cancelled, and retry_run clears it for the next attempt.
UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, now()),
                cancel_reason = COALESCE(cancel_reason, %(reason)s)
WHERE id = %(id)s AND tenant = %(tenant)s AND status = 'running'
RETURNING *;

-- name: cancel_running (outbox)
UPDATE runs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL,
                last_seq = last_seq + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
  AND cancel_requested_at IS NOT NULL
RETURNING *, 'run.cancelled' AS event_type,
          jsonb_build_object('reason', COALESCE(cancel_reason, 'cancelled')) AS event_data;

-- name: retry_run (outbox)
-- a fresh budget of max_attempts; `attempt` goes on counting every attempt started
UPDATE runs SET status = 'queued', attempt_base = attempt, stalls = 0, error = NULL,
                result = NULL,
                progress = NULL, finished_at = NULL, started_at = NULL, worker = NULL,
                cancel_requested_at = NULL, cancel_reason = NULL, scheduled_for = now(),
                dispatched_at = now(), last_seq = last_seq + 1
WHERE id = %(id)s AND tenant = %(tenant)s AND status IN ('failed', 'cancelled')
RETURNING *,
    runlane_queue_paused(runs.tenant, runs.queue) AS queue_paused,
    'run.queued' AS event_type,
    jsonb_build_object('queue', queue, 'priority', priority) AS event_data;

-- name: promote_due (outbox)
-- Delayed runs whose time has come; SKIP LOCKED lets several schedulers share the work.
WITH due AS (
    SELECT id FROM runs
    WHERE status = 'delayed' AND scheduled_for <= now()
    ORDER BY scheduled_for
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE runs SET status = 'queued', dispatched_at = now(), last_seq = last_seq + 1
FROM due WHERE runs.id = due.id
RETURNING runs.*, 'run.queued' AS event_type,
          jsonb_build_object('queue', queue, 'priority', priority) AS event_data;

-- name: next_delayed_due
SELECT min(scheduled_for) AS due FROM runs WHERE status = 'delayed';

-- name: renew_leases
-- The heartbeat of a worker process: keeps its attempts leased and reports cancel requests.
UPDATE runs SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY(%(ids)s) AND status = 'running' AND worker = %(worker)s
RETURNING id, attempt, cancel_requested_at;

-- name: expired_leases
SELECT * FROM runs
WHERE status = 'running' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: requeue_stalled (outbox)
UPDATE runs SET status = 'queued', attempt = attempt - 1, stalls = stalls + 1,
                worker = NULL, lease_expires_at = NULL, dispatched_at = now(),
                last_seq = last_seq + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
RETURNING *, 'run.stalled' AS event_type,
          jsonb_build_object('attempt', attempt + 1) AS event_data;

-- name: stall_event (outbox)
-- The run.stalled event of a run that is about to fail or be cancelled for stalling.
UPDATE runs SET last_seq = last_seq + 1, stalls = stalls + 1
WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
RETURNING id, tenant, queue, last_seq, 'run.stalled' AS event_type,
          jsonb_build_object('attempt', attempt) AS event_data;

-- name: queued_to_dispatch
-- Queued runs that Redis may not hold: never dispatched, or dispatched long ago.
SELECT * FROM runs
WHERE status = 'queued'
  AND (dispatched_at IS NULL OR dispatched_at < now() - make_interval(secs => %(older_than_s)s))
  AND (held IS NULL OR held = 'released')  -- a held run is not in Redis: a freed slot releases it
  AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.tenant = runs.tenant AND p.queue = runs.queue)
ORDER BY priority, scheduled_for
LIMIT %(limit)s;

-- name: mark_dispatched
UPDATE runs SET dispatched_at = now() WHERE id = ANY(%(ids)s) AND status = 'queued';

-- name: queued_in_queue
SELECT * FROM runs WHERE tenant = %(tenant)s AND queue = %(queue)s AND status = 'queued'
ORDER BY priority, scheduled_for;
