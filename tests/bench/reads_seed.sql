-- scripts/bench reads: runs %(first)s..%(last)s of %(n)s of one tenant, as a busy week leaves them.
-- Created every half second over the last days (newest last); ten tasks, two per queue of five;
-- a run in 97 cancelled, one in 29 failed, one in 331 live (queued, delayed or running, spread over the
-- whole week, the hard case for a list filtered by status); idempotency keys on a third, dedupe
-- keys on a seventh; in each block of 10,000 runs one flow parent with 100 children (one flow
-- in ten still waiting). Ids are md5 of the number, so a child can name its parent's id.
INSERT INTO runs (id, tenant, task, queue, status, input, result, error, attempt, max_attempts,
                  priority, idempotency_key, dedupe_key, created_at, scheduled_for, started_at,
                  finished_at, last_seq, dispatched_at, worker, lease_expires_at,
                  parent_id, root_id, child_index, children_total, children_pending)
SELECT md5(%(tenant)s || i)::uuid, %(tenant)s, t.task, t.queue, s.status,
       jsonb_build_object('n', i),
       CASE WHEN s.status = 'succeeded' THEN '{"ok": true}'::jsonb END,
       CASE WHEN s.status = 'failed'
            THEN '{"type": "ValueError", "message": "bad input"}'::jsonb END,
       CASE WHEN s.status IN ('queued', 'delayed', 'waiting') THEN 0 ELSE 1 END, 3,
       1 + i %% 10,
       CASE WHEN i %% 3 = 0 THEN 'idem-' || i END,
       CASE WHEN i %% 7 = 0 THEN 'dedupe-' || i END,
       c.at,
       CASE WHEN s.status = 'delayed' THEN now() + interval '1 day' ELSE c.at END,
       CASE WHEN s.status IN ('queued', 'delayed', 'waiting') THEN NULL
            ELSE c.at + interval '100 ms' END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled')
            THEN c.at + make_interval(secs => 0.2 + (i %% 50) / 10.0) END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled') THEN 3 ELSE 2 END,
       c.at,
       CASE WHEN s.status = 'running' THEN (%(workers)s::text[])[1 + i %% 2] END,
       CASE WHEN s.status = 'running' THEN now() + interval '1 day' END,
       CASE WHEN f.place BETWEEN 2 AND 101 THEN md5(%(tenant)s || (i - f.place + 1))::uuid END,
       CASE WHEN f.place BETWEEN 1 AND 101 THEN md5(%(tenant)s || (i - f.place + 1))::uuid END,
       CASE WHEN f.place BETWEEN 2 AND 101 THEN f.place - 2 END,
       CASE WHEN f.place = 1 THEN 100 ELSE 0 END,
       CASE WHEN f.place = 1 AND s.status = 'waiting' THEN 100 ELSE 0 END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
CROSS JOIN LATERAL (SELECT i %% 10000 AS place) AS f
CROSS JOIN LATERAL (
    SELECT (ARRAY['mail.send', 'mail.digest', 'reports.build', 'reports.export', 'billing.charge',
                  'billing.refund', 'media.resize', 'media.transcode', 'demo.echo', 'demo.noop'])
               [1 + i %% 10] AS task,
           (ARRAY['mail', 'reports', 'billing', 'media', 'default'])[1 + (i %% 10) / 2] AS queue
) AS t
CROSS JOIN LATERAL (
    SELECT now() - make_interval(secs => (%(n)s - i) * 0.5 + 10) AS at
) AS c
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN f.place = 1 AND (i / 10000) %% 10 = 0 THEN 'waiting'
        WHEN i %% 331 = 0 THEN (ARRAY['queued', 'queued', 'delayed', 'running'])[1 + (i / 331) %% 4]
        WHEN i %% 97 = 0 THEN 'cancelled'
        WHEN i %% 29 = 0 THEN 'failed'
        ELSE 'succeeded'
    END AS status
) AS s;
