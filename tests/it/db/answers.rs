//! The query API's answers carry each record's JSON exactly as serializing
//! the record read back gives it, on every backend: the API writes rows
//! straight out (without making the records) and must not change a byte.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fabric_audit::http::{self, BearerTokens, AUDIT_READ};
use fabric_audit::{AuditQuery, AuditRecord, Batch, Sink, Store};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use super::{on_every_backend, sink, TestDb};

on_every_backend!(answers_are_the_records_json_byte_for_byte);

/// Records whose JSON is hard to get right: every kind of detail value,
/// text in need of escapes, and values the sink had to change to store.
fn records() -> Vec<AuditRecord> {
    let now = chrono::Utc::now();
    let at = |minutes| now - chrono::Duration::minutes(minutes);
    vec![
        AuditRecord::builder("answer.detail")
            .timestamp(at(1))
            .actor_id("zoë ✓ \"quoted\" \\ \u{7f}")
            .actor_flags(["admin", "é\"\n\t", ""])
            .resource("post", "42")
            .user_agent("agent/1.0 \u{1}")
            .detail("title", "Ünïcødé ✓ 日本語 🎉 \u{0}\u{1f}\"\\/")
            .detail("max", u64::MAX)
            .detail("min", i64::MIN)
            .detail("zero", 0)
            .detail("tenth", 0.1)
            .detail("huge", 1e300)
            .detail("tiny", 5e-324)
            .detail("negative_zero", -0.0)
            .detail("whole", 2.0)
            .detail("yes", true)
            .detail("nothing", serde_json::Value::Null)
            .detail(
                "nested",
                json!({"z": [1, -2, 3.5, null, "é"], "a": {"deep": {"deeper": [[], {}]}},
                       "big": u64::MAX, "\u{1}": "control key", "\"": "quote key"}),
            )
            .detail("ключ", "значение")
            .build(),
        // Escaped to be stored (a NUL), then unescaped when read back.
        AuditRecord::builder("answer.nul")
            .timestamp(at(2))
            .actor_id("u\0one")
            .resource("post", "a\0b")
            .detail("k", "v\0")
            .build(),
        // Cut to fit its column: read back with the marker saying so.
        AuditRecord::builder("answer.long")
            .timestamp(at(3))
            .resource("post", "x".repeat(300))
            .build(),
        AuditRecord::builder("answer.plain")
            .timestamp(at(4))
            .build(),
    ]
}

async fn get(app: &axum::Router, uri: &str) -> String {
    let request = Request::get(uri)
        .header("authorization", "Bearer t")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{uri}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn answers_are_the_records_json_byte_for_byte(db: TestDb) {
    let records: Vec<Arc<AuditRecord>> = records().into_iter().map(Arc::new).collect();
    let mut sink = sink(&db.url).await;
    let batch = records.clone();
    let mut sink = tokio::task::spawn_blocking(move || {
        sink.write(&Batch::new(&batch)).unwrap();
        sink
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || sink.close().unwrap())
        .await
        .unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let app: axum::Router = http::router(
        store.clone(),
        BearerTokens::new().token("reader", "t", [AUDIT_READ]),
    );

    for record in &records {
        let read_back = store.get(record.id()).await.unwrap().unwrap();
        let want = serde_json::to_string(&read_back).unwrap();
        let got = get(&app, &format!("/api/v1/audit/{}", record.id())).await;
        assert_eq!(got, want, "{}", record.action());
    }
    // What the sink stored unchanged reads back as the record itself.
    let rich = serde_json::to_string(&*records[0]).unwrap();
    let got = get(&app, &format!("/api/v1/audit/{}", records[0].id())).await;
    assert_eq!(got, rich);

    // Pages: the records in order, then the cursor as serde writes it.
    for (uri, limit) in [
        ("/api/v1/audit?limit=2", 2),
        ("/api/v1/audit?limit=10&count=true", 10),
    ] {
        let page = store
            .query(&AuditQuery::new().limit(limit).unwrap())
            .await
            .unwrap();
        let items: Vec<String> = page
            .items
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let cursor = serde_json::to_string(&page.next_cursor.map(|c| c.to_string())).unwrap();
        let total = if limit == 10 {
            r#","total":4,"total_is_lower_bound":false"#
        } else {
            ""
        };
        let want = format!(
            r#"{{"items":[{}],"next_cursor":{cursor}{total}}}"#,
            items.join(",")
        );
        assert_eq!(get(&app, uri).await, want, "{uri}");
    }
}
