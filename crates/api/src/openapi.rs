//! The OpenAPI document, generated from the handlers and wire types.

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, Response, Schema};
use utoipa::{Modify, OpenApi};

use crate::{app_dto, checkout_dto, dto, pricing_dto, routes, webhook_dto};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "service_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Describes the bodies as the server writes them: a 2xx JSON body inside
/// `{"success": true, "data": …, "meta"?}`, and every error status (and `default`, for the
/// statuses an operation does not list) as the error envelope.
struct Envelopes;

/// A schema written as JSON.
fn schema(value: Value) -> RefOr<Schema> {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("a valid schema: {e}"))
}

fn error_content() -> Content {
    Content::new(Some(schema(
        json!({ "$ref": "#/components/schemas/ErrorEnvelope" }),
    )))
}

impl Modify for Envelopes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            "PageMeta".into(),
            schema(json!({
                "type": "object",
                "description": "How a list was paged.",
                "required": ["limit", "offset", "has_more"],
                "properties": {
                    "limit": { "type": "integer", "format": "int64" },
                    "offset": { "type": "integer", "format": "int64" },
                    "has_more": { "type": "boolean" },
                    "next_before": {
                        "type": ["string", "null"],
                        "description": "Keyset-paged lists only: the `before` of the next page, null on the last."
                    }
                }
            })),
        );
        components.schemas.insert(
            "ErrorEnvelope".into(),
            schema(json!({
                "type": "object",
                "description": "Every error: a stable code, a message for people, optional details.",
                "required": ["success", "error"],
                "properties": {
                    "success": { "type": "boolean", "enum": [false] },
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {
                                "type": "string",
                                "enum": crate::error::ErrorCode::ALL
                                    .iter()
                                    .map(|c| c.as_str())
                                    .collect::<Vec<_>>()
                            },
                            "message": { "type": "string" },
                            "details": {
                                "type": "object",
                                "description": "Depends on the code: `fields` (each `{field, message}`) on VALIDATION_ERROR, `requested` and `available` on INSUFFICIENT_CREDITS, …"
                            }
                        }
                    }
                }
            })),
        );
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if status.starts_with('2') {
                        if let Some(content) = response.content.get_mut("application/json") {
                            wrap_success(content);
                        }
                    } else if status.starts_with('4') || status.starts_with('5') {
                        response
                            .content
                            .insert("application/json".into(), error_content());
                    }
                }
                let mut default = Response::new("An error (see `ErrorEnvelope.error.code`)");
                default
                    .content
                    .insert("application/json".into(), error_content());
                responses
                    .entry("default".into())
                    .or_insert(RefOr::T(default));
            }
        }
    }
}

/// Puts a success body's schema under `data` of the success envelope.
fn wrap_success(content: &mut Content) {
    let data = content
        .schema
        .take()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| json!({}));
    content.schema = Some(schema(json!({
        "type": "object",
        "required": ["success", "data"],
        "properties": {
            "success": { "type": "boolean", "enum": [true] },
            "data": data,
            "meta": { "$ref": "#/components/schemas/PageMeta" }
        }
    })));
}

