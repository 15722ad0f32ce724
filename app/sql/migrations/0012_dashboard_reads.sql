-- The dashboard's reads at millions of runs of one tenant (issue 13), each a few index lookups.
--
-- GET /v1/runs, newest first: filtered by queue or status alone it merges the newest entries of
-- each queue and status of runs_tenant_queue_status_idx (app/sql/queries/runs.sql), which also
-- serves the queue counts, exact up to a cap (queues.sql). It replaces the (tenant, queue,
-- status) index of 0001. A task's runs have an index of their own: a task may be a small part of
-- each queue. Every index over all runs is written again at each status change (an update that
-- changes an indexed column is never HOT), so there is no index per status or per queue.
DROP INDEX runs_tenant_queue_status_idx;
CREATE INDEX runs_tenant_queue_status_idx ON runs (tenant, queue, status, created_at DESC, id DESC);
CREATE INDEX runs_tenant_task_idx ON runs (tenant, task, created_at DESC, id DESC);
-- The search by dedupe key (the idempotency key has its unique constraint's index).
CREATE INDEX runs_tenant_dedupe_key_idx ON runs (tenant, dedupe_key) WHERE dedupe_key IS NOT NULL;
-- The queues' recent throughput: runs finished in the last minutes, counted from the index alone.
CREATE INDEX runs_tenant_finished_idx ON runs (tenant, finished_at) INCLUDE (queue, status)
    WHERE finished_at IS NOT NULL;

-- Counts above the cap are the planner's estimates; these statistics make them per tenant,
-- queue and status rather than the product of three separate frequencies.
CREATE STATISTICS runs_tenant_queue_status_stats (mcv) ON tenant, queue, status FROM runs;

-- The planner's estimate of a tenant's runs of one queue and status (the rows of its plan).
CREATE FUNCTION runlane_runs_estimate(of_tenant text, of_queue text, of_status text)
    RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    plan jsonb;
BEGIN
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM runs '
                   'WHERE tenant = %L AND queue = %L AND status = %L',
                   of_tenant, of_queue, of_status) INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint;
END $$;
