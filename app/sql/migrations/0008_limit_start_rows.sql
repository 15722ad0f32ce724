-- A rate limit's starts recorded a row per batch, not a row per start: a worker's claim admits
-- up to a hundred runs at once, and a row each was most of what a limit that never binds cost.
-- A row holds `count` starts made at one moment, numbered up to n; a window is still full when
-- the start `limit` places back (now found in the row that holds its number) is younger than
-- the period.
ALTER TABLE limit_starts ADD COLUMN count integer NOT NULL DEFAULT 1 CHECK (count >= 1);

-- NULL when one more start fits in the window of `period_s`, beside `pending` starts to come;
-- else when it will (plus a millisecond: the start's event is written a moment after this).
CREATE OR REPLACE FUNCTION runlane_rate_slot(of_tenant text, of_queue text, of_key text,
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

-- Whether every run of `ids` in this queue may start now, far from any limit: no run of the
-- queue is held (order would matter) and the whole batch fits every limit. If so, their starts
-- are recorded at once, a row per queue and per limit key: the usual case costs a few index
-- lookups per queue and batch, not per run.
CREATE OR REPLACE FUNCTION runlane_admit_all(lim queue_limits, ids uuid[]) RETURNS boolean
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
-- (Migration 0008: the fast path takes its locks in the loop and returns without a run-by-run
-- pass.) ROWS: the claim joins this to runs by primary key; the default estimate (1000) would have
-- the planner scan runs instead.
CREATE OR REPLACE FUNCTION runlane_admit(ids uuid[]) RETURNS TABLE (run_id uuid, place bigint)
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

-- After attempts ended (`freed`), in the transaction that ended them: release what their slots
-- let start. `claiming`: the runs the same transaction claims next, whose queues' limits are
-- locked here too, so that every lock a group commit takes is taken in one order.
CREATE OR REPLACE FUNCTION runlane_release(freed uuid[], claiming uuid[]) RETURNS SETOF runs
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
