ALTER TABLE holds DROP CONSTRAINT holds_amount_check;
ALTER TABLE holds ADD CONSTRAINT holds_amount_check CHECK (amount > 0);
DROP TABLE usage_lines;
DROP TABLE usage_events;
DROP TABLE usage_meters;
DROP TABLE allowances;
DROP TABLE entitlements;
DROP TABLE pricing_rates;
DROP TABLE pricing_features;
