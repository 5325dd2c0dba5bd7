//! PostgreSQL's connections, seen from outside: each Tokio runtime that uses the store draws
//! from connections it opened itself, and the node uses no more than its configured size at once.

use super::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// A balance read on a runtime of its own, on another thread (as an HTTP worker's is); answers
/// the connections the store has open right after it, while that runtime still runs.
fn read_on_another_runtime(ledger: &Ledger, store: &tally_store::Store) -> usize {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    ledger
                        .balance(AccountRef::new("app", "u").unwrap())
                        .await
                        .unwrap();
                    store.pool_stats()[0].1.size
                })
            })
            .join()
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runtime_uses_connections_of_its_own_and_the_node_no_more_than_its_size() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.store().await; // migrated
    let store = tally_store::Store::connect_with(
        &db.url,
        tally_store::StoreOptions {
            pg_max_connections: 2,
            pg_batch_lanes: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ledger = Ledger::new(store.clone());
    let open = || {
        let stats = store.pool_stats();
        assert_eq!(stats.len(), 1);
        (stats[0].1.size, stats[0].1.max)
    };
    // Connecting checked the database on this runtime's connection.
    assert_eq!(open(), (1, 2));
    ledger
        .balance(AccountRef::new("app", "u").unwrap())
        .await
        .unwrap();
    assert_eq!(open(), (1, 2), "this runtime reuses its idle connection");
    // Another runtime does not borrow this one's idle connection: it opens its own, which
    // closes when that runtime ends.
    assert_eq!(read_on_another_runtime(&ledger, &store), 2);
    assert_eq!(open(), (1, 2));

    // Spends from three runtimes at once, all waiting on one account's row lock: two of them
    // hold a connection and wait in the database, the rest wait for one of the two.
    let user = AccountRef::new("app", "u").unwrap();
    ledger
        .grant(user.clone(), 100, "seed".into(), None, None)
        .await
        .unwrap();
    let mut admin = AsyncPgConnection::establish(&db.url).await.unwrap();
    admin
        .batch_execute("BEGIN; SELECT id FROM accounts WHERE user_id = 'u' FOR UPDATE")
        .await
        .unwrap();
    let spenders: Vec<_> = (0..3)
        .map(|_| {
            let (ledger, user) = (ledger.clone(), user.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let spends =
                        (0..3).map(|_| ledger.spend(user.clone(), 1, "x".into(), None, None));
                    for spend in futures_util::future::join_all(spends).await {
                        spend.unwrap();
                    }
                });
            })
        })
        .collect();
    // This database's sessions waiting on a lock (other tests' databases wait on their own),
    // read outside the locking transaction, which would see one snapshot of them throughout.
    let mut watch = AsyncPgConnection::establish(&db.url).await.unwrap();
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for _ in 0..500 {
        if super::batches::count(&mut watch, waiting).await >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(super::batches::count(&mut watch, waiting).await, 2);
    admin.batch_execute("COMMIT").await.unwrap();
    tokio::task::spawn_blocking(move || {
        for spender in spenders {
            spender.join().unwrap();
        }
    })
    .await
    .unwrap();
    let balance = ledger.balance(user).await.unwrap();
    assert_eq!(balance.balance, 100 - 9);
}
