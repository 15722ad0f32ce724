-- The outbox, defined once: app.db wraps every query marked "(outbox)" in app/sql/queries in this,
-- so that a run state change and its events are one statement, hence one transaction. The change
-- (CHANGE below) inserts or updates runs rows, bumps their last_seq and returns each row with at
-- least id, tenant, queue, last_seq, event_type and event_data; each row it returns gets its event,
-- numbered with the new last_seq. The change's lock on the runs row serialises a run's changes,
-- so per run commit order is seq order. The statement returns what the change returns.
WITH r AS (
    CHANGE
), e AS (
    INSERT INTO run_events (run_id, seq, type, data, tenant, queue)
    SELECT id, last_seq, event_type, event_data, tenant, queue FROM r
    WHERE event_type IS NOT NULL  -- a row changed without an event (cascade_cancel)
)
SELECT * FROM r
