-- The scheduler process: schedule firing and retention. Run state changes stay in runs.sql.

-- name: due_schedules
-- Locked until the firing transaction ends; SKIP LOCKED lets several schedulers share the work.
SELECT * FROM schedules
WHERE next_fire_at <= now()
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: advance_schedule
-- Guarded by the firing time read, so a firing is never advanced twice.
UPDATE schedules SET next_fire_at = %(next_fire_at)s
WHERE tenant = %(tenant)s AND name = %(name)s AND next_fire_at = %(fired_at)s;

-- name: next_schedule_due
SELECT min(next_fire_at) AS due FROM schedules;

-- name: delete_expired_runs
-- Finished runs past retention; their events go with them (ON DELETE CASCADE). A flow goes
-- whole, once its root is past retention: a child's results stay while its parent may need them.
WITH expired AS (
    SELECT id FROM runs
    WHERE finished_at < now() - make_interval(days => %(days)s)
      AND (root_id IS NULL OR root_id = id OR NOT EXISTS (
          SELECT 1 FROM runs root WHERE root.id = runs.root_id
            AND (root.finished_at IS NULL
                 OR root.finished_at >= now() - make_interval(days => %(days)s))))
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM runs USING expired WHERE runs.id = expired.id
RETURNING runs.id;

-- name: delete_expired_batch_keys
-- A batch's Idempotency-Key is kept as long as a run's (its row's column): the runs' retention.
DELETE FROM batch_requests WHERE created_at < now() - make_interval(days => %(days)s);

-- name: delete_expired_webhook_pings
-- A ping belongs to no run, so no run's retention takes it: it goes after as long (its attempts
-- with it, ON DELETE CASCADE). Event deliveries go with their events.
DELETE FROM webhook_deliveries
WHERE run_id IS NULL AND created_at < now() - make_interval(days => %(days)s);
