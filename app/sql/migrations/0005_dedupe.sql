-- Deduplication (contract §5.3): a tenant's dedupe key names at most one live run. The key's row
-- is the lock that makes concurrent submits of one key agree (its primary key), and it outlives
-- Redis. How long it holds depends on the mode it was taken with: ttl_s (expires_at), debounce
-- (until its run starts) or neither (until its run ends).
ALTER TABLE runs ADD COLUMN dedupe_key text;
-- The value that per-key limits of its queue apply to (contract §5.1), e.g. a customer id.
ALTER TABLE runs ADD COLUMN limit_key text;

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
