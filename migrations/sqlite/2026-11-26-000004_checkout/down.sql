DROP TABLE refunds;
DROP TABLE payment_refs;
DROP TABLE payments;
DROP TABLE billing_events;
DROP TABLE provider_coupons;
DROP TABLE billing_customers;
DROP TABLE subscriptions;
DROP TABLE orders;
