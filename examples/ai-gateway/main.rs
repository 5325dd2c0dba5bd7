//! A small AI gateway that spends Tally credits in-process, with no HTTP in between, and lets
//! Tally price the calls: it reports **tokens per model**, not credits.
//!
//! At start it makes sure the app prices `input_tokens` and `output_tokens` (a default rate for
//! the `small` model, a dearer one for `large`; existing prices are left as they are). Per
//! simulated model call it reserves what the estimated tokens would cost, "streams" the response,
//! then captures the tokens actually used — priced by the rates in force when the call started,
//! the user's plan allowances first — or releases the hold when the call fails. It talks to the
//! same database as `tally serve`, so both can spend from one account at the same time.
//!
//! ```sh
//! cargo run --release                      # once, to create ./tally.db (then stop it or keep it running)
//! cargo run --example ai-gateway -- --calls 20 --user alice
//! ```
//!
//! Options: `--calls N` (default 20), `--concurrency N` (default 4), `--user ID` (default
//! `alice`), `--app KEY` (default `default`), `--top-up CREDITS` (grant this much first, default
//! 1000, 0 = none). The database is `TALLY_DATABASE_URL` (default `sqlite://tally.db`). The last
//! line printed is a JSON summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use tally_ledger::pricing::{FeatureKind, FeatureSpec, RateSpec};
use tally_ledger::usage::UsageRequest;
use tally_ledger::{AccountRef, Ledger, LedgerError};
use tally_store::Store;
use tokio::sync::Mutex;

#[derive(Debug, Default)]
struct Summary {
    /// Tokens captured per model, `(input, output)`.
    tokens: BTreeMap<&'static str, (i64, i64)>,
    calls: u64,
    captured_calls: u64,
    captured_credits: i64,
    released_calls: u64,
    refused_calls: u64,
}

