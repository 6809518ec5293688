-- Operational events and auto-pause.
--
-- A failure group remembers which failure opened (or reopened) it, as a
-- token that failure's transaction chose: the upsert's RETURNING tells that
-- transaction, and no other, that it must send `failure_group.opened`.
ALTER TABLE failure_groups ADD COLUMN opened_by TEXT;

-- Why an integration is paused when Ferry paused it (auto-pause); cleared
-- by a resume. `watched_from` is when the detector starts judging its
-- runs (creation, or the last resume), so a resumed integration is not
-- paused again for the failures that paused it. `failing_since` is set
-- while its failure rate is over the threshold (`integration.failing`
-- is sent when it is set). The `auto_pause_*` columns override the
-- node's defaults for this integration (NULL: the default).
ALTER TABLE integrations ADD COLUMN paused_reason TEXT;
ALTER TABLE integrations ADD COLUMN watched_from BIGINT;
ALTER TABLE integrations ADD COLUMN failing_since BIGINT;
ALTER TABLE integrations ADD COLUMN auto_pause_off BIGINT;
ALTER TABLE integrations ADD COLUMN auto_pause_after_ms BIGINT;
ALTER TABLE integrations ADD COLUMN auto_pause_min_runs BIGINT;

-- Up to which `dead_at` an integration's dead letters were announced
-- (`run.dead_lettered`), and when: at most one event per integration a
-- minute, claimed by one node with a conditional upsert.
CREATE TABLE dead_letter_marks (
    integration_id TEXT PRIMARY KEY,
    announced_to   BIGINT NOT NULL,
    sent_at        BIGINT NOT NULL
);
