-- Rollouts: a set of integrations moved from a stable connector version to
-- a candidate in canary steps, analysed after each step's window, then
-- promoted (the pins move) or rolled back (every integration back on the
-- stable version, the candidate's failures run again on it). The state
-- machine is drawn in ARCHITECTURE.md; every transition is a conditional
-- update of this row (its state and step), so it happens once on any
-- number of nodes.
CREATE TABLE rollouts (
    id                 TEXT PRIMARY KEY,
    connector          TEXT NOT NULL,
    stable_version     TEXT NOT NULL,
    candidate_version  TEXT NOT NULL,
    tenant             TEXT,
    state              TEXT NOT NULL CONSTRAINT rollouts_state_known
                       CHECK (state = 'shadow' OR state = 'canary' OR state = 'paused' OR state = 'promoted' OR state = 'rolled_back'),
    steps              TEXT NOT NULL,
    step               BIGINT NOT NULL,
    window_ms          BIGINT NOT NULL,
    thresholds         TEXT NOT NULL,
    step_started_at    BIGINT NOT NULL,
    members            BIGINT NOT NULL,
    reason             TEXT,
    last_analysis      TEXT,
    reran              BIGINT NOT NULL DEFAULT 0,
    shadow_runs        BIGINT NOT NULL DEFAULT 0,
    shadow_identical   BIGINT NOT NULL DEFAULT 0,
    shadow_failed      BIGINT NOT NULL DEFAULT 0,
    rerun_through      BIGINT,
    created_at         BIGINT NOT NULL,
    created_by         TEXT NOT NULL,
    ended_at           BIGINT,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state, id);

-- The integrations in a rollout, each with its bucket (0-99, fixed at the
-- start from the rollout's and the integration's ids): a step at share S
-- sends the members whose bucket is below S to the candidate, so an
-- integration does not flap. An integration is in at most one live
-- rollout (`live` is 1 until the rollout ends).
CREATE TABLE rollout_members (
    rollout_id     TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    bucket         BIGINT NOT NULL,
    live           BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, integration_id)
);
CREATE UNIQUE INDEX rollout_members_live ON rollout_members (integration_id) WHERE live = 1;

-- What a candidate run that rejected records needs to run again: written
-- by the worker before it records the run, read only by a rollback.
CREATE TABLE rollout_runs (
    run_id         TEXT PRIMARY KEY,
    rollout_id     TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    trigger        TEXT NOT NULL,
    event_id       TEXT,
    scheduled_for  BIGINT,
    payload        TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX rollout_runs_rollout ON rollout_runs (rollout_id);

-- What shadow runs found: each difference between the candidate and the
-- real run that the stable version's own shadow does not also show.
CREATE TABLE shadow_diffs (
    id             TEXT PRIMARY KEY,
    rollout_id     TEXT NOT NULL,
    run_id         TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    kind           TEXT NOT NULL,
    field          TEXT NOT NULL,
    control        TEXT NOT NULL,
    candidate      TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX shadow_diffs_rollout ON shadow_diffs (rollout_id, id);
