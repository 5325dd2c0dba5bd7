-- A call's lines are keyed by the call and the feature (a call names each feature once), in one
-- index instead of a serial id, its own index and an index on the call. Neither these lines nor
-- the calls hold foreign keys to the rows written with them in the same transaction: each would
-- take a row lock (a WAL record) on its parent for every row; `tally verify` checks that every
-- call's lines and its own account's transaction add up to what it charged.
ALTER TABLE usage_lines DROP CONSTRAINT usage_lines_event_id_fkey;
ALTER TABLE usage_lines DROP CONSTRAINT usage_lines_pkey;
DROP INDEX usage_lines_event;
ALTER TABLE usage_lines DROP COLUMN id;
ALTER TABLE usage_lines ADD PRIMARY KEY (event_id, feature_key);
ALTER TABLE usage_events DROP CONSTRAINT usage_events_transaction_id_fkey;
