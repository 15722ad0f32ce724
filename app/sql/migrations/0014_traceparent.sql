-- Tracing (issue 14): the W3C traceparent a run was submitted under (or the web's own span's),
-- so that its attempts join that trace and the relay's publishes link to it. Nullable without a
-- default: adding it rewrites nothing, and a run submitted without one stores only a null bit.
ALTER TABLE runs ADD COLUMN traceparent text;
