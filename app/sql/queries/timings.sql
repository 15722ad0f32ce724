-- Timings and ETA (contract §6; the index is migration 0011's).

-- name: median_durations
-- Per task of a tenant: the median duration (seconds, from the start of the last attempt to
-- the end) of its last %(sample)s succeeded runs, newest first; null without any. Each task is one
-- range of runs_succeeded_task_idx, however many runs are stored.
SELECT t.task, d.median_s
FROM unnest(%(tasks)s::text[]) AS t(task)
CROSS JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM s.finished_at - s.started_at)::float8) AS median_s
    FROM (SELECT r.finished_at, r.started_at FROM runs r
          WHERE r.tenant = %(tenant)s AND r.task = t.task AND r.status = 'succeeded'
          ORDER BY r.finished_at DESC
          LIMIT %(sample)s) s
) d;
