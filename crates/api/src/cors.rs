//! CORS for web apps calling the API from the browser: only configured origins get the headers;
//! with none configured (the default) no cross-origin access is granted.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};

/// Which browser origins may call the API.
#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example`), or `*` for any origin.
    pub origins: Vec<String>,
    /// Sends `Access-Control-Allow-Credentials: true` (never together with `*`).
    pub allow_credentials: bool,
}

impl CorsConfig {
    /// Checks the combination; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        let wildcard = self.origins.iter().any(|o| o == "*");
        if wildcard && self.allow_credentials {
            return Err(
                "cors_allow_credentials cannot be used with the wildcard origin '*'".into(),
            );
        }
        for o in self.origins.iter().filter(|o| *o != "*") {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o.ends_with('/')
                && o.split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !ok {
                return Err(format!(
                    "cors_origins: '{o}' is not an origin like https://app.example (scheme and host, optional port, no path)"
                ));
            }
        }
        Ok(())
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == "*" || o == origin)
    }

    fn wildcard(&self) -> bool {
        self.origins.iter().any(|o| o == "*")
    }
}

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-app-key, x-request-id";
const MAX_AGE_SECONDS: &str = "3600";

fn add_origin_headers(headers: &mut header::HeaderMap, config: &CorsConfig, origin: &HeaderValue) {
    let value = if config.wildcard() {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if config.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// Answers preflight requests from allowed origins and adds the CORS headers to their other
/// responses. Requests from other origins pass through untouched (the browser then refuses to
/// hand the response to the page).
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let config = req.app_data::<web::Data<CorsConfig>>().cloned();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let (Some(config), Some(origin)) = (config, origin) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if !origin.to_str().is_ok_and(|o| config.allows(o)) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut res = HttpResponse::NoContent().finish();
        let headers = res.headers_mut();
        add_origin_headers(headers, &config, &origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECONDS),
        );
        return Ok(req.into_response(res));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    let headers = res.headers_mut();
    add_origin_headers(headers, &config, &origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-request-id, retry-after"),
    );
    Ok(res)
}
