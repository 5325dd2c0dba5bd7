DROP TABLE checkin_configs;
DROP TABLE checkins;
DROP TABLE lots;
DROP TABLE transactions;
DROP TABLE accounts;
