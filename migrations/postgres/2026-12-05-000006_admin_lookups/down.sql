DROP INDEX billing_events_order;
DROP INDEX subscriptions_app;
DROP INDEX orders_app_created;
