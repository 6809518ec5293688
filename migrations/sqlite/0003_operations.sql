-- Background operations (bulk replay): progress lives here so any node can
-- show it, and a node that dies mid-way leaves it for another to resume.
CREATE TABLE operations (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    tenant       TEXT,
    params       TEXT NOT NULL,
    total        BIGINT NOT NULL,
    done         BIGINT NOT NULL,
    error        TEXT,
    -- The last dead letter id a page reached (pages go in id order).
    cursor       TEXT,
    owner        TEXT,
    heartbeat_at BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX operations_running ON operations (status, heartbeat_at);
