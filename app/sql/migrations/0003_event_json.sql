-- The one rendering of an event as the JSON clients get (CONTRACT §2), used by the relay for the
-- streams and by every read of history, so that history and live send the same bytes. A plain
-- SQL expression, so the planner inlines it: no function call per row.
CREATE FUNCTION runlane_event_json(e run_events) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN json_build_object(
        'run_id', e.run_id, 'seq', e.seq, 'type', e.type,
        'at', to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', e.data)::text;
