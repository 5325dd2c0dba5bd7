//! The checkout service: validates purchases against the catalog, opens provider sessions,
//! and hands verified provider events to the repository.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use serde::Serialize;
use tally_catalog::{Catalog, Coupon, Plan};
use tally_kernel::Clock;
use time::OffsetDateTime;

use crate::change::{self, PlanChangeQuote, price};
use crate::provider::CouponRequest;
use crate::{
    AppOrderQuery, AppSubscriptionQuery, BillingEvent, Channel, CheckoutError, CheckoutMode,
    CheckoutRepository, CheckoutRequest, EventOutcome, EventQuery, Interval, NewOrder, Order,
    OrderQuery, OrderStatus, OrderType, PaymentProvider, PlanChangeRequest, PortalRequest,
    ProviderError, RefundRequest, SessionAttached, Subscription, SubscriptionChange,
    SubscriptionRequest, WebhookHeaders, plan,
};

/// The `Idempotency-Key` header's rule: 1–255 characters.
fn check_idempotency_key(key: &str) -> Result<(), CheckoutError> {
    if key.is_empty() || key.len() > 255 {
        return Err(CheckoutError::invalid(
            "Idempotency-Key",
            "must be 1-255 characters",
        ));
    }
    Ok(())
}

/// A provider call's failure as checkout reports it: an unconfigured channel, or the provider's
/// own failure (its message; keys are redacted by the providers).
fn provider_failed(e: ProviderError) -> CheckoutError {
    match e {
        ProviderError::NotConfigured(c) => CheckoutError::ProviderNotConfigured(c.to_string()),
        e => CheckoutError::Provider(e.to_string()),
    }
}

/// The configured providers, by channel. A channel that is absent is not configured.
#[derive(Debug, Clone, Default)]
pub struct Providers(HashMap<Channel, Arc<dyn PaymentProvider>>);

impl Providers {
    /// Adds a provider under its own channel.
    pub fn with(mut self, provider: Arc<dyn PaymentProvider>) -> Self {
        self.0.insert(provider.channel(), provider);
        self
    }

    /// The provider of a channel, if configured.
    pub fn get(&self, channel: Channel) -> Option<&Arc<dyn PaymentProvider>> {
        self.0.get(&channel)
    }

    /// The configured channels, in documentation order.
    pub fn channels(&self) -> Vec<Channel> {
        Channel::ALL
            .iter()
            .copied()
            .filter(|c| self.0.contains_key(c))
            .collect()
    }
}

/// Settings that are not per provider.
#[derive(Debug, Clone, Default)]
pub struct CheckoutConfig {
    /// Hosts `success_url`, `cancel_url` and `return_url` may point at (exact, case-insensitive;
    /// `*.example.com` allows sub-domains). Empty: every redirect URL is refused.
    pub allowed_redirect_hosts: Vec<String>,
}

/// A request to buy a plan or a pack, as the API received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateSession {
    /// The payment channel.
    pub channel: Channel,
    /// A subscription or a credit pack.
    pub order_type: OrderType,
    /// Plan or pack id.
    pub plan_id: String,
    /// The billing interval (subscriptions only; default a month).
    pub interval: Option<Interval>,
    /// Coupon code.
    pub coupon_code: Option<String>,
    /// Where the provider sends the customer after paying.
    pub success_url: String,
    /// Where the provider sends the customer who gives up.
    pub cancel_url: Option<String>,
}

/// An opened session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionCreated {
    /// Tally order id.
    pub order_id: String,
    /// Provider session id.
    pub session_id: String,
    /// Where to send the customer.
    pub url: String,
}

/// What a cancel or resume asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChangeAnswer {
    /// What was asked.
    pub change: SubscriptionChange,
    /// Whether the provider was asked (`false`: the subscription already was as asked).
    pub requested: bool,
    /// The subscription as Tally knows it now (before the provider's event).
    pub subscription: Subscription,
}

/// What a plan change asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChangeAnswer {
    /// What the switch does, as quoted when it was asked.
    pub quote: PlanChangeQuote,
    /// The subscription as Tally knows it now (before the provider's event).
    pub subscription: Subscription,
    /// What the provider was asked.
    pub request: PlanChangeRequest,
}

