//! A local webhook receiver: records every delivery exactly as it arrived and answers with the
//! status (and after the delay) the test asks for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn id(&self) -> &str {
        self.header("webhook-id")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or("").to_owned()
    }
}

/// What to answer the `n`th delivery (0-based): status and delay.
pub type Answer = dyn Fn(usize) -> (u16, Duration) + Send + Sync;

#[derive(Debug)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// A receiver answering 200 at once.
    pub async fn ok() -> Self {
        Self::start(Arc::new(|_| (200, Duration::ZERO))).await
    }

    pub async fn start(answer: Arc<Answer>) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = received.clone();
        let server = HttpServer::new(move || {
            let (recorded, answer) = (recorded.clone(), answer.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (recorded, answer) = (recorded.clone(), answer.clone());
                async move {
                    // A sender killed halfway through a request (the SIGKILL tests) leaves a body
                    // shorter than it announced: like any endpoint, the receiver has received
                    // nothing.
                    let announced = req
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
                    if body.is_empty() || announced.is_some_and(|n| n != body.len()) {
                        return HttpResponse::BadRequest().finish();
                    }
                    let r = Received {
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
                        all.push(r);
                        all.len() - 1
                    };
                    let (status, delay) = answer(index);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .body(format!("receiver answer {index}"))
                }
            }))
        })
        .workers(2)
        .bind(("127.0.0.1", 0))
        .expect("bind receiver");
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            received,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to `secs`) until `n` deliveries arrived; answers them all.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} deliveries arrived: {:?}",
                got.len(),
                got.iter().map(Received::event_type).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
