-- Placeholder for the number another branch takes (0011): migrations are numbered one by one
-- (tests/integration/test_migrations.py). Replaced by that branch's migration at merge.
SELECT 1;