/// An operator's refund of an order, as the API received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundOrder {
    /// Minor units; `None` refunds all that is left of the payment.
    pub amount_minor: Option<i64>,
    /// Why, for people.
    pub reason: Option<String>,
}

/// What a refund asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAnswer {
    /// The order as Tally knows it now (before the provider's refund event).
    pub order: Order,
    /// The payment refunded.
    pub payment_id: String,
    /// What the provider was asked.
    pub request: RefundRequest,
}

/// Orders, subscriptions, sessions and provider events of every app.
#[derive(Clone)]
pub struct Checkout {
    repo: Arc<dyn CheckoutRepository>,
    catalog: Catalog,
    providers: Providers,
    config: CheckoutConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("repo", &self.repo)
            .field("providers", &self.providers.channels())
            .finish_non_exhaustive()
    }
}

const MAX_URL_LEN: usize = 2048;
const MAX_PAGE: i64 = 1000;

impl Checkout {
    /// A checkout service over `repo`, pricing with `catalog`, paying through `providers`.
    pub fn new(
        repo: Arc<dyn CheckoutRepository>,
        catalog: Catalog,
        providers: Providers,
        config: CheckoutConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            catalog,
            providers,
            config,
            clock,
        }
    }

    /// The current instant on the service's clock (whole microseconds).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The configured channels.
    pub fn channels(&self) -> Vec<Channel> {
        self.providers.channels()
    }

    /// Validates the purchase, stores a pending order, opens the provider session and answers
    /// where to send the customer. With an idempotency key, a repeat answers the first result.
    pub async fn create_session(
        &self,
        app: &str,
        user: &str,
        request: CreateSession,
        idempotency_key: Option<String>,
    ) -> Result<SessionCreated, CheckoutError> {
        let (channel, order_type) = (request.channel, request.order_type);
        let interval = match (order_type, request.interval) {
            (OrderType::Subscription, interval) => Some(interval.unwrap_or(Interval::Month)),
            (OrderType::Credits, None) => None,
            (OrderType::Credits, Some(_)) => {
                return Err(CheckoutError::invalid(
                    "interval",
                    "a credit pack is paid once; leave interval out",
                ));
            }
        };
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
        }
        self.check_redirect("success_url", &request.success_url)?;
        if let Some(url) = &request.cancel_url {
            self.check_redirect("cancel_url", url)?;
        }
        let provider = self
            .providers
            .get(channel)
            .cloned()
            .ok_or_else(|| CheckoutError::ProviderNotConfigured(channel.to_string()))?;
        let plan = self
            .catalog
            .plan(app, &request.plan_id)
            .await?
            .ok_or(CheckoutError::PlanNotFound)?;
        let priced = price(&plan, order_type, interval, channel)?;
        if order_type == OrderType::Subscription {
            let current = self
                .repo
                .subscription(app.to_owned(), user.to_owned())
                .await?;
            plan::check_can_subscribe(current.as_ref())?;
        }
        let coupon = match request.coupon_code.as_deref() {
            None => None,
            Some(code) => Some(self.usable_coupon(app, code, &plan).await?),
        };
        let discount_minor = coupon
            .as_ref()
            .map_or(0, |c| discount(c, priced.amount_minor));
        let now = self.now();
        let order = Order {
            id: new_order_id(),
            app: app.to_owned(),
            user: user.to_owned(),
            order_type,
            status: OrderStatus::Pending,
            plan_id: plan.id.clone(),
            interval,
            channel,
            amount_minor: priced.amount_minor,
            currency: plan.currency.clone(),
            discount_minor,
            coupon_code: coupon.as_ref().map(|c| c.code.clone()),
            credits: plan.credits_included,
            credits_expire_days: plan.credits_expire_days,
            provider_session_id: None,
            checkout_url: None,
            provider_customer_id: None,
            provider_subscription_id: None,
            failure_reason: None,
            created_at: now,
            completed_at: None,
            updated_at: now,
        };
        let request_hash = request_hash(&request);
        let (stored, stored_hash) = self
            .repo
            .insert_order(NewOrder {
                order: order.clone(),
                idempotency_key,
                request_hash: request_hash.clone(),
            })
            .await?;
        if stored.id != order.id {
            return replay(stored, &stored_hash, &request_hash);
        }
        match self
            .open_session(
                &*provider,
                &order,
                &plan,
                priced.price_ref,
                coupon.as_ref(),
                (&request.success_url, request.cancel_url.as_deref()),
            )
            .await
        {
            Ok(session) => {
                self.repo
                    .attach_session(SessionAttached {
                        order_id: order.id.clone(),
                        session_id: session.session_id.clone(),
                        url: session.url.clone(),
                        now: self.now(),
                    })
                    .await?;
                Ok(SessionCreated {
                    order_id: order.id,
                    session_id: session.session_id,
                    url: session.url,
                })
            }
            Err(e) => {
                let reason = e.to_string();
                self.repo
                    .fail_order(order.id.clone(), reason.clone(), self.now())
                    .await?;
                Err(provider_failed(e))
            }
        }
    }

    async fn open_session(
        &self,
        provider: &dyn PaymentProvider,
        order: &Order,
        plan: &Plan,
        price_ref: String,
        coupon: Option<&Coupon>,
        (success_url, cancel_url): (&str, Option<&str>),
    ) -> Result<crate::CheckoutSession, ProviderError> {
        let discount = match coupon {
            None => None,
            Some(c) => Some(self.provider_coupon(provider, order, c, &price_ref).await?),
        };
        let customer_id = self
            .repo
            .customer(order.app.clone(), order.user.clone(), order.channel)
            .await
            .map_err(|e| ProviderError::Upstream(format!("customer lookup failed: {e}")))?;
        provider
            .create_checkout(&CheckoutRequest {
                order_id: order.id.clone(),
                app: order.app.clone(),
                user: order.user.clone(),
                mode: match order.order_type {
                    OrderType::Subscription => CheckoutMode::Subscription,
                    OrderType::Credits => CheckoutMode::Payment,
                },
                price_ref,
                success_url: success_url.to_owned(),
                cancel_url: cancel_url.map(str::to_owned),
                customer_id,
                discount,
                idempotency_key: format!("tally-checkout-{}", order.id),
                amount_minor: order.amount_minor - order.discount_minor,
                currency: order.currency.clone(),
                plan_name: plan.name.clone(),
                credits: order.credits,
                trial_days: plan
                    .trial_days
                    .filter(|_| order.order_type == OrderType::Subscription),
            })
            .await
    }

    async fn provider_coupon(
        &self,
        provider: &dyn PaymentProvider,
        order: &Order,
        coupon: &Coupon,
        price_ref: &str,
    ) -> Result<String, ProviderError> {
        let storage =
            |e: CheckoutError| ProviderError::Upstream(format!("coupon lookup failed: {e}"));
        if let Some(id) = self
            .repo
            .provider_coupon(
                order.app.clone(),
                coupon.code.clone(),
                order.channel,
                price_ref.to_owned(),
            )
            .await
            .map_err(storage)?
        {
            return Ok(id);
        }
        let created = provider
            .create_coupon(&CouponRequest {
                app: order.app.clone(),
                code: coupon.code.clone(),
                percent_off: coupon.percent_off,
                amount_off: coupon.amount_off,
                currency: coupon.currency.clone(),
                duration: coupon.duration,
                duration_months: coupon.duration_months,
                price_ref: price_ref.to_owned(),
                idempotency_key: format!(
                    "tally-coupon-{}-{}-{}-{}",
                    order.app, coupon.id, order.channel, price_ref
                ),
            })
            .await?;
        self.repo
            .put_provider_coupon(
                order.app.clone(),
                coupon.code.clone(),
                order.channel,
                price_ref.to_owned(),
                created,
                self.now(),
            )
            .await
            .map_err(storage)
    }

    async fn usable_coupon(
        &self,
        app: &str,
        code: &str,
        plan: &Plan,
    ) -> Result<Coupon, CheckoutError> {
        let coupon = self
            .catalog
            .coupon(app, code)
            .await?
            .ok_or_else(|| CheckoutError::CouponInvalid("unknown coupon code".into()))?;
        let now = self.now();
        if !coupon.active {
            return Err(CheckoutError::CouponInvalid("coupon is not active".into()));
        }
        if coupon.expires_at.is_some_and(|at| at <= now) {
            return Err(CheckoutError::CouponInvalid("coupon has expired".into()));
        }
        if coupon
            .max_redemptions
            .is_some_and(|max| coupon.times_redeemed >= max)
        {
            return Err(CheckoutError::CouponInvalid(
                "coupon has reached its maximum redemptions".into(),
            ));
        }
        if !coupon.plan_ids.is_empty() && !coupon.plan_ids.contains(&plan.id) {
            return Err(CheckoutError::CouponInvalid(
                "coupon does not apply to this plan".into(),
            ));
        }
        if coupon
            .currency
            .as_ref()
            .is_some_and(|c| c != &plan.currency)
        {
            return Err(CheckoutError::CouponInvalid(format!(
                "coupon is in {}, the plan in {}",
                coupon.currency.as_deref().unwrap_or_default(),
                plan.currency
            )));
        }
        Ok(coupon)
    }

    /// Refuses a redirect URL that is not absolute http(s) on an allowed host.
    pub fn check_redirect(&self, field: &str, url: &str) -> Result<(), CheckoutError> {
        if url.len() > MAX_URL_LEN {
            return Err(CheckoutError::invalid(
                field,
                "must be at most 2048 characters",
            ));
        }
        let host = redirect_host(url)
            .ok_or_else(|| CheckoutError::invalid(field, "must be an absolute http(s) URL"))?;
        let allowed = self.config.allowed_redirect_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(base) => host.ends_with(&format!(".{base}")),
                None => host == pattern,
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(CheckoutError::invalid(
                field,
                format!("host '{host}' is not on the allowed redirect hosts"),
            ))
        }
    }

    /// Opens a billing-portal session for the user's provider customer.
    pub async fn portal(
        &self,
        app: &str,
        user: &str,
        return_url: Option<String>,
    ) -> Result<String, CheckoutError> {
        if let Some(url) = &return_url {
            self.check_redirect("return_url", url)?;
        }
        let preferred = self
            .repo
            .subscription(app.to_owned(), user.to_owned())
            .await?
            .map(|s| s.channel);
        let mut channels: Vec<Channel> = preferred.into_iter().collect();
        channels.extend(
            Channel::ALL
                .iter()
                .copied()
                .filter(|c| Some(*c) != preferred),
        );
        for channel in channels {
            let Some(provider) = self.providers.get(channel) else {
                continue;
            };
            let customer = self
                .repo
                .customer(app.to_owned(), user.to_owned(), channel)
                .await?;
            if let Some(customer_id) = customer {
                return provider
                    .create_portal(&PortalRequest {
                        customer_id,
                        return_url,
                    })
                    .await
                    .map_err(provider_failed);
            }
        }
        Err(CheckoutError::NoCustomer(
            "no billing customer yet: the user has not completed a checkout".into(),
        ))
    }

    /// Asks the provider to make `change` to the user's live subscription. The answer says what
    /// was asked; the subscription itself changes when the provider's event arrives.
    pub async fn change_subscription(
        &self,
        app: &str,
        user: &str,
        change: SubscriptionChange,
        idempotency_key: Option<String>,
    ) -> Result<SubscriptionChangeAnswer, CheckoutError> {
        let current = self
            .repo
            .subscription(app.to_owned(), user.to_owned())
            .await?;
        self.request_change(current, change, idempotency_key).await
    }

    /// Like [`Checkout::change_subscription`], for an operator naming the subscription by id.
    pub async fn change_app_subscription(
        &self,
        app: &str,
        id: i64,
        change: SubscriptionChange,
        idempotency_key: Option<String>,
    ) -> Result<SubscriptionChangeAnswer, CheckoutError> {
        let Some(current) = self.repo.app_subscription(app.to_owned(), id).await? else {
            return Err(CheckoutError::NoActiveSubscription(format!(
                "no subscription {id} in this app"
            )));
        };
        self.request_change(Some(current), change, idempotency_key)
            .await
    }

    async fn request_change(
        &self,
        current: Option<Subscription>,
        change: SubscriptionChange,
        idempotency_key: Option<String>,
    ) -> Result<SubscriptionChangeAnswer, CheckoutError> {
        let ask = plan::plan_subscription_request(current.as_ref(), change)?;
        // The plan refuses a missing subscription.
        let Some(subscription) = current else {
            return Err(CheckoutError::NoActiveSubscription(
                "no subscription".into(),
            ));
        };
        if ask == plan::SubscriptionAsk::Unchanged {
            return Ok(SubscriptionChangeAnswer {
                change,
                requested: false,
                subscription,
            });
        }
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
        }
        let provider = self.providers.get(subscription.channel).ok_or_else(|| {
            CheckoutError::ProviderNotConfigured(subscription.channel.to_string())
        })?;
        let idempotency_key = idempotency_key.unwrap_or_else(|| {
            format!(
                "tally-{}-{change}-{:016x}",
                subscription.provider_subscription_id,
                rand::thread_rng().r#gen::<u64>()
            )
        });
        provider
            .change_subscription(&SubscriptionRequest {
                subscription_id: subscription.provider_subscription_id.clone(),
                change,
                idempotency_key,
            })
            .await
            .map_err(provider_failed)?;
        Ok(SubscriptionChangeAnswer {
            change,
            requested: true,
            subscription,
        })
    }

    /// What switching the user's live subscription to `plan_id` (for `interval`, `None`: the
    /// same) would do now: the direction, the estimated charge and the credits.
    pub async fn preview_plan_change(
        &self,
        app: &str,
        user: &str,
        plan_id: &str,
        interval: Option<Interval>,
    ) -> Result<(PlanChangeQuote, Subscription), CheckoutError> {
        let current = self
            .repo
            .subscription(app.to_owned(), user.to_owned())
            .await?;
        let target = self
            .catalog
            .plan(app, plan_id)
            .await?
            .ok_or(CheckoutError::PlanNotFound)?;
        let current_plan = match &current {
            Some(sub) => self.catalog.plan(app, &sub.plan_id).await?,
            None => None,
        };
        let quote = change::quote_plan_change(
            current.as_ref(),
            current_plan.as_ref(),
            &target,
            interval,
            self.now(),
        )?;
        // The quote refuses a missing subscription.
        let sub =
            current.ok_or_else(|| CheckoutError::NoActiveSubscription("no subscription".into()))?;
        Ok((quote, sub))
    }

    /// Asks the provider to bill the user's live subscription at `plan_id`'s price: now, pro
    /// rata, for an upgrade; from the next period for a downgrade. The subscription switches,
    /// and any credits come, when the provider's event arrives.
    pub async fn change_plan(
        &self,
        app: &str,
        user: &str,
        plan_id: &str,
        interval: Option<Interval>,
        idempotency_key: Option<String>,
    ) -> Result<PlanChangeAnswer, CheckoutError> {
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
        }
        let (quote, subscription) = self
            .preview_plan_change(app, user, plan_id, interval)
            .await?;
        let provider = self.providers.get(subscription.channel).ok_or_else(|| {
            CheckoutError::ProviderNotConfigured(subscription.channel.to_string())
        })?;
        let request = PlanChangeRequest {
            subscription_id: subscription.provider_subscription_id.clone(),
            price_ref: quote.price_ref.clone(),
            prorate: quote.direction == change::Direction::Upgrade,
            idempotency_key: idempotency_key.unwrap_or_else(|| {
                format!(
                    "tally-{}-plan-{}-{:016x}",
                    subscription.provider_subscription_id,
                    quote.plan_id,
                    rand::thread_rng().r#gen::<u64>()
                )
            }),
        };
        provider
            .change_plan(&request)
            .await
            .map_err(provider_failed)?;
        Ok(PlanChangeAnswer {
            quote,
            subscription,
            request,
        })
    }

    /// Asks the order's provider to refund its payment (all that is left, or `refund.amount_minor`).
    /// The order and the credits change when the provider's refund event arrives, once, as for
    /// a refund made in the provider's dashboard.
    pub async fn refund_order(
        &self,
        app: &str,
        order_id: &str,
        refund: RefundOrder,
        idempotency_key: Option<String>,
    ) -> Result<RefundAnswer, CheckoutError> {
        let order = self
            .repo
            .order(order_id.to_owned())
            .await?
            .filter(|o| o.app == app)
            .ok_or(CheckoutError::OrderNotFound)?;
        let payment = self
            .repo
            .order_payment(app.to_owned(), order.id.clone())
            .await?;
        let ask = plan::plan_refund_request(
            &order,
            payment.as_ref(),
            refund.amount_minor,
            refund.reason.as_deref(),
        )?;
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
        }
        let provider = self
            .providers
            .get(order.channel)
            .ok_or_else(|| CheckoutError::ProviderNotConfigured(order.channel.to_string()))?;
        let request = RefundRequest {
            order_id: order.id.clone(),
            app: order.app.clone(),
            payment_refs: ask.payment_refs,
            amount_minor: ask.amount_minor,
            full: ask.full,
            reason: refund.reason,
            idempotency_key: idempotency_key.unwrap_or_else(|| {
                format!(
                    "tally-refund-{}-{:016x}",
                    order.id,
                    rand::thread_rng().r#gen::<u64>()
                )
            }),
        };
        provider.refund(&request).await.map_err(|e| match e {
            ProviderError::Unsupported(m) => CheckoutError::NotRefundable(m),
            e => provider_failed(e),
        })?;
        Ok(RefundAnswer {
            order,
            payment_id: ask.payment_id,
            request,
        })
    }

    /// Verifies and applies one provider webhook delivery.
    pub async fn handle_webhook(
        &self,
        channel: Channel,
        headers: &WebhookHeaders,
        body: &[u8],
    ) -> Result<EventOutcome, CheckoutError> {
        let provider = self
            .providers
            .get(channel)
            .ok_or_else(|| CheckoutError::ProviderNotConfigured(channel.to_string()))?;
        let event = provider
            .parse_webhook(headers, body, self.now())
            .map_err(|e| match e {
                ProviderError::NotConfigured(c) => {
                    CheckoutError::ProviderNotConfigured(c.to_string())
                }
                ProviderError::InvalidSignature(m) => CheckoutError::InvalidSignature(m),
                ProviderError::Malformed(m) => CheckoutError::invalid("body", m),
                ProviderError::Upstream(m) | ProviderError::Unsupported(m) => {
                    CheckoutError::Provider(m)
                }
            })?;
        let payload = String::from_utf8_lossy(body).into_owned();
        self.repo.apply_event(event, payload, self.now()).await
    }

    /// One of the user's orders; another user's order is not found.
    pub async fn order(&self, app: &str, user: &str, id: &str) -> Result<Order, CheckoutError> {
        self.repo
            .order(id.to_owned())
            .await?
            .filter(|o| o.app == app && o.user == user)
            .ok_or(CheckoutError::OrderNotFound)
    }

    /// Any order by id (the sandbox page looks orders up by session).
    pub async fn order_by_id(&self, id: &str) -> Result<Option<Order>, CheckoutError> {
        self.repo.order(id.to_owned()).await
    }

    /// A page of the user's orders, newest first.
    pub async fn orders(
        &self,
        app: &str,
        user: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Order>, CheckoutError> {
        check_page(limit, offset)?;
        self.repo
            .orders(OrderQuery {
                app: app.to_owned(),
                user: user.to_owned(),
                limit,
                offset,
            })
            .await
    }

    /// The user's current subscription, if any.
    pub async fn subscription(
        &self,
        app: &str,
        user: &str,
    ) -> Result<Option<Subscription>, CheckoutError> {
        self.repo
            .subscription(app.to_owned(), user.to_owned())
            .await
    }

    /// A page of the app's orders for its operators.
    pub async fn app_orders(&self, query: AppOrderQuery) -> Result<Vec<Order>, CheckoutError> {
        check_page(query.limit, 0)?;
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from >= to
        {
            return Err(CheckoutError::invalid("to", "must be later than from"));
        }
        self.repo.app_orders(query).await
    }

    /// One order of the app, with the provider events traced to it, oldest first.
    pub async fn app_order(
        &self,
        app: &str,
        id: &str,
    ) -> Result<(Order, Vec<BillingEvent>), CheckoutError> {
        let order = self
            .repo
            .order(id.to_owned())
            .await?
            .filter(|o| o.app == app)
            .ok_or(CheckoutError::OrderNotFound)?;
        let events = self
            .repo
            .order_events(app.to_owned(), order.id.clone())
            .await?;
        Ok((order, events))
    }

    /// A page of the app's subscriptions for its operators.
    pub async fn app_subscriptions(
        &self,
        query: AppSubscriptionQuery,
    ) -> Result<Vec<Subscription>, CheckoutError> {
        check_page(query.limit, 0)?;
        self.repo.app_subscriptions(query).await
    }

    /// One subscription of the app by id, if any.
    pub async fn app_subscription(
        &self,
        app: &str,
        id: i64,
    ) -> Result<Option<Subscription>, CheckoutError> {
        self.repo.app_subscription(app.to_owned(), id).await
    }

    /// A page of received provider events (admin).
    pub async fn events(
        &self,
        app: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<BillingEvent>, CheckoutError> {
        check_page(limit, offset)?;
        self.repo
            .events(EventQuery {
                app: app.to_owned(),
                limit,
                offset,
            })
            .await
    }
}

/// The coupon's discount on `amount_minor`, never more than the amount.
fn discount(coupon: &Coupon, amount_minor: i64) -> i64 {
    let off = match (coupon.percent_off, coupon.amount_off) {
        (Some(pct), _) => amount_minor * pct / 100,
        (None, Some(off)) => off,
        (None, None) => 0,
    };
    off.clamp(0, amount_minor)
}

fn replay(
    stored: Order,
    stored_hash: &str,
    request_hash: &str,
) -> Result<SessionCreated, CheckoutError> {
    if stored_hash != request_hash {
        return Err(CheckoutError::IdempotencyKeyReused);
    }
    match (
        stored.status,
        stored.provider_session_id,
        stored.checkout_url,
    ) {
        (_, Some(session_id), Some(url)) => Ok(SessionCreated {
            order_id: stored.id,
            session_id,
            url,
        }),
        (OrderStatus::Failed, _, _) => Err(CheckoutError::Provider(
            stored
                .failure_reason
                .unwrap_or_else(|| "the provider refused the session".into()),
        )),
        _ => Err(CheckoutError::IdempotencyInProgress),
    }
}

fn request_hash(request: &CreateSession) -> String {
    serde_json::to_string(request).unwrap_or_default()
}

/// `ord_` + 24 hex digits that sort in creation order: wall-clock microseconds, a per-process
/// counter, then random bits (so that ids of orders created in the same instant still sort).
fn new_order_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    let random: u32 = rand::thread_rng().r#gen::<u32>() & 0xff_ffff;
    format!(
        "ord_{:014x}{count:04x}{random:06x}",
        micros & 0xff_ffff_ffff_ffff
    )
}

