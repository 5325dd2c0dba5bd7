//! A small AI gateway that spends Tally credits in-process, with no HTTP in between.
//!
//! Per simulated model call it reserves an estimate, "streams" the response, then captures the
//! real cost — or releases the hold when the call fails. It talks to the same database as
//! `tally serve`, so both can spend from one account at the same time.
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

use tally_ledger::{AccountRef, CaptureRequest, Ledger, LedgerError, ReserveRequest};
use tally_store::Store;
use tokio::sync::Mutex;

#[derive(Debug, Default)]
struct Summary {
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

/// One model call: reserve the estimate, stream, then capture the real cost or release.
async fn model_call(
    ledger: &Ledger,
    account: &AccountRef,
    run: &str,
    call: u64,
) -> Result<Option<i64>, LedgerError> {
    let estimate = 20 + rand::random::<u8>() as i64 % 21;
    let hold = ledger
        .reserve(ReserveRequest {
            account: account.clone(),
            credits: estimate,
            ttl_seconds: 60,
            description: "AI chat completion (simulated)".into(),
            idempotency_key: Some(format!("ai-gateway-{run}-{call}")),
            metadata: Some(serde_json::json!({ "call": call, "estimate": estimate })),
        })
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
    let actual = estimate / 2 + rand::random::<u8>() as i64 % (estimate / 2 + 1);
    let (_, txn) = ledger
        .capture(
            CaptureRequest {
                app: account.app.clone(),
                hold_id: hold.id,
                credits: actual,
                description: None,
                metadata: None,
            },
            Some(format!("ai-gateway-{run}-{call}-capture")),
        )
        .await?;
    Ok(Some(txn.map_or(0, |t| -t.amount)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let url = std::env::var("TALLY_DATABASE_URL").unwrap_or_else(|_| "sqlite://tally.db".into());
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let ledger = Ledger::new(store);
    let account = AccountRef::new(o.app.clone(), o.user.clone())?;
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
                    Ok(Some(cost)) => {
                        s.captured_calls += 1;
                        s.captured_credits += cost;
                    }
                    Ok(None) => s.released_calls += 1,
                    // Out of credits: the gateway refuses the call before it reaches the model.
                    Err(LedgerError::InsufficientCredits { .. }) => s.refused_calls += 1,
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
            "top_up": o.top_up,
            "balance": balance.balance,
        })
    );
    Ok(())
}
