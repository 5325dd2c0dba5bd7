//! What each HTTP scenario sends, and the users and tokens it sends it for.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, HeaderValue};
use hyper::{Method, Request};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::load::{Outcome, Rng};

/// The user id of user `i`; the same in the HTTP seed and the bulk preload.
pub fn user_id(i: usize) -> String {
    format!("user-{i:05}")
}

/// The user every `consume-hot` request charges.
pub const HOT_USER: usize = 0;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    exp: i64,
}

fn bearer(key: &EncodingKey, sub: &str, role: Option<&str>) -> Result<HeaderValue, String> {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 24 * 3600;
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims { sub, role, exp },
        key,
    )
    .map_err(|e| format!("signing a token: {e}"))?;
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| format!("token header: {e}"))
}

/// An HS256 bearer token of an admin of the default app.
pub fn admin_token(secret: &str) -> Result<HeaderValue, String> {
    bearer(
        &EncodingKey::from_secret(secret.as_bytes()),
        "bench-admin",
        Some("admin"),
    )
}

/// An HS256 bearer token of `user`, ready to send.
pub fn user_token(secret: &str, user: &str) -> Result<HeaderValue, String> {
    bearer(&EncodingKey::from_secret(secret.as_bytes()), user, None)
}

/// What the `lots` scenario does to one account.
#[derive(Debug, Clone, Copy)]
pub enum AccountOp {
    /// `GET /credits/balance` as the user.
    Balance,
    /// `POST /internal/credits/consume` of 1 credit.
    Consume,
    /// `POST /internal/credits/grant` of 1 credit (a lot that never expires).
    Grant,
    /// `POST /internal/credits/holds` of 1 credit for an hour.
    Hold,
}

impl AccountOp {
    /// The name in the scenario's rows.
    pub fn name(self) -> &'static str {
        match self {
            AccountOp::Balance => "balance",
            AccountOp::Consume => "consume",
            AccountOp::Grant => "grant",
            AccountOp::Hold => "hold",
        }
    }
}

/// HS256 bearer tokens (`sub`, `exp`) for users `0..users`, ready to send.
pub fn mint_tokens(secret: &str, users: usize) -> Result<Vec<HeaderValue>, String> {
    let key = EncodingKey::from_secret(secret.as_bytes());
    (0..users)
        .map(|i| bearer(&key, &user_id(i), None))
        .collect()
}

/// The requests of one scenario.
#[derive(Debug)]
pub enum Workload {
    /// `GET /credits/balance` as a random user (also what the bare baseline server answers).
    Balance {
        host: HeaderValue,
        tokens: Vec<HeaderValue>,
    },
    /// `GET /credits/transactions?limit=20` as a random user.
    History {
        host: HeaderValue,
        tokens: Vec<HeaderValue>,
    },
    /// `POST /internal/credits/consume` of 1 credit, on a random user or always on [`HOT_USER`],
    /// each with its own idempotency key.
    Consume {
        host: HeaderValue,
        service_key: HeaderValue,
        users: usize,
        hot: bool,
        run: String,
    },
    /// `POST /internal/usage/track` on a random user: tokens priced per model and one message
    /// from a monthly allowance, each call with its own idempotency key.
    Track {
        host: HeaderValue,
        service_key: HeaderValue,
        users: usize,
        run: String,
    },
    /// `POST /checkin`, each user once, then nothing left.
    Checkin {
        host: HeaderValue,
        tokens: Vec<HeaderValue>,
        next: AtomicUsize,
    },
    /// `POST /internal/credits/grant` of `amount` to each user once (the seed).
    Grant {
        host: HeaderValue,
        service_key: HeaderValue,
        users: usize,
        amount: i64,
        next: AtomicUsize,
    },
    /// One operation on one account, each write with its own idempotency key; `auth` is the
    /// user's token for a balance, the service key otherwise.
    Account {
        host: HeaderValue,
        auth: HeaderValue,
        user: String,
        op: AccountOp,
        run: String,
    },
    /// `POST /payment/webhook/stripe`: a signed `invoice.paid` for a random seeded subscription.
    Webhook(crate::commerce::Renewals),
    /// `GET /admin/stats` (the last 30 days, per day) as an admin.
    Stats {
        host: HeaderValue,
        admin: HeaderValue,
    },
    /// A console page as a signed-in operator: a random user's customer page (`users` set), or
    /// the overview (30 days of statistics).
    Console {
        host: HeaderValue,
        cookie: HeaderValue,
        users: Option<usize>,
    },
}

