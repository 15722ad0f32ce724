-- Queues as one tenant sees them: its run counts per status, and its pauses.

-- name: queue_counts
SELECT queue, status, count(*) AS n FROM runs
WHERE tenant = %(tenant)s AND (%(queue)s::text IS NULL OR queue = %(queue)s)
GROUP BY queue, status;

-- name: queue_pauses
SELECT queue FROM queue_pauses
WHERE tenant = %(tenant)s AND (%(queue)s::text IS NULL OR queue = %(queue)s);

-- name: pause_queue
INSERT INTO queue_pauses (tenant, queue) VALUES (%(tenant)s, %(queue)s)
ON CONFLICT (tenant, queue) DO NOTHING;

-- name: resume_queue
DELETE FROM queue_pauses WHERE tenant = %(tenant)s AND queue = %(queue)s;
