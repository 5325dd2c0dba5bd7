DROP TABLE stats_days;
