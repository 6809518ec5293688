-- The scheduler walks due integrations in (next_fire_at, id) order, so that
-- a look-ahead pass can resume after the rows it leaves for their due time.
DROP INDEX integrations_due;
CREATE INDEX integrations_due ON integrations (next_fire_at, id)
    WHERE next_fire_at IS NOT NULL AND enabled = 1 AND deleted_at IS NULL;
