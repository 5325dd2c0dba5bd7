-- The operators' lookups (GET /admin/orders, /admin/subscriptions, /admin/orders/{id}): an
-- app's orders and subscriptions newest first without a user, and the events of one order.
CREATE INDEX orders_app_created ON orders (app_key, created_at DESC, id DESC);
CREATE INDEX subscriptions_app ON subscriptions (app_key, id DESC);
CREATE INDEX billing_events_order ON billing_events (order_id, id);
