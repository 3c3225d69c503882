//! The eraser rewrites the database file while reads run, and the old file's
//! `Database` is dropped once nothing holds it. Reads that began on the old file
//! must finish on it: every read keeps its database open until it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_host::model::Actor;
use sluice_host::store::{RedbStore, Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_file_rewrites_finish_on_the_file_they_began_on() {
    let folder = tempfile::tempdir().unwrap();
    let dir = cap_std::fs::Dir::open_ambient_dir(folder.path(), cap_std::ambient_authority()).unwrap();
    let store = Arc::new(RedbStore::open_in(&dir, "sluice.redb", &StoreOptions::default()).unwrap());
    const EVENTS: usize = 2_000;
    for i in 0..EVENTS {
        let detail = serde_json::json!({ "i": i, "padding": "x".repeat(200) });
        store.audit("test", Actor::host("test"), None, detail).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A long read: the whole audit log in one read transaction.
                    let page = store.audit_events(None, 0, EVENTS).expect("a read during a rewrite");
                    assert_eq!(page.events.len(), EVENTS);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for _ in 0..30 {
        store.rewrite_file().await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("no read failed")).sum();
    assert!(reads > 0, "the readers ran");
    assert_eq!(store.audit_events(None, 0, EVENTS).unwrap().events.len(), EVENTS);
}
