DROP INDEX payments_app_created;
DROP INDEX accounts_app_created;
DROP INDEX checkins_created_brin;
DROP INDEX transactions_created_brin;
DROP TABLE stats_days;
