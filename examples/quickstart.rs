//! Quick start: audit events from "request handlers" into the embedded
//! SQLite database and the daily JSON-lines file, next to an ordinary
//! stdout log that never sees them; then a query over the database.
//!
//! ```sh
//! cargo run --example quickstart            # writes logs/audit.db and logs/audit.YYYY-MM-DD.jsonl
//! cargo run --example quickstart -- /tmp/x  # or into another directory
//! ```

use std::path::PathBuf;

use fabric_audit::{audit, exclude_audit, AuditLayer, AuditQuery, Principal, Store};
use tracing::field::Empty;
use tracing_subscriber::filter::{FilterExt, LevelFilter};
use tracing_subscriber::prelude::*;

/// The application's own notion of who is calling.
struct User {
    id: String,
    email: String,
    roles: Vec<String>,
}

impl Principal for User {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> Option<&str> {
        Some("user")
    }
    fn email(&self) -> Option<&str> {
        Some(&self.email)
    }
    fn flags(&self) -> &[String] {
        &self.roles
    }
}

/// A handler that passes the principal explicitly.
fn create_post(user: &User, post_id: u64, title: &str) {
    tracing::info!(post_id, "creating post");
    audit!(
        action = "post.created",
        actor = user,
        resource_type = "post",
        resource_id = post_id,
        title = %title,
        words = title.split_whitespace().count(),
    );
}

/// A handler that relies on the request span for the actor.
fn delete_post(post_id: u64) {
    audit!(
        action = "post.deleted",
        resource_type = "post",
        resource_id = post_id
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("logs"));
    let database = format!("sqlite://{}", dir.join("audit.db").display());
    std::fs::create_dir_all(&dir)?;
    let (audit_layer, audit) = AuditLayer::builder()
        .database(&database)
        .file(dir.join("audit.jsonl"))
        .build()?;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO.and(exclude_audit())))
        .with(audit_layer)
        .init();

    let alice = User {
        id: "u-1".into(),
        email: "alice@example.com".into(),
        roles: vec!["editor".into()],
    };
    for (n, request_id) in ["req-1", "req-2"].into_iter().enumerate() {
        // What a request middleware does: open a span with the request
        // context, and let authentication fill in the actor later.
        let span = tracing::info_span!(
            "request",
            request_id,
            client_ip = "203.0.113.7",
            user_agent = "quickstart/1.0",
            "actor.id" = Empty,
            "actor.type" = Empty,
        );
        let _entered = span.enter();
        if n == 0 {
            create_post(&alice, 42, "Hello audit log");
        } else {
            span.record("actor.id", "u-2");
            span.record("actor.type", "user");
            delete_post(42);
        }
    }

    let report = audit.shutdown().await;
    tracing::info!(%report, "audit log closed");
    if !report.is_lossless() {
        return Err(format!("records were lost: {report}").into());
    }

    // The query side: what the HTTP API and the CLI read through.
    let store = Store::connect(&database).await?;
    let page = store
        .query(&AuditQuery::new().action("post.").limit(5)?)
        .await?;
    println!("latest post.* records in {database}:");
    for record in &page.items {
        println!("{}", serde_json::to_string(record)?);
    }
    Ok(())
}
