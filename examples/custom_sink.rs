//! A sink of your own: here, one that forwards high-risk actions to an
//! alerting channel and counts the rest. Any type implementing `Sink` can
//! sit beside the file sink; a slow or failing one holds back no other.
//!
//! ```sh
//! cargo run --example custom_sink
//! ```

use std::sync::mpsc;

use fabric_audit::{audit, AuditLayer, Batch, Sink, SinkError};
use tracing_subscriber::prelude::*;

/// Sends `*.deleted` actions to an alert channel.
struct Alerts {
    tx: mpsc::Sender<String>,
}

impl Sink for Alerts {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        for record in batch {
            if record.action().ends_with(".deleted") {
                let line = format!(
                    "{} by {} at {}",
                    record.action(),
                    record.actor_id().unwrap_or("unknown"),
                    record.timestamp()
                );
                // The receiver is gone: nothing will ever take these.
                self.tx.send(line).map_err(SinkError::rejected)?;
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::channel();
    let (layer, audit) = AuditLayer::builder()
        .sink("alerts", Alerts { tx })
        .build()?;
    tracing_subscriber::registry().with(layer).init();

    audit!(action = "post.created", "actor.id" = "u-1", resource_id = 1);
    audit!(action = "post.deleted", "actor.id" = "u-1", resource_id = 1);
    audit!(
        action = "user.deleted",
        "actor.id" = "admin",
        resource_id = "u-9"
    );

    let report = audit.shutdown_blocking();
    let alerts: Vec<String> = rx.try_iter().collect();
    for alert in &alerts {
        println!("ALERT {alert}");
    }
    println!("{report}");
    assert_eq!(alerts.len(), 2);
    Ok(())
}
