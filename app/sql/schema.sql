-- The whole current schema; tests prove the migrations produce exactly this.

CREATE TABLE runs (
    id                  uuid PRIMARY KEY,
    tenant              text NOT NULL,
    task                text NOT NULL,
    queue               text NOT NULL,
    status              text NOT NULL,
    input               jsonb NOT NULL DEFAULT 'null',
    result              jsonb,
    error               jsonb,
    attempt             integer NOT NULL DEFAULT 0,
    -- attempts started before the current budget of max_attempts (a manual retry starts one)
    attempt_base        integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 1,
    backoff             jsonb,
    timeout_s           double precision,
    priority            smallint NOT NULL DEFAULT 5,
    progress            jsonb,
    metadata            jsonb NOT NULL DEFAULT '{}',
    idempotency_key     text,
    request_fingerprint text,
    dedupe_key          text,
    limit_key           text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    scheduled_for       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at          timestamptz,
    finished_at         timestamptz,
    last_seq            integer NOT NULL DEFAULT 0,
    -- execution bookkeeping, never shown to clients
    dispatched_at       timestamptz,
    worker              text,
    lease_expires_at    timestamptz,
    stalls              integer NOT NULL DEFAULT 0,
    cancel_requested_at timestamptz,
    cancel_reason       text,
    -- a queue limit holds it back: the waiting reason, or 'released' (on its way to a worker)
    held                text,
    held_until          timestamptz,  -- a rate limit's next slot
    -- a flow's (migration 0010): no foreign key to the parent, a run's row is written on the
    -- submit's hot path, and retention deletes a flow whole (its root last)
    parent_id           uuid,
    root_id             uuid,     -- the flow's root (itself for the root); null: no flow
    child_index         integer,  -- its place among its parent's children, from 0
    on_child_failure    text CHECK (on_child_failure IN ('fail', 'ignore')),
    children_total      integer NOT NULL DEFAULT 0,
    children_pending    integer NOT NULL DEFAULT 0,  -- its children not terminal
    cascade_pending     boolean NOT NULL DEFAULT false,
    -- the first dispatch to a queue (migration 0011; dispatched_at is the latest): timings
    first_dispatched_at timestamptz,
    -- the W3C traceparent of the submit (migration 0014): its attempts' spans join that trace
    traceparent         text,
    CONSTRAINT runs_status_check CHECK (
        status IN ('waiting', 'queued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT runs_priority_check CHECK (priority BETWEEN 1 AND 10),
    CONSTRAINT runs_tenant_idempotency_key_key UNIQUE (tenant, idempotency_key)
);

CREATE INDEX runs_tenant_created_idx ON runs (tenant, created_at DESC, id DESC);
-- GET /v1/runs newest first by queue and status (merged), by task; the queue counts from the
-- first one alone (migration 0012)
CREATE INDEX runs_tenant_queue_status_idx ON runs (tenant, queue, status, created_at DESC, id DESC);
CREATE INDEX runs_tenant_task_idx ON runs (tenant, task, created_at DESC, id DESC);
CREATE INDEX runs_tenant_dedupe_key_idx ON runs (tenant, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX runs_delayed_due_idx ON runs (scheduled_for) WHERE status = 'delayed';
CREATE INDEX runs_queued_dispatch_idx ON runs (dispatched_at) WHERE status = 'queued';
CREATE INDEX runs_running_lease_idx ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_finished_idx ON runs (finished_at) WHERE finished_at IS NOT NULL;
-- the queues' recent throughput, from the index alone (migration 0012)
CREATE INDEX runs_tenant_finished_idx ON runs (tenant, finished_at) INCLUDE (queue, status)
    WHERE finished_at IS NOT NULL;

-- Queue counts above the cap are the planner's estimates (migration 0012): these statistics
-- make them per tenant, queue and status rather than the product of three frequencies.
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

-- The outbox: one row per event, written in the transaction of the state change it reports.
-- Deduplication (contract §5.3): a tenant's dedupe key names at most one live run; how long it
-- holds depends on the mode it was taken with: ttl_s (expires_at), debounce (until its run
-- starts) or neither (until its run ends).
CREATE TABLE dedupe_keys (
    tenant     text NOT NULL,
    key        text NOT NULL,
    -- deferred: the key is taken before the run it names is inserted, in one transaction
    run_id     uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    expires_at timestamptz,
    debounce   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX dedupe_keys_run_idx ON dedupe_keys (run_id);

CREATE TABLE run_events (
    id        bigserial UNIQUE,
    run_id    uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq       integer NOT NULL,
    type      text NOT NULL,
    data      jsonb NOT NULL DEFAULT '{}',
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant    text NOT NULL,
    queue     text NOT NULL,
    -- position in the tenant-wide stream, given by the relay when it first publishes the row;
    -- the row is never updated after that (tenant_streams.published_tseq says what is in Redis)
    tseq      bigint,
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX run_events_unnumbered_idx ON run_events (id) WHERE tseq IS NULL;
CREATE UNIQUE INDEX run_events_tenant_tseq_idx ON run_events (tenant, tseq);

-- The one rendering of an event as the JSON clients get (CONTRACT §2), used by the relay for the
-- streams and by every read of history, so that history and live send the same bytes. A plain
-- SQL expression, so the planner inlines it: no function call per row.
CREATE FUNCTION runlane_event_json(e run_events) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN json_build_object(
        'run_id', e.run_id, 'seq', e.seq, 'type', e.type,
        'at', to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', e.data)::text;

-- No NOTIFY trigger here on purpose: Postgres serialises the commits of notifying transactions
-- (a global lock at commit), which capped submits at a third of the rate. The relay polls instead.

-- Per tenant: the last tseq given, and the last up to which every event is in Redis (the relay's
-- place; events numbered above it are published again after a crash).
CREATE TABLE tenant_streams (
    tenant         text PRIMARY KEY,
    last_tseq      bigint NOT NULL DEFAULT 0,
    published_tseq bigint NOT NULL DEFAULT 0
);

CREATE TABLE queue_pauses (
    tenant    text NOT NULL,
    queue     text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, queue)
);

-- Whether a tenant's queue is paused, as the queries that show runs select it with each row (for
-- the run's `waiting`). The claim and the dispatch sweep keep the same test inline: a function
-- with a subquery is not inlined, and they run it for every run they touch. PL/pgSQL, not SQL:
-- a SQL function that is not inlined is planned again at every call.
CREATE FUNCTION runlane_queue_paused(of_tenant text, of_queue text) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM queue_pauses p WHERE p.tenant = of_tenant AND p.queue = of_queue);
END $$;

CREATE TABLE schedules (
    tenant       text NOT NULL,
    name         text NOT NULL,
    task         text NOT NULL,
    input        jsonb NOT NULL DEFAULT 'null',
    queue        text,
    cron         text,
    every_s      double precision,
    next_fire_at timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, name),
    CONSTRAINT schedules_one_trigger_check CHECK ((cron IS NULL) <> (every_s IS NULL))
);

CREATE INDEX schedules_due_idx ON schedules (next_fire_at);

-- Queue limits (contract §5.1), enforced in Postgres at the claim: a tenant's queue may cap how
-- many of its attempts run at once and how many start per window, in all and per limit_key.
--
-- A run a limit holds back stays queued and leaves Redis: `held` says why (the waiting reason),
-- so nothing polls for it. A slot freeing (an attempt ends, a stall is recovered, a limit is
-- raised) marks the next held runs 'released' in that same transaction and the caller
-- enqueues them; a window reopening is the scheduler's, at queue_limits.release_at. Runs are
-- released and admitted in priority then FIFO order: a popped run with an admissible held run
-- ahead of it gives its claim to that run and is held itself. A released run counts as taking
-- a slot until it starts, so a newcomer cannot take the slot it was released into.
--
-- Admissions to one queue serialise on its queue_limits row (FOR UPDATE, in (tenant, queue)
-- order, so workers never deadlock); each check reads a fresh snapshot after taking that lock.
CREATE TABLE queue_limits (
    tenant            text NOT NULL,
    queue             text NOT NULL,
    concurrency       integer CHECK (concurrency >= 1),
    rate_limit        integer CHECK (rate_limit >= 1),
    rate_period_s     double precision CHECK (rate_period_s > 0),
    key_concurrency   integer CHECK (key_concurrency >= 1),
    key_rate_limit    integer CHECK (key_rate_limit >= 1),
    key_rate_period_s double precision CHECK (key_rate_period_s > 0),
    -- when a run held by a rate limit may start: the scheduler releases the queue then
    release_at        timestamptz,
    PRIMARY KEY (tenant, queue),
    CHECK ((rate_limit IS NULL) = (rate_period_s IS NULL)),
    CHECK ((key_rate_limit IS NULL) = (key_rate_period_s IS NULL))
);
CREATE INDEX queue_limits_release_idx ON queue_limits (release_at) WHERE release_at IS NOT NULL;

-- The starts a rate limit counts, numbered per queue (key '') and per limit key, a row per
-- batch of starts made at one moment: a window is full when the start `limit` places back is
-- younger than the period, which is one index lookup however high the limit. The scheduler
-- deletes starts older than every window.
CREATE TABLE limit_starts (
    tenant text NOT NULL,
    queue  text NOT NULL,
    key    text NOT NULL,
    n      bigint NOT NULL,  -- the number of the row's last start
    at     timestamptz NOT NULL,
    count  integer NOT NULL DEFAULT 1 CHECK (count >= 1),  -- starts made at `at`, up to n
    PRIMARY KEY (tenant, queue, key, n)
);

CREATE INDEX runs_running_key_idx ON runs (tenant, queue, limit_key)
    WHERE status = 'running' AND limit_key IS NOT NULL;
CREATE INDEX runs_held_idx ON runs (tenant, queue, priority, scheduled_for, id)
    WHERE status = 'queued' AND held IS NOT NULL AND held <> 'released';
CREATE INDEX runs_held_key_idx ON runs (tenant, queue, limit_key, priority, scheduled_for, id)
    WHERE status = 'queued' AND held IS NOT NULL AND held <> 'released' AND limit_key IS NOT NULL;
CREATE INDEX runs_released_idx ON runs (tenant, queue, limit_key)
    WHERE status = 'queued' AND held = 'released';

-- Lock the limits of the queues of these runs, in one order. PERFORM reads every row (a
-- LIMIT 0 around the locking query would never run it, and so lock nothing).
CREATE FUNCTION runlane_lock_limits(ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM queue_limits l
    WHERE (l.tenant, l.queue) IN (SELECT r.tenant, r.queue FROM runs r WHERE r.id = ANY(ids))
    ORDER BY l.tenant, l.queue
    FOR UPDATE OF l;
END $$;

-- NULL when one more start fits in the window of `period_s`, beside `pending` starts to come;
-- else when it will (plus a millisecond: the start's event is written a moment after this).
CREATE FUNCTION runlane_rate_slot(of_tenant text, of_queue text, of_key text,
                                             lim integer, period_s double precision,
                                             pending integer, at timestamptz)
    RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    latest bigint;
    target bigint;  -- the number of the start `lim` places back, counting those to come
    edge timestamptz;
    first bigint;
    span interval := make_interval(secs => period_s) + interval '1 millisecond';
BEGIN
    IF pending >= lim THEN
        RETURN at + span;
    END IF;
    SELECT s.n INTO latest FROM limit_starts s
    WHERE s.tenant = of_tenant AND s.queue = of_queue AND s.key = of_key
    ORDER BY s.n DESC LIMIT 1;
    target := latest - lim + 1 + pending;
    IF target IS NULL OR target < 1 THEN
        RETURN NULL;
    END IF;
    SELECT s.at, s.n - s.count + 1 INTO edge, first FROM limit_starts s
    WHERE s.tenant = of_tenant AND s.queue = of_queue AND s.key = of_key AND s.n >= target
    ORDER BY s.n LIMIT 1;
    -- a row that starts after the target: the target's row was pruned, older than any window
    IF edge IS NOT NULL AND first <= target AND edge + span > at THEN
        RETURN edge + span;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION runlane_record_start(of_tenant text, of_queue text, of_key text,
                                     started timestamptz) RETURNS void LANGUAGE sql AS $$
    INSERT INTO limit_starts (tenant, queue, key, n, at)
    SELECT of_tenant, of_queue, of_key, COALESCE(max(s.n), 0) + 1, started FROM limit_starts s
    WHERE s.tenant = of_tenant AND s.queue = of_queue AND s.key = of_key;
$$;

-- Admission counts each queue's and each limit key's slots once per call, then keeps them in a
-- jsonb map: group -> [taken, pending]. taken = running + released (+ admitted in this call);
-- pending = released runs whose starts a rate limit has yet to count. A group is
-- "tenant<US>queue", a key's "tenant<US>queue<US>key" (US: the unit separator, E'\x1f').
CREATE FUNCTION runlane_count_slots(counts jsonb, lim queue_limits, of_key text) RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    g text := lim.tenant || E'\x1f' || lim.queue;
    running integer;
    released integer;
BEGIN
    IF NOT counts ? g THEN
        SELECT count(*) INTO running FROM (
            SELECT 1 FROM runs r
            WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.status = 'running'
            LIMIT COALESCE(lim.concurrency, 0)) s;
        SELECT count(*) INTO released FROM runs r
        WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.status = 'queued'
          AND r.held = 'released';
        counts := counts || jsonb_build_object(g, jsonb_build_array(running + released, released));
    END IF;
    IF of_key IS NOT NULL AND NOT counts ? (g || E'\x1f' || of_key) THEN
        SELECT count(*) INTO running FROM (
            SELECT 1 FROM runs r
            WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.limit_key = of_key
              AND r.status = 'running' AND r.limit_key IS NOT NULL
            LIMIT COALESCE(lim.key_concurrency, 0)) s;
        SELECT count(*) INTO released FROM runs r
        WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.limit_key = of_key
          AND r.status = 'queued' AND r.held = 'released';
        counts := counts || jsonb_build_object(g || E'\x1f' || of_key,
                                               jsonb_build_array(running + released, released));
    END IF;
    RETURN counts;
END $$;

-- Add to a queue's slots (and its key's): one more taken, one fewer pending, ...
CREATE FUNCTION runlane_add_slots(counts jsonb, lim queue_limits, of_key text, taken integer,
                                  pending integer) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    g text := lim.tenant || E'\x1f' || lim.queue;
BEGIN
    counts := jsonb_set(counts, ARRAY[g], jsonb_build_array(
        (counts -> g ->> 0)::integer + taken, (counts -> g ->> 1)::integer + pending));
    IF of_key IS NOT NULL THEN
        g := g || E'\x1f' || of_key;
        counts := jsonb_set(counts, ARRAY[g], jsonb_build_array(
            (counts -> g ->> 0)::integer + taken, (counts -> g ->> 1)::integer + pending));
    END IF;
    RETURN counts;
END $$;

-- Why a run of this queue with limit key of_key may not start now (reason NULL: it may).
-- `released`: the run is itself a released one, already counted among the slots.
CREATE FUNCTION runlane_verdict(counts jsonb, lim queue_limits, of_key text, released boolean,
                                at timestamptz, OUT reason text, OUT until timestamptz)
    LANGUAGE plpgsql AS $$
DECLARE
    g text := lim.tenant || E'\x1f' || lim.queue;
    self integer := CASE WHEN released THEN 1 ELSE 0 END;
    q jsonb := counts -> g;
    k jsonb := CASE WHEN of_key IS NOT NULL THEN counts -> (g || E'\x1f' || of_key) END;
BEGIN
    IF lim.concurrency IS NOT NULL AND (q ->> 0)::integer - self >= lim.concurrency THEN
        reason := 'concurrency_limited';
        RETURN;
    END IF;
    IF k IS NOT NULL AND lim.key_concurrency IS NOT NULL
       AND (k ->> 0)::integer - self >= lim.key_concurrency THEN
        reason := 'key_concurrency_limited';
        RETURN;
    END IF;
    IF lim.rate_limit IS NOT NULL THEN
        until := runlane_rate_slot(lim.tenant, lim.queue, '', lim.rate_limit, lim.rate_period_s,
                                   (q ->> 1)::integer - self, at);
        IF until IS NOT NULL THEN
            reason := 'rate_limited';
            RETURN;
        END IF;
    END IF;
    IF k IS NOT NULL AND lim.key_rate_limit IS NOT NULL THEN
        until := runlane_rate_slot(lim.tenant, lim.queue, of_key, lim.key_rate_limit,
                                   lim.key_rate_period_s, (k ->> 1)::integer - self, at);
        IF until IS NOT NULL THEN
            reason := 'key_rate_limited';
        END IF;
    END IF;
END $$;

-- A run admitted: it takes a slot (a released one had its slot already) and a rate counts it.
CREATE FUNCTION runlane_admitted(counts jsonb, lim queue_limits, of_key text, released boolean,
                                 at timestamptz) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF lim.rate_limit IS NOT NULL THEN
        PERFORM runlane_record_start(lim.tenant, lim.queue, '', at);
    END IF;
    IF of_key IS NOT NULL AND lim.key_rate_limit IS NOT NULL THEN
        PERFORM runlane_record_start(lim.tenant, lim.queue, of_key, at);
    END IF;
    IF released THEN
        RETURN runlane_add_slots(counts, lim, of_key, 0, -1);
    END IF;
    RETURN runlane_add_slots(counts, lim, of_key, 1, 0);
END $$;

-- Whether every run of `ids` in this queue may start now, far from any limit: no run of the
-- queue is held (order would matter) and the whole batch fits every limit. If so, their starts
-- are recorded at once, a row per queue and per limit key: the usual case costs a few index
-- lookups per queue and batch, not per run.
CREATE FUNCTION runlane_admit_all(lim queue_limits, ids uuid[]) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := clock_timestamp();
    batch integer;
    keys text[];
    sizes integer[];
    running integer;
    cap integer := GREATEST(COALESCE(lim.concurrency, 0), COALESCE(lim.key_concurrency, 0));
BEGIN
    IF EXISTS (SELECT 1 FROM runs r
               WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.status = 'queued'
                 AND r.held IS NOT NULL AND r.held <> 'released')
       OR EXISTS (SELECT 1 FROM runs r
                  WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.status = 'queued'
                    AND r.held = 'released') THEN
        RETURN false;
    END IF;
    SELECT COALESCE(sum(g.n), 0), array_agg(g.key) FILTER (WHERE g.key IS NOT NULL),
           array_agg(g.n) FILTER (WHERE g.key IS NOT NULL)
    INTO batch, keys, sizes
    FROM (SELECT r.limit_key AS key, count(*)::integer AS n
          FROM unnest(ids) AS w(id) JOIN runs r ON r.id = w.id
          WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.status = 'queued'
          GROUP BY r.limit_key) g;
    IF batch = 0 THEN
        RETURN true;  -- none of them will start (the claim's guards refuse them)
    END IF;
    IF cap > 0 THEN
        SELECT count(*) INTO running FROM (
            SELECT 1 FROM runs r
            WHERE r.tenant = lim.tenant AND r.queue = lim.queue AND r.status = 'running'
            LIMIT cap) s;
        -- a key has at most the queue's running attempts and the whole batch
        IF running + batch > LEAST(lim.concurrency, lim.key_concurrency) THEN
            RETURN false;
        END IF;
    END IF;
    IF lim.rate_limit IS NOT NULL AND runlane_rate_slot(lim.tenant, lim.queue, '', lim.rate_limit,
                                                        lim.rate_period_s, batch - 1, at)
                                      IS NOT NULL THEN
        RETURN false;
    END IF;
    IF lim.key_rate_limit IS NOT NULL THEN
        FOR i IN 1 .. COALESCE(array_length(keys, 1), 0) LOOP
            IF runlane_rate_slot(lim.tenant, lim.queue, keys[i], lim.key_rate_limit,
                                 lim.key_rate_period_s, sizes[i] - 1, at) IS NOT NULL THEN
                RETURN false;
            END IF;
        END LOOP;
    END IF;
    IF lim.rate_limit IS NOT NULL THEN
        INSERT INTO limit_starts (tenant, queue, key, n, count, at)
        SELECT lim.tenant, lim.queue, '', COALESCE(b.base, 0) + batch, batch, at
        FROM (SELECT max(s.n) AS base FROM limit_starts s
              WHERE s.tenant = lim.tenant AND s.queue = lim.queue AND s.key = '') b;
    END IF;
    IF lim.key_rate_limit IS NOT NULL AND keys IS NOT NULL THEN
        INSERT INTO limit_starts (tenant, queue, key, n, count, at)
        SELECT lim.tenant, lim.queue, k.key, COALESCE(b.base, 0) + k.n, k.n, at
        FROM unnest(keys, sizes) AS k(key, n)
        CROSS JOIN LATERAL (SELECT max(s.n) AS base FROM limit_starts s
                            WHERE s.tenant = lim.tenant AND s.queue = lim.queue
                              AND s.key = k.key) b;
    END IF;
    RETURN true;
END $$;

-- The claim's admission: of the runs a worker popped (in order), those that may start, each
-- with its place in the list. Runs of queues without limits (and runs the claim will refuse
-- anyway: not queued, paused) pass through, and so do those of a queue whose limits the whole
-- batch fits (runlane_admit_all). Otherwise run by run: a run a limit holds back is marked
-- held; a run with an admissible held run ahead of it gives that run its place, and is held.
-- ROWS: the claim joins this to runs by primary key; the default estimate (1000) would have
-- the planner scan runs instead.
CREATE FUNCTION runlane_admit(ids uuid[]) RETURNS TABLE (run_id uuid, place bigint)
    LANGUAGE plpgsql ROWS 16 AS $$
DECLARE
    c record;
    h record;
    lim queue_limits;
    v record;
    pick uuid;
    counts jsonb := '{}';
    one_by_one text[] := '{}';  -- the queues whose runs are admitted run by run
    at timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM queue_limits) THEN
        RETURN QUERY SELECT w.id, w.i FROM unnest(ids) WITH ORDINALITY AS w(id, i);
        RETURN;
    END IF;
    -- each row is locked as the loop reaches it, in (tenant, queue) order, and what is read of
    -- the queue after that is read afresh
    FOR lim IN
        SELECT l.* FROM queue_limits l
        WHERE (l.tenant, l.queue) IN (SELECT r.tenant, r.queue FROM runs r WHERE r.id = ANY(ids))
        ORDER BY l.tenant, l.queue
        FOR UPDATE OF l
    LOOP
        IF NOT runlane_queue_paused(lim.tenant, lim.queue) AND NOT runlane_admit_all(lim, ids) THEN
            one_by_one := one_by_one || (lim.tenant || E'\x1f' || lim.queue);
        END IF;
    END LOOP;
    IF cardinality(one_by_one) = 0 THEN  -- the usual case: every batch fits its limits
        RETURN QUERY SELECT w.id, w.i FROM unnest(ids) WITH ORDINALITY AS w(id, i);
        RETURN;
    END IF;
    FOR c IN
        SELECT w.id, w.i, r.tenant, r.queue, r.limit_key, r.status, r.priority, r.scheduled_for,
               r.held IS NOT DISTINCT FROM 'released' AS released
        FROM unnest(ids) WITH ORDINALITY AS w(id, i) LEFT JOIN runs r ON r.id = w.id
        ORDER BY w.i
    LOOP
        IF c.status IS DISTINCT FROM 'queued'
           OR NOT (c.tenant || E'\x1f' || c.queue) = ANY(one_by_one) THEN
            run_id := c.id;
            place := c.i;
            RETURN NEXT;  -- the claim's own guards decide
            CONTINUE;
        END IF;
        SELECT * INTO lim FROM queue_limits l WHERE l.tenant = c.tenant AND l.queue = c.queue;
        at := clock_timestamp();
        counts := runlane_count_slots(counts, lim, c.limit_key);
        pick := NULL;
        FOR h IN
            SELECT r.id, r.limit_key FROM runs r
            WHERE r.tenant = c.tenant AND r.queue = c.queue AND r.status = 'queued'
              AND r.held IS NOT NULL AND r.held <> 'released'
              AND (r.priority, r.scheduled_for, r.id) < (c.priority, c.scheduled_for, c.id)
            ORDER BY r.priority, r.scheduled_for, r.id
            LIMIT 20
        LOOP
            counts := runlane_count_slots(counts, lim, h.limit_key);
            v := runlane_verdict(counts, lim, h.limit_key, false, at);
            IF v.reason IS NULL THEN
                pick := h.id;
                counts := runlane_admitted(counts, lim, h.limit_key, false, at);
                EXIT;
            END IF;
            EXIT WHEN v.reason IN ('concurrency_limited', 'rate_limited');  -- the queue is full
        END LOOP;
        v := runlane_verdict(counts, lim, c.limit_key, c.released, at);
        IF pick IS NULL AND v.reason IS NULL THEN
            counts := runlane_admitted(counts, lim, c.limit_key, c.released, at);
            run_id := c.id;
            place := c.i;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- held: why it waits; 'queued' when it only gave its place to a run ahead of it
        UPDATE runs r SET held = COALESCE(v.reason, 'queued'), held_until = v.until
        WHERE r.id = c.id;
        IF c.released THEN
            counts := runlane_add_slots(counts, lim, c.limit_key, -1, -1);
        END IF;
        IF v.until IS NOT NULL OR v.reason IS NULL THEN  -- a slot then (or free now): release it
            UPDATE queue_limits l SET release_at = LEAST(l.release_at, COALESCE(v.until, at))
            WHERE l.tenant = c.tenant AND l.queue = c.queue;
        END IF;
        IF pick IS NOT NULL THEN
            run_id := pick;
            place := c.i;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

-- A slot of a tenant's queue may have freed: the held runs that may start now are marked
-- 'released', in priority then FIFO order, and returned for the caller to enqueue. `keys`: the
-- limit keys whose slots freed, whose own held runs are looked at beside the queue's first.
CREATE FUNCTION runlane_release_group(of_tenant text, of_queue text, keys text[])
    RETURNS SETOF runs LANGUAGE plpgsql AS $$
DECLARE
    lim queue_limits;
    c record;
    v record;
    counts jsonb := '{}';
    at timestamptz := clock_timestamp();
    next_at timestamptz;
    freed runs;
BEGIN
    IF runlane_queue_paused(of_tenant, of_queue) THEN
        RETURN;  -- resuming dispatches every queued run of the queue
    END IF;
    SELECT * INTO lim FROM queue_limits l
    WHERE l.tenant = of_tenant AND l.queue = of_queue FOR UPDATE;
    IF NOT FOUND THEN  -- its limits were removed: every held run goes
        RETURN QUERY
            WITH gone AS (
                UPDATE runs r SET held = 'released', held_until = NULL, dispatched_at = now()
                WHERE r.id IN (SELECT h.id FROM runs h
                               WHERE h.tenant = of_tenant AND h.queue = of_queue
                                 AND h.status = 'queued' AND h.held IS NOT NULL
                                 AND h.held <> 'released'
                               ORDER BY h.priority, h.scheduled_for, h.id LIMIT 1000)
                RETURNING r.*
            )
            SELECT * FROM gone ORDER BY gone.priority, gone.scheduled_for, gone.id;
        RETURN;
    END IF;
    FOR c IN
        SELECT h.id, h.limit_key FROM (
            (SELECT r.id, r.limit_key, r.priority, r.scheduled_for FROM runs r
             WHERE r.tenant = of_tenant AND r.queue = of_queue AND r.status = 'queued'
               AND r.held IS NOT NULL AND r.held <> 'released'
             ORDER BY r.priority, r.scheduled_for, r.id LIMIT 100)
            UNION
            (SELECT r.id, r.limit_key, r.priority, r.scheduled_for
             FROM unnest(keys) AS k(key) CROSS JOIN LATERAL (
                 SELECT r.id, r.limit_key, r.priority, r.scheduled_for FROM runs r
                 WHERE r.tenant = of_tenant AND r.queue = of_queue AND r.limit_key = k.key
                   AND r.status = 'queued' AND r.held IS NOT NULL AND r.held <> 'released'
                   AND r.limit_key IS NOT NULL
                 ORDER BY r.priority, r.scheduled_for, r.id LIMIT 10) r)
        ) h ORDER BY h.priority, h.scheduled_for, h.id
    LOOP
        counts := runlane_count_slots(counts, lim, c.limit_key);
        v := runlane_verdict(counts, lim, c.limit_key, false, at);
        IF v.reason IS NULL THEN
            counts := runlane_add_slots(counts, lim, c.limit_key, 1, 1);
            UPDATE runs r SET held = 'released', held_until = NULL, dispatched_at = now()
            WHERE r.id = c.id RETURNING r.* INTO freed;
            RETURN NEXT freed;
        ELSE
            next_at := LEAST(next_at, v.until);
            EXIT WHEN v.reason IN ('concurrency_limited', 'rate_limited');  -- the queue is full
        END IF;
    END LOOP;
    UPDATE queue_limits l SET release_at = next_at
    WHERE l.tenant = of_tenant AND l.queue = of_queue AND l.release_at IS DISTINCT FROM next_at;
END $$;

-- After attempts ended (`freed`), in the transaction that ended them: release what their slots
-- let start. `claiming`: the runs the same transaction claims next, whose queues' limits are
-- locked here too, so that every lock a group commit takes is taken in one order.
CREATE FUNCTION runlane_release(freed uuid[], claiming uuid[]) RETURNS SETOF runs
    LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM queue_limits)
       AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.status = 'queued' AND r.held IS NOT NULL
                                              AND r.held <> 'released') THEN
        RETURN;
    END IF;
    PERFORM runlane_lock_limits(freed || claiming);
    IF NOT EXISTS (SELECT 1 FROM runs r WHERE r.status = 'queued' AND r.held IS NOT NULL
                                          AND r.held <> 'released') THEN
        RETURN;  -- the usual case, read afresh under the locks: nothing is held anywhere
    END IF;
    FOR g IN
        SELECT r.tenant, r.queue,
               array_agg(DISTINCT r.limit_key) FILTER (WHERE r.limit_key IS NOT NULL) AS keys
        FROM runs r WHERE r.id = ANY(freed) AND r.status <> 'running'
        GROUP BY r.tenant, r.queue ORDER BY r.tenant, r.queue
    LOOP
        IF EXISTS (SELECT 1 FROM runs r
                   WHERE r.tenant = g.tenant AND r.queue = g.queue AND r.status = 'queued'
                     AND r.held IS NOT NULL AND r.held <> 'released') THEN
            RETURN QUERY SELECT * FROM runlane_release_group(g.tenant, g.queue,
                                                             COALESCE(g.keys, '{}'));
        END IF;
    END LOOP;
END $$;

-- The scheduler's: queues whose rate windows have reopened for a held run.
CREATE FUNCTION runlane_release_due() RETURNS SETOF runs LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT l.tenant, l.queue FROM queue_limits l
        WHERE l.release_at <= clock_timestamp()
        ORDER BY l.tenant, l.queue
        FOR UPDATE SKIP LOCKED
    LOOP
        RETURN QUERY SELECT * FROM runlane_release_group(g.tenant, g.queue, '{}');
    END LOOP;
END $$;

-- Flows and batches (contract §5.4, §5.5).
--
-- A flow is a tree of runs made in one transaction: a parent is 'waiting' until each of its
-- children is terminal. The children's ends drive it, in the transaction of each end, from a
-- trigger (runlane_flow_changed): whichever path ends a child (a worker's group commit, a cancel,
-- a stall recovery), the parent is queued with its run.children_done event, or failed with
-- ChildFailed, in that same commit; no sweep is needed and no wake-up can be lost.
--
-- Locks go from a child to its parent only (a child's row, then its parent's), so flows never
-- deadlock. Cancelling what a parent leaves behind (it failed or was cancelled before its
-- children ended) goes the other way, so it is not done in that transaction: the parent is
-- marked cascade_pending and whoever made the change (or the scheduler, after a crash) cancels
-- its children next (app.flows.settle), each child's cancel a change of its own.

CREATE INDEX runs_parent_idx ON runs (parent_id, child_index) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_cascade_idx ON runs (root_id) WHERE cascade_pending;
CREATE INDEX runs_flow_undispatched_idx ON runs (root_id)
    WHERE root_id IS NOT NULL AND status = 'queued' AND dispatched_at IS NULL;

-- The Postgres record of a batch's Idempotency-Key (a single run's is its row's column).
CREATE TABLE batch_requests (
    tenant              text NOT NULL,
    idempotency_key     text NOT NULL,
    request_fingerprint text NOT NULL,
    run_ids             uuid[] NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX batch_requests_created_idx ON batch_requests (created_at);

-- An event of a change made in PL/pgSQL (the flow trigger's): numbered with the run's new
-- last_seq, as app/sql/outbox.sql numbers those of the statements in app/sql/queries.
CREATE FUNCTION runlane_emit(r runs, of_type text, of_data jsonb) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO run_events (run_id, seq, type, data, tenant, queue)
    VALUES (r.id, r.last_seq, of_type, of_data, r.tenant, r.queue);
$$;

-- How a parent's children ended, for run.children_done.
CREATE FUNCTION runlane_children_ended(parent uuid) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'succeeded', count(*) FILTER (WHERE status = 'succeeded'),
        'failed', count(*) FILTER (WHERE status = 'failed'),
        'cancelled', count(*) FILTER (WHERE status = 'cancelled'))
    FROM runs WHERE parent_id = parent;
$$;

-- A parent's `children` summary as runs show it (null for a run without children).
CREATE FUNCTION runlane_children_summary(r runs) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF r.children_total = 0 THEN
        RETURN NULL;
    END IF;
    RETURN runlane_children_ended(r.id) || jsonb_build_object(
        'total', r.children_total, 'pending', r.children_pending);
END $$;

-- A child crossed the line between live and terminal (either way: a retry brings it back):
-- its parent's count of live children follows, under the parent's row lock, which orders the
-- ends of siblings; the last end queues the parent, a failure under 'fail' fails it. A parent
-- that ends while children live is marked for the cascade that cancels them.
CREATE FUNCTION runlane_flow_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_done boolean := OLD.status IN ('succeeded', 'failed', 'cancelled');
    is_done boolean := NEW.status IN ('succeeded', 'failed', 'cancelled');
    parent runs;
BEGIN
    IF was_done = is_done THEN
        RETURN NULL;
    END IF;
    IF is_done AND NEW.children_pending > 0 THEN
        UPDATE runs SET cascade_pending = true WHERE id = NEW.id;
    END IF;
    IF NEW.parent_id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE runs SET children_pending = children_pending + CASE WHEN is_done THEN -1 ELSE 1 END
    WHERE id = NEW.parent_id
    RETURNING * INTO parent;
    IF NOT is_done OR parent.status IS DISTINCT FROM 'waiting' THEN
        RETURN NULL;
    END IF;
    IF NEW.status <> 'succeeded' AND parent.on_child_failure = 'fail' THEN
        UPDATE runs SET status = 'failed', finished_at = now(), last_seq = last_seq + 1,
            error = jsonb_build_object('type', 'ChildFailed', 'message', format(
                'child %s (%s) %s%s', NEW.id, NEW.task, NEW.status,
                COALESCE(': ' || (NEW.error ->> 'message'), '')))
        WHERE id = parent.id
        RETURNING * INTO parent;
        PERFORM runlane_emit(parent, 'run.failed',
                             jsonb_build_object('attempt', parent.attempt, 'error', parent.error));
    ELSIF parent.children_pending = 0 THEN
        -- dispatched_at null: whoever ended the child enqueues it (app.flows.settle), else the
        -- scheduler's sweep; a parent given a start time still waits for it
        UPDATE runs SET status = CASE WHEN scheduled_for > now() THEN 'delayed' ELSE 'queued' END,
                        dispatched_at = NULL, last_seq = last_seq + 1
        WHERE id = parent.id
        RETURNING * INTO parent;
        PERFORM runlane_emit(parent, 'run.children_done', runlane_children_ended(parent.id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER runs_flow_changed AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (NEW.parent_id IS NOT NULL OR NEW.children_total > 0))
    EXECUTE FUNCTION runlane_flow_changed();

-- Timings and ETA (contract §6, migration 0011). The first dispatch to a queue is kept beside
-- the latest (dispatched_at): the inserts set it with the run, and this trigger catches any
-- later first dispatch, whatever statement makes it (its WHEN is checked in C, so the claims
-- and finishes of the hot path, which do not set dispatched_at, never call it).
CREATE FUNCTION runlane_first_dispatch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.first_dispatched_at := NEW.dispatched_at;
    RETURN NEW;
END $$;

CREATE TRIGGER runs_first_dispatch BEFORE INSERT OR UPDATE OF dispatched_at ON runs
    FOR EACH ROW
    WHEN (NEW.first_dispatched_at IS NULL AND NEW.dispatched_at IS NOT NULL)
    EXECUTE FUNCTION runlane_first_dispatch();

-- The ETA of a running run without progress: the median duration of the last runs of its task
-- that succeeded for its tenant, newest first from this index (started_at included, so the
-- sample is read from the index alone).
CREATE INDEX runs_succeeded_task_idx ON runs (tenant, task, finished_at DESC)
    INCLUDE (started_at) WHERE status = 'succeeded';

-- Webhooks (contract §8, migration 0013): endpoints per tenant, one delivery per committed event
-- and matching endpoint, and a log of each delivery's attempts. The webhooks process fans out
-- from events the relay has numbered (tseq, per tenant): those are committed and in order, so a
-- cursor per tenant passes none that a slower transaction could still commit below it.
CREATE TABLE webhook_endpoints (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant     text NOT NULL,
    url        text NOT NULL,
    events     text[] NOT NULL,  -- event types, or {*}
    queue      text,
    secret     text NOT NULL,  -- whsec_…: the process signs with it, so it is kept as given
    -- the tenant's last tseq when it was made: it gets the events numbered after that
    after_tseq bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant, created_at, id);

-- Per tenant with endpoints: the tseq up to which every event has its deliveries.
CREATE TABLE webhook_cursors (
    tenant      text PRIMARY KEY,
    fanned_tseq bigint NOT NULL
);

-- One row per event and endpoint (or per ping): the body is rendered from the event at each
-- attempt, so a delivery goes with its event (and so its run) when retention deletes it.
-- next_attempt_at also holds a claim: the claim moves it a lease ahead, so the work of a
-- process that died is due again once the lease has run out.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    run_id          uuid,
    seq             integer,
    event_type      text NOT NULL,
    payload         text,  -- a ping's body; null for an event's
    event_at        timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT webhook_deliveries_status_check
        CHECK (status IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT webhook_deliveries_event_fkey FOREIGN KEY (run_id, seq)
        REFERENCES run_events (run_id, seq) ON DELETE CASCADE,
    -- leads with the event, so the cascade from a deleted event finds its deliveries
    CONSTRAINT webhook_deliveries_event_endpoint_key UNIQUE (run_id, seq, endpoint_id)
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- pings belong to no run: the scheduler's retention finds the old ones here
CREATE INDEX webhook_deliveries_pings_idx ON webhook_deliveries (created_at) WHERE run_id IS NULL;

CREATE TABLE webhook_attempts (
    id              bigserial PRIMARY KEY,
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL,
    attempt         integer NOT NULL,
    status_code     integer,
    error           text,
    duration_ms     integer NOT NULL,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at timestamptz  -- the retry it scheduled, if any
);

CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, id DESC);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id);
