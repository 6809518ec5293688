-- Idempotency keys not yet merged into `job_keys`. SQLite's WAL writes
-- every page a transaction touches in full, and a new provider key lands
-- on a random leaf of `job_keys`' key index: one 4 KiB page per key per
-- commit, and again at the checkpoint. Keys are appended here instead, in
-- the transaction that makes their jobs (no index but the row id, so every
-- insert lands on the last page), and moved into `job_keys` in key order,
-- many at a time, where each leaf is written once per merge. The node
-- finds a key here through a map in memory of key hashes to `seq`
-- (ferry_store::keytail); PostgreSQL writes `job_keys` directly.
CREATE TABLE job_keys_tail (
    seq        INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    event_id   TEXT,
    created_at BIGINT NOT NULL
);
