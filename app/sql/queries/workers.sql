-- Workers as GET /v1/workers shows them.

-- name: running_on_workers
-- The caller's attempts in flight on these workers (runs.worker names the RQ worker).
SELECT worker, id FROM runs
WHERE tenant = %(tenant)s AND status = 'running' AND worker = ANY(%(workers)s)
ORDER BY started_at, id;
