DROP INDEX webhook_deliveries_failed;
DROP TABLE service_keys;
DROP TABLE apps;
