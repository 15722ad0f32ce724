-- Queue limits (contract §5.1; the tables and functions are migration 0007's).

-- name: queue_limits
SELECT * FROM queue_limits
WHERE tenant = %(tenant)s AND (%(queue)s::text IS NULL OR queue = %(queue)s);

-- name: lock_queue_limits
SELECT * FROM queue_limits WHERE tenant = %(tenant)s AND queue = %(queue)s FOR UPDATE;

-- name: put_queue_limits
INSERT INTO queue_limits (tenant, queue, concurrency, rate_limit, rate_period_s,
                          key_concurrency, key_rate_limit, key_rate_period_s, release_at)
VALUES (%(tenant)s, %(queue)s, %(concurrency)s, %(rate_limit)s, %(rate_period_s)s,
        %(key_concurrency)s, %(key_rate_limit)s, %(key_rate_period_s)s, NULL)
ON CONFLICT (tenant, queue) DO UPDATE SET
    concurrency = EXCLUDED.concurrency, rate_limit = EXCLUDED.rate_limit,
    rate_period_s = EXCLUDED.rate_period_s, key_concurrency = EXCLUDED.key_concurrency,
    key_rate_limit = EXCLUDED.key_rate_limit, key_rate_period_s = EXCLUDED.key_rate_period_s,
    release_at = NULL;

-- name: delete_queue_limits
DELETE FROM queue_limits WHERE tenant = %(tenant)s AND queue = %(queue)s;

-- name: release_queue
-- Every held run of the queue that its limits (or their absence) let start now.
SELECT * FROM runlane_release_group(%(tenant)s, %(queue)s, '{}');

-- name: release_after
-- In the transaction that ended these attempts: the held runs their slots let start.
SELECT * FROM runlane_release(%(freed)s::uuid[], %(claiming)s::uuid[]);

-- name: release_due
SELECT * FROM runlane_release_due();

-- name: next_release_due
SELECT min(release_at) AS due FROM queue_limits WHERE release_at IS NOT NULL;

-- name: prune_limit_starts
-- Starts no window counts any more (older than every period of their queue's limits).
DELETE FROM limit_starts s
WHERE NOT EXISTS (
    SELECT 1 FROM queue_limits l
    WHERE l.tenant = s.tenant AND l.queue = s.queue
      AND s.at > now() - make_interval(secs => GREATEST(COALESCE(l.rate_period_s, 0),
                                                        COALESCE(l.key_rate_period_s, 0)))
);

-- name: held_counts
-- Runs held back by a limit, per tenant, queue and reason (for /metrics).
SELECT tenant, queue, held AS reason, count(*) AS n FROM runs
WHERE status = 'queued' AND held IS NOT NULL AND held <> 'released'
GROUP BY tenant, queue, held;
