//! Paging through records dated before 1970, with cursors passed as text
//! (as the HTTP API and the CLI pass them).

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use fabric_audit::{AuditQuery, AuditRecord, Batch, Cursor, Sink, Store};

use super::{ids, newest_first, on_every_backend, sink, TestDb};

on_every_backend!(records_dated_1960_page_through_text_cursors);

async fn records_dated_1960_page_through_text_cursors(db: TestDb) {
    let start = Utc.with_ymd_and_hms(1960, 3, 1, 12, 0, 0).unwrap();
    let records: Vec<Arc<AuditRecord>> = (0..25)
        .map(|i| {
            // Some share a time: the id orders them.
            let at = start + Duration::microseconds(i / 2) - Duration::days(i);
            Arc::new(AuditRecord::builder("old.times").timestamp(at).build())
        })
        .collect();
    let model = newest_first(records.iter().map(|r| (**r).clone()).collect());
    let mut database = sink(&db.url).await;
    tokio::task::spawn_blocking(move || database.write(&Batch::new(&records)).unwrap())
        .await
        .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let mut seen = Vec::new();
    let mut query = AuditQuery::new().limit(4).unwrap();
    loop {
        let page = store.query(&query).await.unwrap();
        seen.extend(page.items);
        let Some(cursor) = page.next_cursor else {
            break;
        };
        let text = cursor.to_string();
        let parsed: Cursor = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, cursor);
        query = query.after(parsed);
    }
    assert_eq!(ids(&seen), ids(&model));
    assert_eq!(seen, model);
}
