CREATE INDEX usage_lines_account ON usage_lines (account_id, feature_key);
DROP TABLE pricing_generations;