/// The lower-case host of an absolute http(s) URL, without userinfo or port.
fn redirect_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

fn check_page(limit: i64, offset: i64) -> Result<(), CheckoutError> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(CheckoutError::invalid(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    if offset < 0 {
        return Err(CheckoutError::invalid("offset", "must be 0 or more"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{discount, price, redirect_host};
    use crate::{Channel, CheckoutError, Interval, OrderType};
    use tally_catalog::{Coupon, CouponDuration, Plan, PlanKind};
    use time::OffsetDateTime;

    fn plan(kind: PlanKind) -> Plan {
        let sub = kind == PlanKind::Subscription;
        Plan {
            id: "1".into(),
            app: "default".into(),
            name: "Pro".into(),
            description: String::new(),
            kind,
            currency: "usd".into(),
            price_monthly: sub.then_some(999),
            price_yearly: None,
            price: (!sub).then_some(499),
            credits_included: 1000,
            features: vec![],
            stripe_price_id_monthly: sub.then(|| "price_m".into()),
            stripe_price_id_yearly: None,
            stripe_price_id: (!sub).then(|| "price_p".into()),
            creem_product_id_monthly: None,
            creem_product_id_yearly: None,
            creem_product_id: None,
            active: true,
            sort_order: 0,
            credits_expire_days: None,
            trial_days: None,
            trial_credits: 0,
            created_by: "root".into(),
            updated_by: "root".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn coupon(percent_off: Option<i64>, amount_off: Option<i64>) -> Coupon {
        Coupon {
            id: "1".into(),
            app: "default".into(),
            code: "C".into(),
            percent_off,
            amount_off,
            currency: amount_off.map(|_| "usd".into()),
            duration: CouponDuration::Once,
            duration_months: None,
            max_redemptions: None,
            times_redeemed: 0,
            expires_at: None,
            plan_ids: vec![],
            active: true,
            created_by: "root".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn prices_follow_kind_interval_and_channel() {
        let sub = plan(PlanKind::Subscription);
        let p = price(
            &sub,
            OrderType::Subscription,
            Some(Interval::Month),
            Channel::Stripe,
        )
        .unwrap();
        assert_eq!((p.amount_minor, p.price_ref.as_str()), (999, "price_m"));
        let no_yearly = price(
            &sub,
            OrderType::Subscription,
            Some(Interval::Year),
            Channel::Stripe,
        );
        assert!(matches!(
            no_yearly,
            Err(CheckoutError::PlanNotPurchasable(_))
        ));
        let no_creem = price(
            &sub,
            OrderType::Subscription,
            Some(Interval::Month),
            Channel::Creem,
        );
        assert!(matches!(
            no_creem,
            Err(CheckoutError::PlanNotPurchasable(_))
        ));
        let wrong_type = price(&sub, OrderType::Credits, None, Channel::Stripe);
        assert!(matches!(wrong_type, Err(CheckoutError::Validation(_))));
        let sandbox = price(
            &sub,
            OrderType::Subscription,
            Some(Interval::Month),
            Channel::Sandbox,
        );
        assert_eq!(
            sandbox.unwrap().amount_minor,
            999,
            "the sandbox needs no provider id"
        );
        let pack = plan(PlanKind::CreditPack);
        assert_eq!(
            price(&pack, OrderType::Credits, None, Channel::Stripe)
                .unwrap()
                .price_ref,
            "price_p"
        );
        let mut inactive = pack.clone();
        inactive.active = false;
        assert!(matches!(
            price(&inactive, OrderType::Credits, None, Channel::Sandbox),
            Err(CheckoutError::PlanNotPurchasable(_))
        ));
    }

    #[test]
    fn discounts_round_down_and_never_exceed_the_price() {
        assert_eq!(discount(&coupon(Some(50), None), 999), 499);
        assert_eq!(discount(&coupon(Some(100), None), 999), 999);
        assert_eq!(discount(&coupon(None, Some(300)), 999), 300);
        assert_eq!(discount(&coupon(None, Some(5000)), 999), 999);
    }

    #[test]
    fn redirect_hosts_are_parsed_strictly() {
        assert_eq!(
            redirect_host("https://App.Example/x?y").as_deref(),
            Some("app.example")
        );
        assert_eq!(
            redirect_host("http://localhost:3000/").as_deref(),
            Some("localhost")
        );
        assert_eq!(redirect_host("https://[::1]:8/").as_deref(), Some("::1"));
        assert_eq!(redirect_host("https://evil.example@app.example/"), None);
        assert_eq!(redirect_host("javascript:alert(1)"), None);
        assert_eq!(redirect_host("//app.example/"), None);
        assert_eq!(redirect_host("https:///path"), None);
    }

    #[test]
    fn order_ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..50).map(|_| super::new_order_id()).collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 28 && id.starts_with("ord_"))
        );
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
    }
}
