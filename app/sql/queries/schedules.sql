-- Schedules as the API manages them; the scheduler process fires them.

-- name: upsert_schedule
-- A POST with an existing name replaces that schedule, firing times included.
INSERT INTO schedules (tenant, name, task, input, queue, cron, every_s, next_fire_at)
VALUES (%(tenant)s, %(name)s, %(task)s, %(input)s, %(queue)s, %(cron)s, %(every_s)s,
        %(next_fire_at)s)
ON CONFLICT (tenant, name) DO UPDATE
SET task = EXCLUDED.task, input = EXCLUDED.input, queue = EXCLUDED.queue,
    cron = EXCLUDED.cron, every_s = EXCLUDED.every_s, next_fire_at = EXCLUDED.next_fire_at,
    created_at = clock_timestamp()
RETURNING *, (xmax = 0) AS inserted;

-- name: list_schedules
SELECT * FROM schedules WHERE tenant = %(tenant)s ORDER BY name;

-- name: delete_schedule
DELETE FROM schedules WHERE tenant = %(tenant)s AND name = %(name)s RETURNING name;
