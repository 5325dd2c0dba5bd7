-- A subscription remembers where its previous paid period started: a plan change reported after
-- the renewal that followed it still grants the previous period's rest at the new plan's rate.
ALTER TABLE subscriptions ADD COLUMN previous_period_start TIMESTAMP;
