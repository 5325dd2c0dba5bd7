DROP INDEX holds_active;
CREATE INDEX holds_active ON holds (account_id) WHERE status = 'active';
DROP INDEX lots_lasting;
DROP INDEX lots_expiring;
