-- Whether a tenant's queue is paused, as the queries that show runs select it with each row (for
-- the run's `waiting`). The claim and the dispatch sweep keep the same test inline: a function
-- with a subquery is not inlined, and they run it for every run they touch.
CREATE FUNCTION runlane_queue_paused(of_tenant text, of_queue text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN EXISTS (SELECT 1 FROM queue_pauses p WHERE p.tenant = of_tenant AND p.queue = of_queue);
