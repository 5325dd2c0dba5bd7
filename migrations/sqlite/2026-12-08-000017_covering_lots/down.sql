DROP INDEX lots_lasting;
CREATE INDEX lots_lasting ON lots (account_id, id) WHERE remaining > 0 AND expires_at IS NULL;
DROP INDEX lots_expiring;
CREATE INDEX lots_expiring ON lots (account_id, expires_at, id)
    WHERE remaining > 0 AND expires_at IS NOT NULL;
