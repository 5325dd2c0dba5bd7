-- The operations metrics count failed deliveries; those are kept, so without this index the
-- count would read every delivery ever made.
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (id) WHERE status = 'failed';
