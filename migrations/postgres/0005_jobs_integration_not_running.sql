-- A claim moves each job to `running` with a new row version, and every
-- index whose predicate the new version meets gets an entry for it. Jobs
-- are looked up by integration only in states other than `running` (pause,
-- resume, withdrawing early fires), so this index leaves running jobs out
-- and the claim writes one index entry fewer per job. Statements that use
-- it name their states as literals, so a generic plan can prove the
-- predicate.
DROP INDEX jobs_integration;
CREATE INDEX jobs_integration ON jobs (integration_id, state) WHERE state <> 'running';
