-- The job state machine in the schema: `jobs.state` takes exactly the
-- states of `ferry_core::JobState` and `runs.status` exactly the two ends
-- of a run (`ferry_core::RunStatus::{Succeeded, Dead}`). A test checks
-- these lists against the enums.
ALTER TABLE jobs ADD CONSTRAINT jobs_state_known
    CHECK (state IN ('waiting', 'available', 'running', 'held'));
ALTER TABLE runs ADD CONSTRAINT runs_status_known
    CHECK (status IN ('succeeded', 'dead'));
