-- Webhooks: endpoints (the API), the fan-out of numbered events into deliveries, and the claims
-- and outcomes of delivery attempts (the webhooks process).

-- name: webhook_create
-- The tenant's cursor starts at its last tseq if it has none: no endpoint of it gets events
-- numbered before it existed (after_tseq), and the fan-out need not read them.
WITH place AS (
    SELECT COALESCE((SELECT last_tseq FROM tenant_streams WHERE tenant = %(tenant)s), 0) AS tseq
), cursor_row AS (
    INSERT INTO webhook_cursors (tenant, fanned_tseq)
    SELECT %(tenant)s, tseq FROM place
    ON CONFLICT (tenant) DO NOTHING
)
INSERT INTO webhook_endpoints (tenant, url, events, queue, secret, after_tseq)
SELECT %(tenant)s, %(url)s, %(events)s, %(queue)s, %(secret)s, tseq FROM place
RETURNING *;

-- name: webhook_list
SELECT * FROM webhook_endpoints WHERE tenant = %(tenant)s ORDER BY created_at, id;

-- name: webhook_get
SELECT * FROM webhook_endpoints WHERE tenant = %(tenant)s AND id = %(id)s;

-- name: webhook_delete
-- Its deliveries and their attempts go with it (ON DELETE CASCADE).
DELETE FROM webhook_endpoints WHERE tenant = %(tenant)s AND id = %(id)s RETURNING id;

-- name: webhook_ping
INSERT INTO webhook_deliveries (endpoint_id, event_type, payload, event_at)
SELECT id, %(type)s, %(payload)s, clock_timestamp() FROM webhook_endpoints
WHERE tenant = %(tenant)s AND id = %(id)s
RETURNING id;

-- name: webhook_attempts
-- An endpoint's attempts, newest first, with what each delivered.
SELECT a.id, a.delivery_id, d.event_type, d.run_id, d.seq, a.attempt, a.status_code, a.error,
       a.duration_ms, a.at, a.next_attempt_at, d.status AS delivery_status
FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE a.endpoint_id = %(id)s
ORDER BY a.id DESC
LIMIT %(limit)s;

-- name: webhooks_fan_out
-- One batch: for tenants whose relay numbered events past their cursor, one delivery per event
-- and matching endpoint, and the cursor moved to the last event read, in one statement (one
-- snapshot: the tseqs up to last_tseq it reads are all committed, the relay numbers a batch in
-- one statement). Cursors are locked, SKIP LOCKED: copies of the process share the tenants,
-- and the unique key makes a repeated batch insert nothing.
WITH due AS (
    SELECT c.tenant, c.fanned_tseq, ts.last_tseq
    FROM webhook_cursors c JOIN tenant_streams ts USING (tenant)
    WHERE ts.last_tseq > c.fanned_tseq
    ORDER BY c.tenant
    LIMIT %(tenants)s
    FOR UPDATE OF c SKIP LOCKED
), events AS (
    SELECT e.run_id, e.seq, e.type, e.queue, e.tenant, e.at, e.tseq
    FROM due CROSS JOIN LATERAL (
        SELECT * FROM run_events e
        WHERE e.tenant = due.tenant AND e.tseq > due.fanned_tseq AND e.tseq <= due.last_tseq
        ORDER BY e.tseq
        LIMIT %(limit)s
    ) e
), inserted AS (
    INSERT INTO webhook_deliveries (endpoint_id, run_id, seq, event_type, event_at)
    SELECT w.id, e.run_id, e.seq, e.type, e.at
    FROM events e JOIN webhook_endpoints w ON w.tenant = e.tenant
    WHERE e.tseq > w.after_tseq
      AND (w.events = '{*}' OR e.type = ANY(w.events))
      AND (w.queue IS NULL OR w.queue = e.queue)
    ON CONFLICT DO NOTHING
    RETURNING 1
), moved AS (
    UPDATE webhook_cursors c SET fanned_tseq = GREATEST(c.fanned_tseq, m.top)
    FROM (SELECT tenant, max(tseq) AS top FROM events GROUP BY tenant) m
    WHERE c.tenant = m.tenant
    RETURNING 1
)
SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM inserted) AS deliveries,
       (SELECT count(*) FROM moved) AS tenants;

-- name: webhooks_claim
-- Due deliveries, at most `free` in all and, per endpoint, its cap less what this process has in
-- flight for it: a slow endpoint holds only its own slots. Claimed by moving next_attempt_at a
-- lease ahead (a process that dies leaves them due again after it); SKIP LOCKED shares them
-- between copies. Each comes with its endpoint and its body, the event as the tails send it.
WITH slots AS (
    SELECT w.id, %(per_endpoint)s - COALESCE(b.busy, 0) AS free
    FROM webhook_endpoints w
    LEFT JOIN unnest(%(busy_ids)s::uuid[], %(busy_counts)s::int[]) AS b(id, busy) USING (id)
    WHERE %(per_endpoint)s > COALESCE(b.busy, 0)
), picked AS (
    -- the longest due first, whichever endpoint: none waits behind another's backlog
    SELECT d.id FROM slots s CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
        WHERE d.endpoint_id = s.id AND d.status = 'pending' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT s.free
        FOR UPDATE SKIP LOCKED
    ) d
    ORDER BY d.next_attempt_at
    LIMIT %(free)s
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    next_attempt_at = clock_timestamp() + make_interval(secs => %(lease_s)s)
FROM picked p, webhook_endpoints w
WHERE d.id = p.id AND w.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, w.url, w.secret, d.attempts, d.event_type, d.event_at,
          d.created_at, d.run_id,
          (SELECT r.traceparent FROM runs r WHERE r.id = d.run_id) AS traceparent,
          COALESCE(d.payload, (SELECT runlane_event_json(e) FROM run_events e
                               WHERE e.run_id = d.run_id AND e.seq = d.seq)) AS body;

-- name: webhooks_record_attempt
-- An attempt's outcome: the delivery succeeded, failed for good, or is due again at
-- next_attempt_at; logged with it. Only by the claim that made it (`attempt`): a claim whose
-- lease ran out and was taken again records nothing, its successor does.
WITH delivery AS (
    UPDATE webhook_deliveries
    SET status = %(status)s, next_attempt_at = COALESCE(%(next_attempt_at)s, next_attempt_at)
    WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'
    RETURNING id, endpoint_id
)
INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, status_code, error, duration_ms,
                              next_attempt_at)
SELECT id, endpoint_id, %(attempt)s, %(status_code)s, %(error)s, %(duration_ms)s,
       %(next_attempt_at)s
FROM delivery;
