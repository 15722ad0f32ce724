-- The relay keeps its place per tenant instead of marking every event row published: an event is
-- written by its commit, numbered once by the relay (tseq), and never updated again. Every event
-- with tseq <= published_tseq is in Redis; those numbered above it are published again after a
-- crash (explicit stream IDs make that harmless). One update per tenant per batch, not per event.
ALTER TABLE tenant_streams ADD COLUMN published_tseq bigint NOT NULL DEFAULT 0;

-- Up to the first numbered event not yet published, or everything numbered.
UPDATE tenant_streams ts SET published_tseq = COALESCE(
    (SELECT min(e.tseq) - 1 FROM run_events e
     WHERE e.tenant = ts.tenant AND e.tseq IS NOT NULL AND NOT e.published),
    ts.last_tseq);

DROP INDEX run_events_unpublished_idx;
ALTER TABLE run_events DROP COLUMN published;
-- The relay's queue of events still to number: rows leave it when numbered.
CREATE INDEX run_events_unnumbered_idx ON run_events (id) WHERE tseq IS NULL;
