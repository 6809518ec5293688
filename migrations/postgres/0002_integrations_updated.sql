-- Intake's config cache asks which integrations changed since it last looked.
CREATE INDEX integrations_updated ON integrations (updated_at);
