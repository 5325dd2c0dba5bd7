ALTER TABLE subscriptions DROP COLUMN previous_period_start;
