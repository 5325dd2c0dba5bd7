DROP TABLE service_keys;
DROP TABLE apps;
