-- Timings and ETA (contract §6): when a run was first handed to a queue, and an index for the
-- median duration of a tenant's recent succeeded runs of a task.
--
-- dispatched_at is the latest dispatch (a retry, a stall, a queue limit's release move it), so
-- the first one is kept beside it. The inserts set it with the run; any later first dispatch (a
-- delayed run promoted, a flow's parent queued by its children, a delayed or waiting run
-- cancelled and then retried) is caught by this trigger, whatever statement makes it. Its WHEN
-- is checked in C: the function runs once per run at most, and never for the claims and finishes
-- of the hot path, which do not set dispatched_at.
ALTER TABLE runs ADD COLUMN first_dispatched_at timestamptz;

-- Runs stored before: their first dispatch is their first run.queued (or run.children_done, a
-- parent's) event.
UPDATE runs r SET first_dispatched_at = f.at
FROM (SELECT run_id, min(at) AS at FROM run_events
      WHERE type IN ('run.queued', 'run.children_done') GROUP BY run_id) f
WHERE f.run_id = r.id;

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