#[derive(Debug)]
struct Options {
    calls: u64,
    concurrency: u64,
    user: String,
    app: String,
    top_up: i64,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        calls: 20,
        concurrency: 4,
        user: "alice".into(),
        app: "default".into(),
        top_up: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: not a number: {value}");
        match flag.as_str() {
            "--calls" => o.calls = value.parse().map_err(bad)?,
            "--concurrency" => o.concurrency = value.parse().map_err(bad)?,
            "--top-up" => o.top_up = value.parse().map_err(bad)?,
            "--user" => o.user = value,
            "--app" => o.app = value,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

/// The models, and their prices per 1,000 tokens `(input, output)`: `small` is the features'
/// default rate, `large` a rate for `{"model": "large"}`.
const MODELS: [(&str, (i64, i64)); 2] = [("small", (1, 4)), ("large", (10, 30))];

/// Makes sure the app prices tokens; prices already there are kept.
async fn ensure_pricing(ledger: &Ledger, app: &str) -> Result<(), LedgerError> {
    for (i, (key, name)) in [
        ("input_tokens", "Input tokens"),
        ("output_tokens", "Output tokens"),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = FeatureSpec {
            key: key.into(),
            name: name.into(),
            kind: FeatureKind::Metered,
            unit: Some("tokens".into()),
        };
        if !ledger.features(app).await?.iter().any(|f| f.key == key) {
            ledger.put_feature(app, spec, false).await?;
        }
        if !ledger.rates(app, Some(key.into())).await?.is_empty() {
            continue;
        }
        for (model, prices) in MODELS {
            let credits = if i == 0 { prices.0 } else { prices.1 };
            let dimensions = if model == "small" {
                BTreeMap::new()
            } else {
                [("model".to_owned(), model.to_owned())].into()
            };
            let rate = RateSpec {
                feature: key.into(),
                dimensions,
                credits,
                per: 1_000,
                tiers: vec![],
                effective_from: None,
            };
            ledger.add_rate(app, rate, "ai-gateway").await?;
        }
    }
    Ok(())
}

fn tokens(input: i64, output: i64) -> BTreeMap<String, i64> {
    [
        ("input_tokens".to_owned(), input),
        ("output_tokens".to_owned(), output),
    ]
    .into()
}

/// One model call: reserve what the estimated tokens cost, stream, then capture the tokens
/// used or release. Answers the model, the tokens and the credits charged (`None`: released).
async fn model_call(
    ledger: &Ledger,
    account: &AccountRef,
    run: &str,
    call: u64,
) -> Result<Option<(&'static str, i64, i64, i64)>, LedgerError> {
    let model = MODELS[usize::from(rand::random::<u8>().is_multiple_of(3))].0;
    let input = 200 + i64::from(rand::random::<u16>() % 800);
    let hold = ledger
        .reserve_usage(
            UsageRequest {
                account: account.clone(),
                quantities: tokens(input, 500),
                features: vec![],
                dimensions: [("model".to_owned(), model.to_owned())].into(),
                description: format!("AI chat completion ({model}, simulated)"),
                metadata: Some(serde_json::json!({ "call": call })),
                idempotency_key: Some(format!("ai-gateway-{run}-{call}")),
            },
            60,
        )
        .await?;
    // "Stream" the response.
    tokio::time::sleep(Duration::from_millis(
        2 + u64::from(rand::random::<u8>() % 10),
    ))
    .await;
    if rand::random::<u8>().is_multiple_of(10) {
        ledger.release(&account.app, hold.id).await?;
        return Ok(None);
    }
    let output = 100 + i64::from(rand::random::<u16>() % 600);
    let (_, usage, _) = ledger
        .capture_usage(&account.app, hold.id, tokens(input, output))
        .await?;
    Ok(Some((model, input, output, usage.credits)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let url = std::env::var("TALLY_DATABASE_URL").unwrap_or_else(|_| "sqlite://tally.db".into());
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let ledger = Ledger::new(store);
    let account = AccountRef::new(o.app.clone(), o.user.clone())?;
    ensure_pricing(&ledger, &o.app).await?;
    let run = hex::encode(rand::random::<[u8; 6]>());
    if o.top_up > 0 {
        ledger
            .grant(
                account.clone(),
                o.top_up,
                "AI gateway demo top-up".into(),
                Some(format!("ai-gateway-{run}-top-up")),
                None,
            )
            .await?;
    }
    println!(
        "ai-gateway: {} calls for {}/{} on {url}, starting balance {}",
        o.calls,
        o.app,
        o.user,
        ledger.balance(account.clone()).await?.balance
    );
    let started = Instant::now();
    let summary = Arc::new(Mutex::new(Summary::default()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..o.concurrency.max(1) {
        let (ledger, account, run, summary, next) = (
            ledger.clone(),
            account.clone(),
            run.clone(),
            summary.clone(),
            next.clone(),
        );
        let calls = o.calls;
        workers.push(tokio::spawn(async move {
            loop {
                let call = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if call >= calls {
                    return Ok::<(), LedgerError>(());
                }
                let outcome = model_call(&ledger, &account, &run, call).await;
                let mut s = summary.lock().await;
                s.calls += 1;
                match outcome {
                    Ok(Some((model, input, output, cost))) => {
                        s.captured_calls += 1;
                        s.captured_credits += cost;
                        let used = s.tokens.entry(model).or_default();
                        used.0 += input;
                        used.1 += output;
                    }
                    Ok(None) => s.released_calls += 1,
                    // Out of credits, or beyond what the plan allows: the gateway refuses the call
                    // before it reaches the model.
                    Err(
                        LedgerError::InsufficientCredits { .. }
                        | LedgerError::EntitlementExceeded { .. },
                    ) => s.refused_calls += 1,
                    Err(e) => return Err(e),
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let s = summary.lock().await;
    let balance = ledger.balance(account).await?;
    println!(
        "ai-gateway: {} captured ({} credits), {} released, {} refused in {:.2} s; balance {}, available {}",
        s.captured_calls,
        s.captured_credits,
        s.released_calls,
        s.refused_calls,
        started.elapsed().as_secs_f64(),
        balance.balance,
        balance.available
    );
    println!(
        "{}",
        serde_json::json!({
            "calls": s.calls,
            "captured_calls": s.captured_calls,
            "captured_credits": s.captured_credits,
            "released_calls": s.released_calls,
            "refused_calls": s.refused_calls,
            "tokens": s.tokens.iter().map(|(model, (input, output))| {
                (model.to_string(), serde_json::json!({ "input": input, "output": output }))
            }).collect::<serde_json::Map<_, _>>(),
            "top_up": o.top_up,
            "balance": balance.balance,
        })
    );
    Ok(())
}
