-- The outbox relay and the tails: taking batches of unpublished events, numbering them in their
-- tenant's stream, marking them published, and reading events back by seq or tseq.

-- name: relay_take_batch
-- One round trip: lock the oldest unpublished rows, give the ones without a tseq the next numbers
-- of their tenant's stream (tenant_streams is bumped in the same statement, so tseq stays
-- contiguous per tenant and its row lock serialises concurrent relays), and return the batch,
-- each event already rendered as the JSON clients get (by runlane_event_json, as every read of
-- history renders it; Postgres renders it faster than Python).
WITH batch AS (
    SELECT id, tenant, tseq FROM run_events
    WHERE NOT published AND id <> ALL(%(skip)s::bigint[])
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE
), fresh AS (
    SELECT id, tenant, row_number() OVER (PARTITION BY tenant ORDER BY id) AS n
    FROM batch WHERE tseq IS NULL
), counts AS (
    SELECT tenant, count(*) AS total FROM fresh GROUP BY tenant
), bumped AS (
    INSERT INTO tenant_streams AS ts (tenant, last_tseq)
    SELECT tenant, total FROM counts
    ON CONFLICT (tenant) DO UPDATE SET last_tseq = ts.last_tseq + EXCLUDED.last_tseq
    RETURNING tenant, last_tseq
), numbered AS (
    UPDATE run_events e SET tseq = b.last_tseq - c.total + f.n
    FROM fresh f JOIN counts c USING (tenant) JOIN bumped b USING (tenant)
    WHERE e.id = f.id
    RETURNING e.id, e.run_id, e.seq, e.type, e.tenant, e.queue, e.tseq,
              runlane_event_json(e) AS event
)
SELECT * FROM numbered
UNION ALL
SELECT e.id, e.run_id, e.seq, e.type, e.tenant, e.queue, e.tseq,
       runlane_event_json(e) AS event
FROM run_events e JOIN batch b ON b.id = e.id
WHERE b.tseq IS NOT NULL
ORDER BY id;

-- name: relay_mark_published
UPDATE run_events SET published = true WHERE id = ANY(%(ids)s);

-- name: relay_recent_events
-- After Redis lost its data: the published events of runs that are live or ended recently,
-- in pages by id, to put back into their streams.
SELECT e.id, e.run_id, e.seq, e.type, e.tenant, e.queue, e.tseq,
       runlane_event_json(e) AS event
FROM run_events e JOIN runs r ON r.id = e.run_id
WHERE e.published AND e.id > %(after_id)s
  AND (r.finished_at IS NULL OR r.finished_at > now() - make_interval(secs => %(recent_s)s))
ORDER BY e.id
LIMIT %(limit)s;

-- name: tenant_events
-- A tenant-wide tail catching up from Postgres: every event after a tseq, in tseq order.
SELECT e.*, runlane_event_json(e) AS json FROM run_events e
WHERE tenant = %(tenant)s AND tseq > %(after)s
ORDER BY tseq
LIMIT %(limit)s;

-- name: tenant_last_tseq
SELECT COALESCE((SELECT last_tseq FROM tenant_streams WHERE tenant = %(tenant)s), 0) AS last_tseq;

-- name: relay_try_lock
-- Held for the life of the relay's session: exactly one relay publishes, standbys keep asking.
SELECT pg_try_advisory_lock(%(key)s) AS locked;
