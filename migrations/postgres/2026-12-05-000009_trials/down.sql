ALTER TABLE plans DROP COLUMN trial_credits;
ALTER TABLE plans DROP COLUMN trial_days;
