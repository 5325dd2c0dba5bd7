-- The lots' partial indexes also carry what is left of each lot (and the lasting ones their
-- expiry, always NULL, which a read selects), so a balance (the soonest expiring lots) and a
-- debit's first read (lots in burn order) read the index alone, without a step into the table
-- per lot. A debit changes `remaining`, which the indexes' `WHERE` names, so it rewrote their
-- entries already: the writes do no more index work, on entries a few bytes wider.
DROP INDEX lots_expiring;
CREATE INDEX lots_expiring ON lots (account_id, expires_at, id, remaining)
    WHERE remaining > 0 AND expires_at IS NOT NULL;
DROP INDEX lots_lasting;
CREATE INDEX lots_lasting ON lots (account_id, id, remaining, expires_at)
    WHERE remaining > 0 AND expires_at IS NULL;
