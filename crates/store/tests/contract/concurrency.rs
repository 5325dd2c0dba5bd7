//! Many callers at once: no overdraw, one check-in, one write per key, consistent reads.

use super::*;

tally_testkit::backend_tests!(run = run; concurrent_spends_never_overdraw, concurrent_checkins_award_once, concurrent_replays_write_once, a_burst_beyond_the_write_queue_completes, reads_are_consistent_snapshots);

async fn concurrent_spends_never_overdraw(t: Ctx) {
    const TASKS: usize = 32;
    const SPENDS_PER_TASK: usize = 200;
    const CREDITS: i64 = 5_000;
    let l = &t.ledger;
    let a = acct("app", "alice");
    grant(l, &a, CREDITS, None).await;

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let (l, a) = (l.clone(), a.clone());
        tasks.spawn(async move {
            let (mut ok, mut insufficient) = (0_i64, 0_i64);
            for _ in 0..SPENDS_PER_TASK {
                match spend(&l, &a, 1).await {
                    Ok(_) => ok += 1,
                    Err(LedgerError::InsufficientCredits { requested: 1, .. }) => insufficient += 1,
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            (ok, insufficient)
        });
    }
    let (mut ok, mut insufficient) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (o, i) = done.unwrap();
        ok += o;
        insufficient += i;
    }
    let elapsed = started.elapsed();
    let total = (TASKS * SPENDS_PER_TASK) as f64;
    eprintln!(
        "[{}] concurrent spends: {} requests ({TASKS} tasks x {SPENDS_PER_TASK}) in {:.2?} = {:.0} ops/s",
        t.backend.label(),
        total,
        elapsed,
        total / elapsed.as_secs_f64()
    );

    assert_eq!(ok, CREDITS, "successful spends");
    assert_eq!(
        insufficient,
        (TASKS * SPENDS_PER_TASK) as i64 - CREDITS,
        "refused spends"
    );
    assert_eq!(balance(l, &a).await, 0);
    assert_eq!(stored_balance(l, &a).await, 0);
    let h = history(l, &a).await;
    assert_eq!(h.len(), CREDITS as usize + 1);
    let afters: BTreeSet<i64> = h
        .iter()
        .filter(|r| r.txn_type == TxnType::AiUsage)
        .map(|r| r.balance_after)
        .collect();
    assert_eq!(afters, (0..CREDITS).collect::<BTreeSet<_>>());
}

/// More writes at once than the SQLite writer queues (1,024): the rest wait for room, and every
/// one is applied exactly once.
async fn a_burst_beyond_the_write_queue_completes(t: Ctx) {
    const WRITES: usize = 2_500;
    const USERS: usize = 50;
    let mut tasks = JoinSet::new();
    for i in 0..WRITES {
        let l = t.ledger.clone();
        tasks.spawn(async move {
            let a = acct("app", &format!("u{}", i % USERS));
            grant(&l, &a, (i % 7 + 1) as i64, None).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let mut total = 0;
    for u in 0..USERS {
        total += balance(&t.ledger, &acct("app", &format!("u{u}"))).await;
    }
    let expected: i64 = (0..WRITES).map(|i| (i % 7 + 1) as i64).sum();
    assert_eq!(total, expected);
}

async fn concurrent_checkins_award_once(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let (l, a) = (l.clone(), a.clone());
        tasks.spawn(async move { l.checkin(a).await });
    }
    let (mut ok, mut refused) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(o) => ok.push(o),
            Err(LedgerError::AlreadyCheckedIn { day }) => {
                assert_eq!(day, "2026-06-01");
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one check-in succeeds");
    assert_eq!(refused, 49);
    assert_eq!((ok[0].streak, ok[0].awarded, ok[0].balance), (1, 10, 10));
    assert_eq!(history(l, &a).await.len(), 1);
    assert_eq!(balance(l, &a).await, 10);
}

async fn concurrent_replays_write_once(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let request = Movement {
        idempotency_key: Some("topup-1".into()),
        description: "credit pack".into(),
        metadata: Some(json!({"order": 42})),
        ..movement(&a, grant_kind(250, None))
    };
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let (l, request) = (l.clone(), request.clone());
        tasks.spawn(async move { l.apply(request).await });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.unwrap().unwrap());
    }
    assert_eq!(results.len(), 32);
    assert!(
        results.iter().all(|r| *r == results[0]),
        "every replay returns the original"
    );
    let h = history(l, &a).await;
    assert_eq!(h, vec![results[0].clone()]);
    assert_eq!(balance(l, &a).await, 250);
}

async fn reads_are_consistent_snapshots(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let until = START + Duration::days(30);
    grant(l, &a, 1_000, None).await;
    grant(l, &a, 1_000, Some(until)).await;

    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut readers = JoinSet::new();
    for _ in 0..4 {
        let (l, a, writing) = (l.clone(), a.clone(), writing.clone());
        readers.spawn(async move {
            let (mut reads, mut torn) = (0, Vec::new());
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let stored = stored_account(&l, &a).await;
                let lot_sum: i64 = stored.lots.iter().map(|lot| lot.remaining).sum();
                if stored.balance != lot_sum {
                    torn.push((stored.balance, lot_sum));
                }
                let view = l.balance(a.clone()).await.unwrap();
                let expiring: i64 = view.expiring.iter().map(|e| e.amount).sum();
                if expiring > view.balance {
                    torn.push((view.balance, expiring));
                }
                reads += 1;
            }
            (reads, torn)
        });
    }
    let mut writers = JoinSet::new();
    for _ in 0..8 {
        let (l, a) = (l.clone(), a.clone());
        writers.spawn(async move {
            for _ in 0..100 {
                spend(&l, &a, 1).await.unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let (mut reads, mut torn) = (0, Vec::new());
    while let Some(done) = readers.join_next().await {
        let (r, t) = done.unwrap();
        reads += r;
        torn.extend(t);
    }
    assert!(reads > 0);
    assert!(
        torn.is_empty(),
        "{} of {reads} reads mixed two states (balance, lots): {:?}",
        torn.len(),
        &torn[..torn.len().min(5)]
    );
    assert_eq!(balance(l, &a).await, 1_200);
}
