-- An account's reads touch a bounded number of rows however many lots and holds it has: lots
-- that expire are read soonest first (the due ones, the ones a debit burns first, the ones a
-- balance shows), lots that never expire oldest first, and holds by the instant they run out.
CREATE INDEX lots_expiring ON lots (account_id, expires_at, id)
    WHERE remaining > 0 AND expires_at IS NOT NULL;
CREATE INDEX lots_lasting ON lots (account_id, id) WHERE remaining > 0 AND expires_at IS NULL;
DROP INDEX holds_active;
CREATE INDEX holds_active ON holds (account_id, expires_at) WHERE status = 'active';
