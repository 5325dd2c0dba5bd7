-- A number per app that every change to its pricing (features, rates, entitlements, the
-- check-in time zone that day and month windows follow) raises, in the same transaction: a
-- server keeps the app's pricing in memory and reads only this row to know it is current.
CREATE TABLE pricing_generations (
    app_key    TEXT   NOT NULL PRIMARY KEY,
    generation BIGINT NOT NULL
);

-- No query reads a call's lines by account (the audit reads them all); the index only cost an
-- insert per line.
DROP INDEX usage_lines_account;
