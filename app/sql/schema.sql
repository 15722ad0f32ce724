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
    CONSTRAINT runs_status_check CHECK (
        status IN ('queued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT runs_priority_check CHECK (priority BETWEEN 1 AND 10),
    CONSTRAINT runs_tenant_idempotency_key_key UNIQUE (tenant, idempotency_key)
);

CREATE INDEX runs_tenant_created_idx ON runs (tenant, created_at DESC, id DESC);
CREATE INDEX runs_tenant_queue_status_idx ON runs (tenant, queue, status);
CREATE INDEX runs_delayed_due_idx ON runs (scheduled_for) WHERE status = 'delayed';
CREATE INDEX runs_queued_dispatch_idx ON runs (dispatched_at) WHERE status = 'queued';
CREATE INDEX runs_running_lease_idx ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_finished_idx ON runs (finished_at) WHERE finished_at IS NOT NULL;

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
-- with a subquery is not inlined, and they run it for every run they touch.
CREATE FUNCTION runlane_queue_paused(of_tenant text, of_queue text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN EXISTS (SELECT 1 FROM queue_pauses p WHERE p.tenant = of_tenant AND p.queue = of_queue);

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
