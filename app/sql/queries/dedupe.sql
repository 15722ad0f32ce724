-- Deduplication (contract §5.3; app.dedupe). The dedupe_keys row of (tenant, key) is the lock:
-- a second submit of the key waits on the first's transaction, then sees its run.

-- name: take_dedupe_key
-- Point the key at a new run, unless the run it names still holds it: while its expires_at has
-- not passed (ttl_s), until it starts (debounce), until it ends (neither). No row back: held.
-- The run is looked up in this statement's snapshot, which may predate a concurrent submit's
-- commit of the run whose key row we just waited on: a run not seen counts as holding the key.
INSERT INTO dedupe_keys AS d (tenant, key, run_id, expires_at, debounce)
VALUES (%(tenant)s, %(key)s, %(run_id)s, now() + make_interval(secs => %(ttl_s)s), %(debounce)s)
ON CONFLICT (tenant, key) DO UPDATE
SET run_id = EXCLUDED.run_id, expires_at = EXCLUDED.expires_at, debounce = EXCLUDED.debounce
WHERE CASE WHEN d.expires_at IS NOT NULL THEN d.expires_at <= now()
           ELSE EXISTS (
               SELECT 1 FROM runs r WHERE r.id = d.run_id
                 AND r.status <> ALL(CASE WHEN d.debounce THEN ARRAY['delayed']
                                          ELSE ARRAY['queued', 'delayed', 'running'] END))
      END
RETURNING run_id;

-- name: dedupe_holder
-- The run holding a key (locked, so a debounce replaces it before anyone else looks).
SELECT r.*, d.debounce,
       runlane_queue_paused(r.tenant, r.queue) AS queue_paused
FROM dedupe_keys d JOIN runs r ON r.id = d.run_id
WHERE d.tenant = %(tenant)s AND d.key = %(key)s
FOR UPDATE OF d;

-- name: debounce_run (outbox)
-- A debounced submit before the run started: the last submit's input and metadata, the delay
-- restarted.
UPDATE runs SET input = %(input)s, metadata = %(metadata)s, last_seq = last_seq + 1,
                scheduled_for = %(until)s
WHERE id = %(id)s AND status = 'delayed'
RETURNING *, 'run.debounced' AS event_type,
          jsonb_build_object('until', to_char(scheduled_for AT TIME ZONE 'UTC',
                                              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) AS event_data;
