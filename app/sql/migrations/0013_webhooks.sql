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
