-- Free trials: a subscription plan may start new subscriptions with a trial of `trial_days` days,
-- granting `trial_credits` once when the trial starts.
ALTER TABLE plans ADD COLUMN trial_days INTEGER;
ALTER TABLE plans ADD COLUMN trial_credits BIGINT NOT NULL DEFAULT 0;
