//! What the benches share: the audited event and the ratio printout.

#![allow(dead_code)] // each bench uses part of it

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fabric_audit::{AuditHandle, AuditLayerBuilder, Overflow, Report};
use tracing_subscriber::prelude::*;

/// Runs `f` inside a request span and an auth span that carry the request
/// context and the actor, as a handler would.
pub(crate) fn in_request<R>(f: impl FnOnce() -> R) -> R {
    let request = tracing::info_span!(
        "request",
        request_id = "req-7f3a9c",
        client_ip = "10.1.2.3",
        user_agent = "bench/1.0"
    );
    let _request = request.enter();
    let auth = tracing::info_span!("auth", "actor.id" = "u-42", "actor.type" = "user");
    let _auth = auth.enter();
    f()
}

/// The 8 fields of the bench event, as `audit!` writes them.
#[macro_export]
macro_rules! audit_event {
    () => {
        fabric_audit::audit!(
            action = "post.updated",
            resource_type = "post",
            resource_id = 4242,
            title = "Hello, world",
            words = 120,
            draft = false,
            ratio = 0.5,
            editor = "web",
        )
    };
}

/// The same event through plain `tracing`, for the baselines.
#[macro_export]
macro_rules! plain_event {
    () => {
        tracing::info!(
            target: "audit",
            action = "post.updated",
            resource_type = "post",
            resource_id = 4242,
            title = "Hello, world",
            words = 120,
            draft = false,
            ratio = 0.5,
            editor = "web",
        )
    };
}

/// The total of `iters` runs, each timing only its own measured part (its
/// set-up, a fresh directory or database, stays outside): the body of
/// criterion's `iter_custom` for benches with per-run set-up.
pub(crate) fn sum_of_runs(iters: u64, mut run: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| run()).sum()
}

/// Times `events` bench events emitted from one thread through the
/// pipeline `builder` makes (with [`Overflow::Block`]: what the sinks can
/// take, not what they drop) until a flush returns; the time and the final
/// report.
pub(crate) fn emit_and_flush(builder: AuditLayerBuilder, events: u64) -> (Duration, Report) {
    let (layer, audit): (_, AuditHandle) = builder.overflow(Overflow::Block).build().unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let start = Instant::now();
    tracing::dispatcher::with_default(&dispatch, || {
        in_request(|| {
            for _ in 0..events {
                audit_event!();
            }
        })
    });
    audit.flush_blocking().unwrap();
    let elapsed = start.elapsed();
    (elapsed, audit.shutdown_blocking())
}

/// Times `f` alone.
pub(crate) fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The median, in nanoseconds, criterion measured for `group/bench` in this
/// run (read from its estimates file).
pub(crate) fn median_ns(group: &str, bench: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = dir
        .join("criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints `ours / baseline` for two benches of `group`.
pub(crate) fn print_ratio(group: &str, ours: &str, baseline: &str) -> Option<f64> {
    let (a, b) = (median_ns(group, ours)?, median_ns(group, baseline)?);
    let ratio = a / b;
    println!("ratio {group}: {ours} / {baseline} = {a:.1} ns / {b:.1} ns = {ratio:.3}x");
    Some(ratio)
}

/// Runs one statement on the local PostgreSQL server (trust auth, user
/// postgres); whether it succeeded. False where there is no server.
pub(crate) fn psql(sql: &str) -> bool {
    std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-qc",
            sql,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A scratch database for one run, removed with it: a SQLite file in a
/// temporary directory, or a PostgreSQL database on the local server.
pub(crate) struct Scratch {
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl Scratch {
    /// A SQLite database in a new temporary directory under `base`.
    pub(crate) fn sqlite_in(base: &std::path::Path) -> Self {
        let dir = tempfile::tempdir_in(base).unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        Self {
            url,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    /// A SQLite database in a new temporary directory.
    pub(crate) fn sqlite() -> Self {
        Self::sqlite_in(&std::env::temp_dir())
    }

    /// A new PostgreSQL database; `None` where there is no server.
    pub(crate) fn postgres() -> Option<Self> {
        let name = format!("fa_bench_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {name}")).then(|| Self {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            _dir: None,
            pg_name: Some(name),
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A sink as it was before hash chains: every call forwarded but
/// `chain_head`, so the worker links nothing. What chaining costs is the
/// difference from the sink itself.
pub(crate) struct Unchained<S>(pub(crate) S);

impl<S: fabric_audit::Sink> fabric_audit::Sink for Unchained<S> {
    fn write(&mut self, batch: &fabric_audit::Batch<'_>) -> Result<(), fabric_audit::SinkError> {
        self.0.write(batch)
    }
    fn open(&mut self) -> Result<(), fabric_audit::SinkError> {
        self.0.open()
    }
    fn close(&mut self) -> Result<(), fabric_audit::SinkError> {
        self.0.close()
    }
}
