-- SQLite only (there, new idempotency keys are appended to a tail table and
-- merged into `job_keys` in batches). PostgreSQL's WAL logs a key index
-- insert as a small record, not as the whole page, so keys go straight
-- into `job_keys`.
SELECT 1;
