-- Queues as one tenant sees them: its run counts per status, and its pauses.

-- name: queue_counts
-- Per queue and status (every one of `statuses`): exact up to %(cap)s, read from runs_tenant_queue_status_idx alone
-- (cap + 1 entries at most), and above it the planner's estimate (runlane_runs_estimate), never
-- below what was counted. A count of every row would read millions of entries a request.
-- The tenant's queues come from the same index, one descent per queue (a loose index scan).
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
)
SELECT names.queue, s.status, c.n > %(cap)s AS estimated,
       CASE WHEN c.n > %(cap)s
            THEN greatest(c.n, runlane_runs_estimate(%(tenant)s, names.queue, s.status))
            ELSE c.n END AS n
FROM names
CROSS JOIN unnest(%(statuses)s::text[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM runs r
        WHERE r.tenant = %(tenant)s AND r.queue = names.queue AND r.status = s.status
        LIMIT %(cap)s + 1) AS capped
) AS c
WHERE c.n > 0;

-- name: queue_recent
-- The tenant's runs finished since %(since)s, per queue, minute and outcome, from
-- runs_tenant_finished_idx alone.
SELECT queue, date_trunc('minute', finished_at) AS minute, status, count(*) AS n FROM runs
WHERE tenant = %(tenant)s AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND finished_at >= %(since)s AND finished_at IS NOT NULL
GROUP BY queue, minute, status;

-- name: queue_pauses
SELECT queue FROM queue_pauses
WHERE tenant = %(tenant)s AND (%(queue)s::text IS NULL OR queue = %(queue)s);

-- name: pause_queue
INSERT INTO queue_pauses (tenant, queue) VALUES (%(tenant)s, %(queue)s)
ON CONFLICT (tenant, queue) DO NOTHING;

-- name: resume_queue
DELETE FROM queue_pauses WHERE tenant = %(tenant)s AND queue = %(queue)s;

-- name: queue_depths
-- Queued runs per queue over every tenant, for /metrics: all of them, and those a worker could
-- start now (no queue limit holds them back, their queue is not paused for their tenant).
SELECT queue, count(*) AS queued,
       count(*) FILTER (WHERE (held IS NULL OR held = 'released')
                          AND NOT EXISTS (SELECT 1 FROM queue_pauses p
                                          WHERE p.tenant = runs.tenant AND p.queue = runs.queue))
           AS runnable
FROM runs
WHERE status = 'queued'
GROUP BY queue;
