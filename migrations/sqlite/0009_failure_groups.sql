-- Failure groups: every failed attempt and dead letter belongs to one,
-- keyed by its fingerprint (`ferry_core::failure`: connector, version,
-- error class, the error text with ids, numbers and URLs' variable parts
-- masked). The group row holds what is one per cause (status, first and
-- last seen, a sample); the member rows count per integration, so a
-- tenant-scoped caller sees its own counts. Both are upserted in the
-- failure's own transaction, so several nodes count into one row.
CREATE TABLE failure_groups (
    id                TEXT PRIMARY KEY,
    connector         TEXT NOT NULL,
    connector_version TEXT NOT NULL,
    class             TEXT NOT NULL,
    message           TEXT NOT NULL,
    sample            TEXT NOT NULL,
    status            TEXT NOT NULL CONSTRAINT failure_groups_status_known
                      CHECK (status = 'open' OR status = 'acknowledged' OR status = 'resolved'),
    first_seen        BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    reopened          BIGINT NOT NULL DEFAULT 0,
    status_by         TEXT,
    status_at         BIGINT
);
CREATE INDEX failure_groups_connector ON failure_groups (connector, id);

CREATE TABLE failure_group_members (
    group_id       TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    attempts       BIGINT NOT NULL,
    dead_letters   BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    PRIMARY KEY (group_id, integration_id)
);
CREATE INDEX failure_group_members_tenant ON failure_group_members (tenant, group_id);

-- A dead letter names its group, so "replay this group" is a bulk replay
-- filtered by it.
ALTER TABLE dead_letters ADD COLUMN failure_group TEXT;
CREATE INDEX dead_letters_failure_group ON dead_letters (failure_group, id);
