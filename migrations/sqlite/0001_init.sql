-- Ferry schema, SQLite. Times are unix milliseconds; ids are UUID v7 text.
CREATE TABLE integrations (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    connector     TEXT NOT NULL,
    revision      BIGINT NOT NULL,
    enabled       BIGINT NOT NULL,
    next_fire_at  BIGINT,
    url_token     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);
CREATE INDEX integrations_due ON integrations (next_fire_at)
    WHERE next_fire_at IS NOT NULL AND enabled = 1 AND deleted_at IS NULL;
CREATE INDEX integrations_tenant ON integrations (tenant, id);

CREATE TABLE integration_revisions (
    integration_id    TEXT NOT NULL,
    revision          BIGINT NOT NULL,
    connector_version TEXT NOT NULL,
    config            TEXT NOT NULL,
    secrets_enc       TEXT,
    secret_names      TEXT NOT NULL,
    schedule          TEXT,
    retry             TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    created_by        TEXT,
    PRIMARY KEY (integration_id, revision)
);

CREATE TABLE integration_state (
    integration_id TEXT PRIMARY KEY,
    version        BIGINT NOT NULL,
    state          TEXT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- The hot table: only live work. Finished runs move to `runs`.
CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    connector      TEXT NOT NULL,
    revision       BIGINT NOT NULL,
    trigger        TEXT NOT NULL,
    state          TEXT NOT NULL,
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
CREATE INDEX jobs_available ON jobs (run_at) WHERE state = 'available';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_integration ON jobs (integration_id, state);
CREATE INDEX jobs_overlap ON jobs (overlap_key) WHERE overlap_key IS NOT NULL;
CREATE INDEX jobs_waiting ON jobs (overlap_key, created_at) WHERE state = 'waiting';

-- Idempotency keys outlive their jobs (schedule fires, provider event ids).
CREATE TABLE job_keys (
    key        TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    event_id   TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX job_keys_created ON job_keys (created_at);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    integration_id    TEXT NOT NULL,
    tenant            TEXT NOT NULL,
    connector         TEXT NOT NULL,
    connector_version TEXT,
    revision          BIGINT NOT NULL,
    trigger           TEXT NOT NULL,
    status            TEXT NOT NULL,
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
CREATE INDEX runs_integration ON runs (integration_id, id);
CREATE INDEX runs_finished ON runs (finished_at);

CREATE TABLE dead_letters (
    id                TEXT PRIMARY KEY,
    run_id            TEXT NOT NULL,
    integration_id    TEXT NOT NULL,
    tenant            TEXT NOT NULL,
    connector         TEXT NOT NULL,
    connector_version TEXT,
    revision          BIGINT NOT NULL,
    trigger           TEXT NOT NULL,
    event_id          TEXT,
    scheduled_for     BIGINT,
    payload           TEXT,
    attempts          BIGINT NOT NULL,
    attempt_log       TEXT NOT NULL,
    last_error        TEXT NOT NULL,
    dead_at           BIGINT NOT NULL,
    replayed_at       BIGINT,
    replay_run_id     TEXT,
    discarded_at      BIGINT,
    discarded_by      TEXT
);
CREATE INDEX dead_letters_integration ON dead_letters (integration_id, id);
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    tenant      TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    probe        TEXT
);

CREATE TABLE audit_log (
    id      TEXT PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT
);
