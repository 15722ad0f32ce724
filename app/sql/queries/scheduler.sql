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
-- Finished runs past retention; their events go with them (ON DELETE CASCADE).
WITH expired AS (
    SELECT id FROM runs
    WHERE finished_at < now() - make_interval(days => %(days)s)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM runs USING expired WHERE runs.id = expired.id
RETURNING runs.id;
