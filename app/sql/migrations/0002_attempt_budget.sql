-- A manual retry gives a run a fresh attempt budget without renumbering its attempts: `attempt`
-- keeps counting every attempt started, `attempt_base` is where the current budget began.
ALTER TABLE runs ADD COLUMN attempt_base integer NOT NULL DEFAULT 0;
