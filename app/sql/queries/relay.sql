-- The outbox relay and the tails: taking batches of events, numbering them in their tenant's
-- stream, keeping the relay's place, and reading events back by seq or tseq.

-- name: relay_take_batch
-- One round trip. First the events numbered but not yet known to be in Redis (the relay died
-- between XADD and relay_mark_published; `skip` leaves out a batch whose mark is under way), in
-- tseq order so that whatever LIMIT leaves out is a tail and the mark never passes an event not
-- sent. Then the oldest events not numbered yet: locked, given the next numbers of their tenant's
-- stream (tenant_streams is bumped in the same statement, so tseq stays contiguous per tenant and
-- its row lock serialises concurrent relays). Each event comes rendered as the JSON clients get
-- (by runlane_event_json, as every read of history renders it; Postgres renders it faster).
-- The numbered ones are read tenant by tenant from run_events_tenant_tseq_idx: a join of the
-- two tables would have the planner scan every event ever written.
WITH pending AS (
    SELECT e.* FROM tenant_streams ts CROSS JOIN LATERAL (
        SELECT e.id, e.run_id, e.seq, e.type, e.tenant, e.queue, e.tseq, e.at,
               runlane_event_json(e) AS event
        FROM run_events e
        WHERE e.tenant = ts.tenant AND e.tseq > ts.published_tseq AND e.tseq <= ts.last_tseq
          AND e.id <> ALL(%(skip)s::bigint[])
        ORDER BY e.tseq
        LIMIT %(limit)s
    ) e
    WHERE ts.last_tseq > ts.published_tseq
    ORDER BY e.tenant, e.tseq
    LIMIT %(limit)s
), batch AS (
    SELECT id, tenant FROM run_events
    WHERE tseq IS NULL
    ORDER BY id
    LIMIT %(limit)s - (SELECT count(*) FROM pending)
    FOR UPDATE
), fresh AS (
    SELECT id, tenant, row_number() OVER (PARTITION BY tenant ORDER BY id) AS n FROM batch
), counts AS (
    SELECT tenant, count(*) AS total FROM fresh GROUP BY tenant
), bumped AS (
    -- tenants in order: relay_mark_published, which may run at the same time on the relay's
    -- other connection, locks the same rows in the same order, so the two never deadlock
    INSERT INTO tenant_streams AS ts (tenant, last_tseq)
    SELECT tenant, total FROM counts ORDER BY tenant
    ON CONFLICT (tenant) DO UPDATE SET last_tseq = ts.last_tseq + EXCLUDED.last_tseq
    RETURNING tenant, last_tseq
), numbered AS (
    UPDATE run_events e SET tseq = b.last_tseq - c.total + f.n
    FROM fresh f JOIN counts c USING (tenant) JOIN bumped b USING (tenant)
    WHERE e.id = f.id
    RETURNING e.id, e.run_id, e.seq, e.type, e.tenant, e.queue, e.tseq, e.at,
              runlane_event_json(e) AS event
)
SELECT * FROM numbered
UNION ALL
SELECT * FROM pending
ORDER BY tenant, tseq;

-- name: relay_mark_published
-- Every event of each tenant up to its tseq given here is in Redis (the batch's highest). The
-- rows are locked in tenant order first, as relay_take_batch bumps them.
WITH locked AS (
    SELECT tenant FROM tenant_streams WHERE tenant = ANY(%(tenants)s::text[])
    ORDER BY tenant
    FOR UPDATE
)
UPDATE tenant_streams ts SET published_tseq = GREATEST(ts.published_tseq, m.tseq)
FROM unnest(%(tenants)s::text[], %(tseqs)s::bigint[]) AS m(tenant, tseq)
JOIN locked l USING (tenant)
WHERE ts.tenant = m.tenant;

-- name: relay_backlog
-- How many events are not yet known to be in Redis: all of them, or those of one run.
SELECT count(*) AS n FROM run_events e
LEFT JOIN tenant_streams ts ON ts.tenant = e.tenant
WHERE (e.tseq IS NULL OR e.tseq > ts.published_tseq)
  AND (%(run_id)s::uuid IS NULL OR e.run_id = %(run_id)s::uuid);

-- name: relay_recent_events
-- After Redis lost its data: the numbered events of runs that are live or ended recently, in
-- pages by id, to put back into their streams (those not sent yet go too: sending is idempotent).
SELECT e.id, e.run_id, e.seq, e.type, e.tenant, e.queue, e.tseq, e.at,
       runlane_event_json(e) AS event
FROM run_events e JOIN runs r ON r.id = e.run_id
WHERE e.tseq IS NOT NULL AND e.id > %(after_id)s
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

-- name: relay_traceparents
-- Tracing on: the traces of the runs a published batch holds events of, for the span's links.
SELECT id, traceparent FROM runs
WHERE id = ANY(%(ids)s::uuid[]) AND traceparent IS NOT NULL;
