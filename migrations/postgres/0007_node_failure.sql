-- Node failure (ARCHITECTURE.md, "When a node dies").
-- A node declared dead by another (its heartbeat older than
-- `worker.node_dead_after`) has `dead_at` set, once, by the node that
-- rescued its jobs; a node that comes back after a pause finds it set and
-- gives up every run it held. `key_fingerprints` names the keys the node
-- can open secrets with, so a key rotation can check every live node
-- holds the new key before secrets are re-sealed under it.
ALTER TABLE nodes ADD COLUMN dead_at BIGINT;
ALTER TABLE nodes ADD COLUMN key_fingerprints TEXT;

-- Spooled events the forwarder could not move into the jobs table (a held
-- event that fails verification, an integration whose secrets cannot be
-- opened, a row the store refuses): set aside with the reason so the rest
-- go on, and kept until an operator replays them. `event` is the spooled
-- event as the spool held it (JSON). `tenant` is unknown (NULL) for a held
-- event whose integration the store does not have.
CREATE TABLE parked_events (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL,
    tenant         TEXT,
    node_id        TEXT NOT NULL,
    received_at    BIGINT NOT NULL,
    parked_at      BIGINT NOT NULL,
    reason         TEXT NOT NULL,
    event          TEXT NOT NULL,
    replayed_at    BIGINT,
    replay_job_id  TEXT
);
CREATE INDEX parked_events_open ON parked_events (parked_at, id) WHERE replayed_at IS NULL;

-- Store-wide settings: `secret_key.sealing` is the fingerprint of the key
-- every secret is sealed with; `secret_key.previous`, while a rotation
-- re-seals, the key some secrets may still be sealed with.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
