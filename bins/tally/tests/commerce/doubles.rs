//! Local HTTP doubles of Stripe and Creem: they record every request exactly as Tally sent it
//! and answer like the real APIs (or with the errors and delays a test asks for).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// One request as the double received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Recorded {
    /// The form-encoded body as decoded key/value pairs.
    pub fn form(&self) -> BTreeMap<String, String> {
        form_urlencoded::parse(self.body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The JSON body.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// What the double answers to a request: status, JSON body, delay before answering.
pub type Responder = dyn Fn(&Recorded, usize) -> (u16, Value, Duration) + Send + Sync;

/// A running double.
#[derive(Debug)]
pub struct Double {
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Double {
    /// Starts a double answering with `respond` (given the request and its index).
    pub async fn start(respond: Arc<Responder>) -> Self {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = requests.clone();
        let server = HttpServer::new(move || {
            let (recorded, respond) = (recorded.clone(), respond.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (recorded, respond) = (recorded.clone(), respond.clone());
                async move {
                    let r = Recorded {
                        method: req.method().to_string(),
                        path: req.uri().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let index = {
                        let mut all = recorded.lock().unwrap();
                        all.push(r.clone());
                        all.len() - 1
                    };
                    let (status, body, delay) = respond(&r, index);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .json(body)
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("binding the double");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            requests,
            handle,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests to `path` (ignoring the query).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// A Stripe double answering checkout, portal, coupon, subscription and refund calls like
/// Stripe does.
pub async fn stripe() -> Double {
    Double::start(Arc::new(|r: &Recorded, i: usize| {
        let ok = Duration::ZERO;
        match r.path.as_str() {
            "/v1/checkout/sessions" => {
                let form = r.form();
                if form.get("line_items[0][price]").map(String::as_str) == Some("price_broken") {
                    return (
                        400,
                        json!({"error": {"type": "invalid_request_error",
                            "message": "No such price: 'price_broken'", "param": "line_items[0][price]"}}),
                        ok,
                    );
                }
                if form.get("line_items[0][price]").map(String::as_str) == Some("price_slow") {
                    return (200, json!({}), Duration::from_secs(30));
                }
                let id = format!("cs_test_{i}");
                (
                    200,
                    json!({"id": id, "object": "checkout.session", "status": "open",
                        "mode": form.get("mode"), "url": format!("https://checkout.stripe.com/c/pay/{id}")}),
                    ok,
                )
            }
            "/v1/coupons" => (
                200,
                json!({"id": format!("stripe_coupon_{i}"), "object": "coupon", "valid": true}),
                ok,
            ),
            "/v1/billing_portal/sessions" => (
                200,
                json!({"id": "bps_1", "object": "billing_portal.session",
                    "url": "https://billing.stripe.com/p/session/test_1"}),
                ok,
            ),
            "/v1/refunds" => {
                let form = r.form();
                match form.get("payment_intent").map(String::as_str) {
                    Some("pi_refunded") => (
                        400,
                        json!({"error": {"type": "invalid_request_error",
                            "code": "charge_already_refunded",
                            "message": "Charge ch_x has already been refunded."}}),
                        ok,
                    ),
                    Some("pi_down") => (
                        500,
                        json!({"error": {"type": "api_error", "message": "An error occurred."}}),
                        ok,
                    ),
                    _ => (
                        200,
                        json!({"id": format!("re_{i}"), "object": "refund", "status": "succeeded",
                            "amount": form.get("amount").and_then(|a| a.parse::<i64>().ok())}),
                        ok,
                    ),
                }
            }
            path if path.starts_with("/v1/subscriptions/") => {
                let id = path.trim_start_matches("/v1/subscriptions/");
                if id == "sub_gone" {
                    return (
                        404,
                        json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
                            "message": "No such subscription: 'sub_gone'"}}),
                        ok,
                    );
                }
                (
                    200,
                    json!({"id": id, "object": "subscription", "items": {"object": "list",
                        "data": [{"id": format!("si_{id}"), "object": "subscription_item"}]}}),
                    ok,
                )
            }
            _ => (
                404,
                json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}),
                ok,
            ),
        }
    }))
    .await
}

/// A Creem double answering checkout, portal, discount, subscription and refund calls like
/// Creem does.
pub async fn creem() -> Double {
    Double::start(Arc::new(|r: &Recorded, i: usize| {
        let ok = Duration::ZERO;
        match r.path.as_str() {
            "/v1/checkouts" => {
                let body = r.json();
                let id = format!("ch_{i}");
                (
                    200,
                    json!({"id": id, "object": "checkout", "status": "pending", "mode": "test",
                        "product": body["product_id"], "request_id": body["request_id"],
                        "checkout_url": format!("https://checkout.creem.io/{id}")}),
                    ok,
                )
            }
            "/v1/customers/billing" => (
                200,
                json!({"customer_portal_link": "https://creem.io/my-orders/login/xyz"}),
                ok,
            ),
            path if path.starts_with("/v1/subscriptions/") => {
                let id = path.trim_start_matches("/v1/subscriptions/");
                let id = id.split('/').next().unwrap_or_default();
                (200, json!({"id": id, "object": "subscription", "status": "active"}), ok)
            }
            "/v1/refunds" => {
                let body = r.json();
                if body["transaction_id"] == "tran_refused" {
                    return (
                        400,
                        json!({"trace_id": "t", "status": 400, "error": "Bad Request",
                            "message": ["Transaction is already refunded"]}),
                        ok,
                    );
                }
                (
                    200,
                    json!({"id": format!("ref_{i}"), "object": "refund", "status": "pending",
                        "transaction": body["transaction_id"]}),
                    ok,
                )
            }
            "/v1/discounts" => {
                let body = r.json();
                (
                    200,
                    json!({"id": format!("dis_{i}"), "object": "discount", "status": "active",
                        "code": body["code"]}),
                    ok,
                )
            }
            _ => (
                404,
                json!({"trace_id": "t", "status": 404, "error": "Not Found", "message": ["not found"]}),
                ok,
            ),
        }
    }))
    .await
}

/// `Stripe-Signature` for `body` at `t` under `secret`.
pub fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", hmac_hex(secret, &format!("{t}.{body}")))
}

/// Hex HMAC-SHA256.
pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