fn get(
    host: &HeaderValue,
    path: &'static str,
    auth: &HeaderValue,
) -> Result<Request<Full<Bytes>>, String> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, host.clone())
        .header(AUTHORIZATION, auth.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building a request: {e}"))
}

fn post(
    host: &HeaderValue,
    path: &'static str,
    auth: &HeaderValue,
    body: Option<String>,
) -> Result<Request<Full<Bytes>>, String> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, host.clone())
        .header(AUTHORIZATION, auth.clone());
    if body.is_some() {
        b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    b.body(Full::new(body.map(Bytes::from).unwrap_or_default()))
        .map_err(|e| format!("building a request: {e}"))
}

impl Workload {
    /// The next request for `worker`'s `seq`-th call; `None` when there is nothing left to do.
    pub fn request(
        &self,
        rng: &mut Rng,
        worker: usize,
        seq: u64,
    ) -> Option<Result<Request<Full<Bytes>>, String>> {
        Some(match self {
            Workload::Balance { host, tokens } => {
                get(host, "/credits/balance", &tokens[rng.below(tokens.len())])
            }
            Workload::History { host, tokens } => get(
                host,
                "/credits/transactions?limit=20",
                &tokens[rng.below(tokens.len())],
            ),
            Workload::Consume {
                host,
                service_key,
                users,
                hot,
                run,
            } => {
                let user = if *hot { HOT_USER } else { rng.below(*users) };
                let body = format!(
                    "{{\"user_id\":\"{}\",\"amount\":1,\"description\":\"AI chat completion (benchmark)\",\
                     \"idempotency_key\":\"{run}-{worker}-{seq}\",\"metadata\":{{\"model\":\"bench\"}}}}",
                    user_id(user)
                );
                post(host, "/internal/credits/consume", service_key, Some(body))
            }
            Workload::Track {
                host,
                service_key,
                users,
                run,
            } => {
                let body = format!(
                    "{{\"user_id\":\"{}\",\"quantities\":{{\"input_tokens\":1000,\"output_tokens\":200,\
                     \"messages\":1}},\"dimensions\":{{\"model\":\"bench\"}},\
                     \"description\":\"AI chat completion (benchmark)\",\"idempotency_key\":\"{run}-{worker}-{seq}\"}}",
                    user_id(rng.below(*users))
                );
                post(host, "/internal/usage/track", service_key, Some(body))
            }
            Workload::Checkin { host, tokens, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let token = tokens.get(i)?;
                post(host, "/checkin", token, None)
            }
            Workload::Grant {
                host,
                service_key,
                users,
                amount,
                next,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= *users {
                    return None;
                }
                let body = format!(
                    "{{\"user_id\":\"{}\",\"amount\":{amount},\"description\":\"Benchmark seed\",\
                     \"idempotency_key\":\"seed\"}}",
                    user_id(i)
                );
                post(host, "/internal/credits/grant", service_key, Some(body))
            }
            Workload::Account {
                host,
                auth,
                user,
                op,
                run,
            } => {
                let (path, body) = match op {
                    AccountOp::Balance => return Some(get(host, "/credits/balance", auth)),
                    AccountOp::Consume => (
                        "/internal/credits/consume",
                        "\"amount\":1,\"description\":\"AI chat completion (benchmark)\"",
                    ),
                    AccountOp::Grant => (
                        "/internal/credits/grant",
                        "\"amount\":1,\"description\":\"Reward (benchmark)\"",
                    ),
                    AccountOp::Hold => (
                        "/internal/credits/holds",
                        "\"amount\":1,\"ttl_seconds\":3600,\"description\":\"Streaming call (benchmark)\"",
                    ),
                };
                let body = format!(
                    "{{\"user_id\":\"{user}\",{body},\"idempotency_key\":\"{run}-{worker}-{seq}\"}}"
                );
                post(host, path, auth, Some(body))
            }
            Workload::Webhook(renewals) => renewals.request(rng),
            Workload::Stats { host, admin } => get(host, "/admin/stats", admin),
            Workload::Console {
                host,
                cookie,
                users,
            } => {
                let path = match users {
                    Some(n) => format!("/console/customers/{}", user_id(rng.below(*n))),
                    None => "/console".to_owned(),
                };
                Request::builder()
                    .method(Method::GET)
                    .uri(path)
                    .header(HOST, host.clone())
                    .header(COOKIE, cookie.clone())
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| format!("building a request: {e}"))
            }
        })
    }

    /// What a 200 answer's body comes to (only the webhook looks at it).
    pub fn accept(&self, body: &[u8]) -> Outcome {
        match self {
            Workload::Webhook(renewals) => renewals.accept(body),
            _ => Outcome::Ok,
        }
    }
}