/// Tally's HTTP API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "Self-hosted billing for SaaS and AI products: credits ledger, holds for streamed usage, redemption codes, check-in, plans and coupons, orders and subscriptions paid through Stripe, Creem or a local sandbox, outbound webhooks, service API. \
Every response is an envelope: {\"success\": true, \"data\": …} or {\"success\": false, \"error\": {\"code\", \"message\", \"details\"}}."
    ),
    paths(
        routes::credits::balance,
        routes::credits::transactions,
        routes::checkin::checkin,
        routes::checkin::status,
        routes::admin::transactions,
        routes::admin::manual,
        routes::admin::get_checkin_config,
        routes::admin::put_checkin_config,
        routes::internal::check,
        routes::internal::consume,
        routes::internal::grant,
        routes::usage::check,
        routes::usage::track,
        routes::usage::entitlements,
        routes::pricing::list_features,
        routes::pricing::create_feature,
        routes::pricing::put_feature,
        routes::pricing::list_rates,
        routes::pricing::create_rate,
        routes::pricing::get_free_entitlements,
        routes::pricing::put_free_entitlements,
        routes::holds::reserve,
        routes::holds::capture,
        routes::holds::release,
        routes::holds::get,
        routes::codes::create,
        routes::codes::list,
        routes::codes::redeem,
        routes::catalog::public_plans,
        routes::catalog::list_plans,
        routes::catalog::create_plan,
        routes::catalog::update_plan,
        routes::catalog::list_coupons,
        routes::catalog::create_coupon,
        routes::catalog::update_coupon,
        routes::admin_users::list_users,
        routes::admin_users::get_user,
        routes::admin_users::stats,
        routes::admin_billing::list_orders,
        routes::admin_billing::get_order,
        routes::admin_billing::list_subscriptions,
        routes::admin_billing::get_subscription,
        routes::subscriptions::admin_cancel,
        routes::refunds::refund,
        routes::subscriptions::list,
        routes::subscriptions::cancel,
        routes::subscriptions::resume,
        routes::subscriptions::change_preview,
        routes::subscriptions::change_plan,
        routes::portal::user_session,
        routes::portal::service_session,
        routes::orders::list,
        routes::orders::get,
        routes::orders::subscription,
        routes::orders::portal,
        routes::payment::create_session,
        routes::payment::webhook,
        routes::payment::admin_events,
        routes::payment::sandbox_page,
        routes::payment::sandbox_pay,
        routes::payment::sandbox_cancel,
        routes::webhooks::list_endpoints,
        routes::webhooks::create_endpoint,
        routes::webhooks::get_endpoint,
        routes::webhooks::update_endpoint,
        routes::webhooks::delete_endpoint,
        routes::webhooks::list_deliveries,
        routes::webhooks::get_delivery,
        routes::webhooks::retry_delivery,
        routes::webhooks::get_settings,
        routes::webhooks::put_settings,
        routes::apps::list_apps,
        routes::apps::create_app,
        routes::apps::update_app,
        routes::apps::list_service_keys,
        routes::apps::create_service_key,
        routes::apps::revoke_service_key,
        routes::system::healthz,
        routes::system::readyz,
        routes::system::metrics,
        routes::system::openapi,
    ),
    components(schemas(
        dto::BalanceDto,
        dto::ExpiringDto,
        dto::TransactionDto,
        dto::AdminTransactionDto,
        dto::AdminUserDto,
        dto::AdminUserDetailDto,
        dto::LotDto,
        dto::ActiveHoldDto,
        dto::CreditFiguresDto,
        dto::StatsBucketDto,
        dto::StatsDto,
        dto::CheckinDto,
        dto::CheckinStatusDto,
        dto::CheckinConfigDto,
        dto::ManualAdjustmentRequest,
        dto::CheckRequest,
        dto::CheckDto,
        dto::ConsumeRequest,
        dto::GrantRequest,
        dto::HoldDto,
        dto::ReserveRequestDto,
        dto::CaptureRequestDto,
        dto::CaptureDto,
        dto::CodeBatchDto,
        dto::CodeDto,
        dto::RedeemRequestDto,
        dto::RedeemDto,
        dto::PlanKindDto,
        dto::PlanDto,
        dto::AdminPlanDto,
        dto::CreatePlanRequest,
        dto::UpdatePlanRequest,
        dto::CouponDurationDto,
        dto::CreateCouponRequest,
        dto::UpdateCouponRequest,
        dto::CouponDto,
        pricing_dto::FeatureKindDto,
        app_dto::AppDto,
        app_dto::AppRequest,
        app_dto::AppUpdateRequest,
        app_dto::ServiceKeyDto,
        app_dto::NewServiceKeyDto,
        app_dto::ServiceKeyRequest,
        pricing_dto::FeatureDto,
        pricing_dto::FeatureRequest,
        pricing_dto::TierDto,
        pricing_dto::RateRequest,
        pricing_dto::RateDto,
        pricing_dto::ResetDto,
        pricing_dto::OverageDto,
        pricing_dto::EntitlementDto,
        pricing_dto::EntitlementsRequest,
        pricing_dto::UsageCheckRequest,
        pricing_dto::FeatureCheckDto,
        pricing_dto::UsageCheckDto,
        pricing_dto::UsageTrackRequest,
        pricing_dto::TrackedFeatureDto,
        pricing_dto::UsageTrackDto,
        pricing_dto::EntitlementStatusDto,
        checkout_dto::OrderDto,
        checkout_dto::SubscriptionDto,
        checkout_dto::CancelSubscriptionRequest,
        checkout_dto::RefundOrderRequest,
        checkout_dto::ChangePlanRequest,
        checkout_dto::PlanChangePreviewDto,
        checkout_dto::PlanChangeDto,
        checkout_dto::RefundDto,
        checkout_dto::SubscriptionChangeDto,
        checkout_dto::CreateSessionRequest,
        checkout_dto::SessionDto,
        checkout_dto::PortalRequestDto,
        checkout_dto::UrlDto,
        checkout_dto::WebhookAckDto,
        checkout_dto::BillingEventDto,
        routes::portal::PortalSessionRequest,
        routes::portal::ServicePortalSessionRequest,
        routes::portal::PortalSessionDto,
        checkout_dto::AdminOrderDto,
        checkout_dto::AdminOrderDetailDto,
        checkout_dto::AdminSubscriptionDto,
        webhook_dto::WebhookEndpointDto,
        webhook_dto::WebhookEndpointWithSecretDto,
        webhook_dto::UpdatedWebhookEndpointDto,
        webhook_dto::CreateWebhookEndpointRequest,
        webhook_dto::UpdateWebhookEndpointRequest,
        webhook_dto::DeletedDto,
        webhook_dto::WebhookDeliveryDto,
        webhook_dto::WebhookAttemptDto,
        webhook_dto::WebhookDeliveryDetailDto,
        webhook_dto::WebhookSettingsDto,
    )),
    modifiers(&Security, &Envelopes)
)]
pub struct ApiDoc;

/// The methods the API serves at `path`, read from the document's paths (none: no such route).
/// The console's and the portal's pages are not in the document.
pub fn methods_at(path: &str) -> Vec<&'static str> {
    type Routes = Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>;
    static ROUTES: std::sync::OnceLock<Routes> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        ApiDoc::openapi()
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(method, served)| served.then_some(method))
                .collect();
                (actix_web::dev::ResourceDef::new(template.as_str()), methods)
            })
            .collect()
    });
    let mut methods: Vec<&'static str> = routes
        .iter()
        .filter(|(def, _)| def.is_match(path))
        .flat_map(|(_, methods)| methods.iter().copied())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}
