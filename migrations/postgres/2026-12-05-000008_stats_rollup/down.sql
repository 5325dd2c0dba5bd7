DROP INDEX payments_app_created;
DROP INDEX checkins_app_created;
DROP INDEX accounts_app_created;
DROP INDEX transactions_app_created;
DROP TABLE stats_days;
