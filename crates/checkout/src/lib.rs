//! Tally's checkout domain: orders and subscriptions, payment sessions with a provider, and the
//! handling of provider events (webhooks).
//!
//! Two ports: [`CheckoutRepository`] (storage; the `tally-store` crate implements it for SQLite and
//! PostgreSQL) and [`PaymentProvider`] (the `tally-providers` crate implements it for Stripe,
//! Creem and the local sandbox). Provider webhooks are verified and parsed into a
//! provider-neutral [`PaymentEvent`]; the repository records the event and applies its effect in
//! one database transaction.

pub mod change;
pub mod error;
pub mod event;
pub mod model;
pub mod plan;
pub mod provider;
pub mod refund;
pub mod repo;
pub mod service;

pub use error::CheckoutError;
pub use event::{EventKind, EventOutcome, PaymentEvent};
pub use model::{
    BillingEvent, Channel, Interval, Order, OrderStatus, OrderType, Subscription,
    SubscriptionChange, SubscriptionStatus,
};
pub use provider::{
    CheckoutMode, CheckoutRequest, CheckoutSession, CouponDuration, CouponRequest, PaymentProvider,
    PlanChangeRequest, PortalRequest, ProviderError, RefundRequest, SandboxDriver,
    SubscriptionRequest, WebhookHeaders,
};
pub use repo::{
    AppOrderQuery, AppSubscriptionQuery, CheckoutRepository, EventQuery, NewOrder, OrderQuery,
    SessionAttached,
};
pub use service::{
    Checkout, CheckoutConfig, CreateSession, PlanChangeAnswer, Providers, RefundAnswer,
    RefundOrder, SessionCreated, SubscriptionChangeAnswer,
};
