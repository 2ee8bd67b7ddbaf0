//! `fabric-audit`: serve, query, import, purge and migrate an audit log.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use fabric_audit::{AuditConfig, AuditQuery, AuditRecord, Retention, Store};

#[cfg(feature = "nats")]
#[path = "fabric-audit/collect.rs"]
mod collect;
#[path = "fabric-audit/import.rs"]
mod import;
#[path = "fabric-audit/serve.rs"]
mod serve;

/// Immutable audit logs: serve, query, import, purge, migrate.
#[derive(Parser)]
#[command(name = "fabric-audit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the query API (GET /api/v1/audit) over a database.
    Serve(serve::Serve),
    /// Print records, newest first.
    Query {
        #[command(flatten)]
        db: Database,
        #[command(flatten)]
        filters: Filters,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Also print how many records match (on stderr), exact up to
        /// `count_cap`.
        #[arg(long)]
        count: bool,
    },
    /// Load JSON-lines files written by the file sink into the database.
    Import {
        #[command(flatten)]
        db: Database,
        /// Files to import, read twice and never whole: every line of
        /// every file is checked before anything is written, and a file
        /// with a bad line is not imported at all.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete records older than the retention window.
    Purge {
        #[command(flatten)]
        db: Database,
        /// Days to keep, from 1 to 36525 (default: `db_retention_days`).
        #[arg(long, value_name = "DAYS", allow_hyphen_values = true)]
        days: Option<String>,
    },
    /// Check the records' hash chains: that nothing was modified,
    /// deleted, inserted or reordered since a sink wrote them. Exits
    /// non-zero on any break.
    Verify {
        #[command(flatten)]
        db: Database,
        /// The file sink's files instead of the database: one file, or a
        /// directory (every `*.jsonl` file in it).
        #[arg(long, value_name = "PATH")]
        files: Option<PathBuf>,
        /// Only this chain (`<instance>/<sink>`; databases).
        #[arg(long, conflicts_with = "files")]
        chain: Option<String>,
        /// Only the records stamped from this time on (RFC 3339,
        /// inclusive; databases): each chain's records from the first
        /// stamped in the window to the last, checked against the record
        /// before.
        #[arg(long, value_name = "TIME", conflicts_with = "files")]
        from: Option<String>,
        /// Only the records stamped before this time (RFC 3339,
        /// exclusive; databases).
        #[arg(long, value_name = "TIME", conflicts_with = "files")]
        to: Option<String>,
        /// Public keys of the checkpoints' signers, one per line (every key
        /// that ever signed): checkpoints must then be signed by one.
        #[arg(long, value_name = "FILE")]
        keys: Option<PathBuf>,
        /// Copies of checkpoint records kept elsewhere: the
        /// `checkpoint_copy` file (or `query --json` output of
        /// `fabric_audit.checkpoint` records), a directory of such files
        /// (a file sink's, every `*.jsonl` in it), or the URL of the
        /// `checkpoint_copy_database_url` database. The chains must still
        /// hold each, unchanged.
        #[arg(long, value_name = "FILE|DIR|URL")]
        checkpoints: Option<String>,
        /// The result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make a checkpoint signing key: writes the secret key to FILE (mode
    /// 0600, never overwritten) and its public key to FILE.pub, and prints
    /// the public key.
    Keygen {
        /// The key's name, carried by every signature (a host or service
        /// name: printable ASCII, no spaces or `+`).
        #[arg(long)]
        name: String,
        /// Where to write the secret key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Create or update the audit tables.
    Migrate {
        #[command(flatten)]
        db: Database,
        /// Print the schema's SQL for the URL's backend instead of applying
        /// it (for an application whose own migration tool owns the schema).
        #[arg(long)]
        print_sql: bool,
    },
    /// Write the records of the NATS JetStream stream into the database
    /// (feature `nats`): exactly once, acknowledged after the commit.
    #[cfg(feature = "nats")]
    Collect(collect::Collect),
}

#[derive(Args)]
struct Database {
    /// Configuration file (TOML or YAML, `audit` section).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH, postgres://…, mysql://… (overrides the
    /// configuration).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// The query command's filters: one flag per [`AuditQuery::PARAMETERS`]
/// (`actor_id` is `--actor-id`), kept as given, in command-line order, for
/// the parser the HTTP API uses too ([`AuditQuery::from_pairs`]).
#[derive(Debug, Default)]
struct Filters(Vec<(&'static str, OsString)>);

impl Filters {
    /// The query the flags ask for, or one line naming the flag at fault.
    fn query(&self) -> anyhow::Result<AuditQuery> {
        let pairs = self
            .0
            .iter()
            .map(|(name, value)| (name, value.as_encoded_bytes()));
        AuditQuery::from_pairs(pairs).map_err(|e| Usage(as_flags(&e.to_string())).into())
    }
}

/// The parser's message with the flag's name: "`has_flag` is empty" is
/// "--has-flag is empty".
fn as_flags(message: &str) -> String {
    AuditQuery::PARAMETERS
        .iter()
        .find_map(|name| {
            let quoted = format!("`{name}`");
            let rest = message.strip_prefix(&quoted)?;
            Some(format!("{}{rest}", flag(name)))
        })
        .unwrap_or_else(|| message.to_owned())
}

fn flag(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

fn filter_help(name: &str) -> &'static str {
    match name {
        "action" => "Exact, or a prefix when it ends in `.`",
        "from" => "RFC 3339, inclusive",
        "to" => "RFC 3339, exclusive",
        "limit" => "Records per page, 1 to 1000 (default 50)",
        "cursor" => "Continue after a previous page",
        "has_flag" => "Records whose actor has this flag",
        _ => "Exact match",
    }
}

impl clap::FromArgMatches for Filters {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut filters = Self::default();
        filters.update_from_arg_matches(matches)?;
        Ok(filters)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        let mut given = Vec::new();
        for name in AuditQuery::PARAMETERS {
            if let (Some(at), Some(values)) = (matches.indices_of(name), matches.get_raw(name)) {
                given.extend(
                    at.zip(values)
                        .map(|(at, value)| (at, *name, value.to_owned())),
                );
            }
        }
        // Command-line order: the parser then sees what the API would.
        given.sort_by_key(|(at, ..)| *at);
        self.0 = given
            .into_iter()
            .map(|(_, name, value)| (name, value))
            .collect();
        Ok(())
    }
}

impl Args for Filters {
    fn augment_args(command: clap::Command) -> clap::Command {
        AuditQuery::PARAMETERS
            .iter()
            .fold(command, |command, name| {
                // Leaked once per process: clap keeps flag names for its life.
                let long: &'static str = Box::leak(flag(name)[2..].to_owned().into_boxed_str());
                command.arg(
                    clap::Arg::new(*name)
                        .long(long)
                        .value_name("VALUE")
                        .help(filter_help(name))
                        // Every value and repetition reaches the shared parser,
                        // which refuses what the API refuses, in its words.
                        .value_parser(clap::value_parser!(OsString))
                        .action(clap::ArgAction::Append)
                        .allow_hyphen_values(true),
                )
            })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

/// A mistake of the user's: one line, exit code 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<Usage>().is_some()
                || e.downcast_ref::<fabric_audit::Error>()
                    .is_some_and(|e| e.is_invalid_input());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

impl Database {
    /// The configuration and the database URL to use.
    fn resolve(&self) -> anyhow::Result<(AuditConfig, String)> {
        let config = AuditConfig::load(self.config.as_deref())?;
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| config.database_url.clone());
        Ok((config, url))
    }
}

/// Prints a verification: one line per chain and one per break, or JSON.
fn print_verification(v: &fabric_audit::verify::Verification, json: bool) -> anyhow::Result<()> {
    use fabric_audit::verify::Break;
    if json {
        println!("{}", serde_json::to_string(v)?);
        return Ok(());
    }
    for chain in &v.chains {
        let mut span = match (chain.first_seq, chain.last_seq) {
            (Some(first), Some(last)) => format!(", seq {first}..{last}"),
            _ => String::new(),
        };
        if let Some(below) = chain.purged_below {
            span.push_str(&format!(" (purged below seq {below})"));
        }
        if chain.window.is_some() {
            span.push_str(" (the time window's)");
        }
        let state = match chain.breaks.len() {
            0 => "intact".to_owned(),
            n => format!("{n} break(s)"),
        };
        let checkpoints = match (chain.checkpoints, chain.last_checkpoint) {
            (0, _) | (_, None) => String::new(),
            (n, Some(last)) => {
                let signed = if v.signatures_checked {
                    format!("{} signed, ", chain.signed_checkpoints)
                } else {
                    "signatures not checked, ".to_owned()
                };
                let end = if chain.closed {
                    "closed at shutdown".to_owned()
                } else {
                    format!("{} record(s) after the last", chain.unanchored)
                };
                format!(", {n} checkpoint(s) ({signed}last at seq {last}, {end})")
            }
        };
        println!(
            "chain {}: {} records{span}{checkpoints}: {state}",
            chain.chain, chain.records
        );
        for b in &chain.breaks {
            match b {
                Break::Modified { seq } => println!("  modified: seq {seq}"),
                Break::Deleted { from, to } if from == to => println!("  deleted: seq {from}"),
                Break::Deleted { from, to } => println!("  deleted: seq {from}..{to}"),
                Break::OutOfOrder { seq, after } => {
                    println!("  inserted or moved: seq {seq} after seq {after}")
                }
                Break::Unchained { index } => {
                    println!("  no valid seq or hash: the chain's record #{index}")
                }
                Break::CheckpointMismatch { seq } => {
                    println!("  checkpoint does not match the chain: seq {seq}")
                }
                Break::BadSignature { seq, key } => {
                    println!("  bad signature by key {key}: checkpoint seq {seq}")
                }
                Break::UnknownKey { seq, key } => {
                    println!("  signed by an unknown key {key}: checkpoint seq {seq}")
                }
                Break::Unsigned { seq } => println!("  unsigned checkpoint: seq {seq}"),
                Break::MissingCheckpoint { after, by } => println!(
                    "  missing checkpoint: none after seq {after} though one was due by seq {by}"
                ),
                Break::Truncated { from, to } => {
                    println!(
                        "  truncated: seq {from}..{to} gone (a checkpoint copy names seq {to})"
                    )
                }
                Break::WitnessMismatch { seq } => {
                    println!("  differs from its checkpoint copy: seq {seq}")
                }
                other => println!("  {other:?}"),
            }
        }
    }
    for chain in v.chains.iter().filter(|c| !c.gaps.is_empty()) {
        for gap in &chain.gaps {
            let failed = match gap.failed_seqs {
                Some((from, to)) => format!(", {} failed (seq {from}..{to})", gap.failed),
                None => String::new(),
            };
            println!(
                "chain {}: records lost when written, reported at seq {}: {} dropped{failed}",
                chain.chain, gap.seq, gap.dropped
            );
        }
    }
    for unreadable in &v.unreadable {
        println!("unreadable: {}: {}", unreadable.place, unreadable.error);
    }
    if v.unchained > 0 {
        println!("records without a chain (not checked): {}", v.unchained);
    }
    if v.chains.is_empty() && v.unreadable.is_empty() {
        println!("no chained records found");
    }
    Ok(())
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "nats")]
        Command::Collect(args) => {
            let (config, url) = args.db.resolve()?;
            collect::run(args, &config, url).await?;
        }
        Command::Migrate {
            db,
            print_sql: true,
        } => {
            let (_, url) = db.resolve()?;
            print!("{}", fabric_audit::schema_sql(&url)?);
        }
        Command::Migrate { db, .. } => {
            let (_, url) = db.resolve()?;
            blocking(move || fabric_audit::migrate(&url)).await?;
            println!("audit tables are up to date");
        }
        Command::Purge { db, days } => {
            let (config, url) = db.resolve()?;
            let days_given = days.is_some();
            let retention = match days {
                Some(days) => days
                    .parse::<Retention>()
                    .map_err(|e| Usage(format!("--days: {e}")))?,
                None => config.db_retention_days,
            };
            let Some(days) = retention.as_days() else {
                if days_given {
                    bail!(Usage(
                        "--days forever keeps every record: there is nothing to purge".into()
                    ));
                }
                println!("nothing to purge: db_retention_days is forever");
                return Ok(());
            };
            // The cuts of hash chains are stated signed, by the service's key.
            let key = match &config.checkpoint_key_file {
                Some(path) => Some(
                    fabric_audit::checkpoint::SigningKey::from_file(path)
                        .map_err(|e| Usage(e.to_string()))?,
                ),
                None => None,
            };
            let deleted =
                blocking(move || fabric_audit::purge_signed(&url, retention, key.as_ref())).await?;
            println!("purged {deleted} records older than {days} days");
        }
        Command::Query {
            db,
            filters,
            json,
            count,
        } => {
            let query = filters.query()?;
            let (config, url) = db.resolve()?;
            let store = store(&config, &url).await?;
            let page = store.query(&query).await?;
            print_page(&page.items, json)?;
            if let Some(cursor) = page.next_cursor {
                eprintln!("next page: --cursor {cursor}");
            }
            if count {
                let total = store.count(&query).await?;
                let more = if total.is_lower_bound {
                    "more than "
                } else {
                    ""
                };
                eprintln!("total: {more}{}", total.count);
            }
        }
        Command::Import { db, files } => {
            let (_, url) = db.resolve()?;
            import::run(url, files).await?;
        }
        Command::Serve(args) => serve::run(args).await?,
        Command::Verify {
            db,
            files,
            chain,
            from,
            to,
            keys,
            checkpoints,
            json,
        } => {
            let (from, to) = (time_arg("--from", from)?, time_arg("--to", to)?);
            let copies = match checkpoints {
                Some(source) => checkpoint_copies(&source).await?,
                None => Vec::new(),
            };
            let verifier = verifier(keys.as_deref(), &copies)?;
            let verification = match files {
                Some(path) => {
                    blocking(move || fabric_audit::verify::verify_files_with(verifier, path))
                        .await?
                }
                None => {
                    let (config, url) = db.resolve()?;
                    store(&config, &url)
                        .await?
                        .verify_between(verifier, chain.as_deref(), from, to)
                        .await?
                }
            };
            print_verification(&verification, json)?;
            if !verification.is_intact() {
                bail!("the audit records are not intact (see above)");
            }
        }
        Command::Keygen { name, out } => keygen(&name, &out)?,
    }
    Ok(())
}

/// `value` of flag `name` as a time (RFC 3339).
fn time_arg(
    name: &str,
    value: Option<String>,
) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(value) = value else { return Ok(None) };
    match chrono::DateTime::parse_from_rfc3339(&value) {
        Ok(time) => Ok(Some(time.to_utc())),
        Err(e) => Err(Usage(format!(
            "{name} is not an RFC 3339 time such as 2026-12-01T00:00:00Z: {e}"
        ))
        .into()),
    }
}

/// The checkpoint copies at `source`: a file of JSON lines, a directory
/// of them, or a database (its checkpoint records). None at all is an
/// error: a mistyped path or URL must not verify as if no copy was given.
async fn checkpoint_copies(source: &str) -> anyhow::Result<Vec<AuditRecord>> {
    let copies = read_checkpoint_copies(source).await?;
    if copies.is_empty() {
        let place = if is_url(source) {
            "the --checkpoints database".to_owned()
        } else {
            source.to_owned()
        };
        bail!(Usage(format!("no checkpoint copies in {place}")));
    }
    Ok(copies)
}

fn is_url(source: &str) -> bool {
    source.contains("://") || source.starts_with("sqlite:")
}

async fn read_checkpoint_copies(source: &str) -> anyhow::Result<Vec<AuditRecord>> {
    if is_url(source) {
        let store = Store::builder(source).connect().await?;
        let mut query = AuditQuery::new()
            .action(fabric_audit::verify::CHECKPOINT_ACTION)
            .limit(1000)?;
        let mut copies = Vec::new();
        loop {
            let page = store.query(&query).await?;
            copies.extend(page.items);
            match page.next_cursor {
                Some(cursor) => query = query.after(cursor),
                None => return Ok(copies),
            }
        }
    }
    let path = Path::new(source);
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Usage(format!("cannot read {}: {e}", path.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut copies = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Usage(format!("cannot read {}: {e}", file.display())))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let copy: AuditRecord = serde_json::from_str(line)
                .map_err(|e| Usage(format!("{}:{}: {e}", file.display(), n + 1)))?;
            copies.push(copy);
        }
    }
    Ok(copies)
}

/// A verifier holding the signers' keys and the checkpoint copies.
fn verifier(
    keys: Option<&Path>,
    copies: &[AuditRecord],
) -> anyhow::Result<fabric_audit::verify::Verifier> {
    // Large inputs show how far they are (on a terminal only).
    let bar = indicatif::ProgressBar::new_spinner()
        .with_message("records verified")
        .with_finish(indicatif::ProgressFinish::AndClear);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {human_pos} {msg} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut verifier =
        fabric_audit::verify::Verifier::new().progress(move |checked| bar.set_position(checked));
    if let Some(path) = keys {
        let keys = fabric_audit::checkpoint::PublicKey::from_file(path)
            .map_err(|e| Usage(e.to_string()))?;
        if keys.is_empty() {
            return Err(Usage(format!("{}: no public key in it", path.display())).into());
        }
        verifier = verifier.keys(keys);
    }
    copies.iter().for_each(|copy| verifier.witness(copy));
    Ok(verifier)
}

/// Writes a new signing key to `out` (never over an existing file) and its
/// public key beside it.
fn keygen(name: &str, out: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let key =
        fabric_audit::checkpoint::SigningKey::generate(name).map_err(|e| Usage(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .map_err(|e| Usage(format!("cannot create {}: {e}", out.display())))?;
    writeln!(file, "{}", key.to_secret_text())?;
    file.sync_all()?;
    let public = key.public_key().to_string();
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    std::fs::write(&public_path, format!("{public}\n"))
        .with_context(|| format!("cannot write {}", Path::new(&public_path).display()))?;
    println!("{public}");
    eprintln!(
        "secret key in {} (keep it there: `checkpoint_key_file`), public key in {} (for verifiers: `verify --keys`)",
        out.display(),
        Path::new(&public_path).display()
    );
    Ok(())
}

/// The store over `url`, with the configuration's count cap.
async fn store(config: &AuditConfig, url: &str) -> anyhow::Result<Store> {
    Ok(Store::builder(url)
        .count_cap(config.count_cap)
        .connect()
        .await?)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> fabric_audit::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

fn print_page(records: &[AuditRecord], json: bool) -> anyhow::Result<()> {
    if json {
        for record in records {
            println!("{}", serde_json::to_string(record)?);
        }
        return Ok(());
    }
    println!(
        "{:<27}  {:<24}  {:<20}  {:<24}  ID",
        "TIMESTAMP", "ACTION", "ACTOR", "RESOURCE"
    );
    for r in records {
        let resource = match (r.resource_type(), r.resource_id()) {
            (Some(t), Some(id)) => format!("{t}/{id}"),
            (Some(t), None) => t.to_owned(),
            (None, Some(id)) => id.to_owned(),
            (None, None) => "-".to_owned(),
        };
        println!(
            "{:<27}  {:<24}  {:<20}  {:<24}  {}",
            r.timestamp().format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            r.action(),
            r.actor_id().unwrap_or("-"),
            resource,
            r.id()
        );
    }
    Ok(())
}

/// Serves the `metrics` facade's values for Prometheus on `addr`, for as
/// long as the process runs.
fn serve_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| Usage(format!("cannot serve metrics on {addr}: {e}")))?;
    eprintln!("serving Prometheus metrics on http://{addr}/metrics");
    Ok(())
}

/// The API and the CLI read filters alike: for any flags/parameters, both
/// refuse, in the same words (modulo `--flag` for `` `parameter` ``), or
/// both accept and answer with the same records.
#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::ffi::OsStringExt;
    use std::sync::{Arc, OnceLock};

    use axum::body::Body;
    use fabric_audit::{Batch, DatabaseSink, Sink};
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use tower::ServiceExt;

    use fabric_audit::http;

    use super::serve::NoAuth;
    use super::*;

    struct Fixture {
        runtime: tokio::runtime::Runtime,
        app: axum::Router,
        store: Store,
        cursor: String,
        _dir: tempfile::TempDir,
    }

    /// 30 records in SQLite, and the API over them.
    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("audit.db").display());
            let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
            let records: Vec<Arc<AuditRecord>> = (0..30)
                .map(|i| {
                    let record =
                        AuditRecord::builder(["post.created", "post.deleted", "user.login"][i % 3])
                            .timestamp(
                                base.with_timezone(&chrono::Utc)
                                    - chrono::Duration::hours(i as i64),
                            )
                            .actor_id(format!("u-{}", i % 4))
                            .actor_type(if i % 5 == 0 { "service" } else { "user" })
                            .actor_flags(if i % 7 == 0 { vec!["admin"] } else { vec![] })
                            .resource("post", (i % 2).to_string());
                    Arc::new(record.build())
                })
                .collect();
            let mut sink = DatabaseSink::builder(&url).keep_forever().build().unwrap();
            sink.write(&Batch::new(&records)).unwrap();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let store = runtime.block_on(Store::connect(&url)).unwrap();
            let first = runtime
                .block_on(store.query(&AuditQuery::new().limit(3).unwrap()))
                .unwrap();
            Fixture {
                app: http::router(store.clone(), NoAuth),
                store,
                cursor: first.next_cursor.unwrap().to_string(),
                runtime,
                _dir: dir,
            }
        })
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        let cursor = fixture().cursor.clone();
        let texts: Vec<String> = [
            "post.",
            "post.created",
            "user.",
            "u-1",
            "u-3",
            "user",
            "service",
            "admin",
            "post",
            "1",
            "0",
            "2026-01-01T00:00:00Z",
            "2025-12-31T20:00:00+02:00",
            "2025-12-31t12:00:00z",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "5",
            "1000",
            "1001",
            "-1",
            "+3",
            "4294967296",
            "99999999999999999999999",
            "",
            "\0",
            "a\u{7}\r\n",
            "-x",
            "--limit",
            "--",
            "-h",
            "%",
            "+",
            "&",
            "=",
            "abc",
            "é",
        ]
        .into_iter()
        .map(String::from)
        .chain([cursor])
        .collect();
        prop_oneof![
            4 => proptest::sample::select(texts).prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..6),
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            12 => proptest::sample::select(AuditQuery::PARAMETERS),
            1 => proptest::sample::select(&["actor", "bogus", "Limit"][..]),
        ]
    }

    /// Every byte percent-encoded: the API sees exactly these bytes.
    fn encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("%{b:02X}")).collect()
    }

    async fn api(app: &axum::Router, pairs: &[(&str, Vec<u8>)]) -> (u16, serde_json::Value) {
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k.as_bytes()), encode(v)))
            .collect();
        let uri = format!("/api/v1/audit?{}", query.join("&"));
        let request = axum::http::Request::get(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn cli(pairs: &[(&str, Vec<u8>)]) -> Result<Filters, clap::Error> {
        let mut args: Vec<OsString> = vec!["fabric-audit".into(), "query".into()];
        for (key, value) in pairs {
            args.push(flag(key).into());
            args.push(OsString::from_vec(value.clone()));
        }
        match Cli::try_parse_from(args)?.command {
            Command::Query { filters, .. } => Ok(filters),
            _ => unreachable!("the query command"),
        }
    }

    fn ids(items: &serde_json::Value) -> Vec<String> {
        let items = items.as_array().unwrap();
        items
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_api_and_the_cli_give_the_same_answers(
            pairs in proptest::collection::vec((key(), value()), 0..5)
        ) {
            let f = fixture();
            let (status, body) = f.runtime.block_on(api(&f.app, &pairs));
            let known = pairs.iter().all(|(k, _)| AuditQuery::PARAMETERS.contains(k));
            let filters = match cli(&pairs) {
                Ok(filters) => filters,
                Err(error) => {
                    // Only a flag the CLI does not have is clap's to refuse.
                    prop_assert!(!known, "clap refused {pairs:?}: {error}");
                    prop_assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
                    prop_assert_eq!(status, 400, "{}", body);
                    return Ok(());
                }
            };
            prop_assert!(known);
            match filters.query() {
                Err(error) => {
                    prop_assert_eq!(status, 400, "{}", body);
                    let message = body["error"]["message"].as_str().unwrap();
                    prop_assert_eq!(error.to_string(), as_flags(message));
                    prop_assert!(error.to_string().starts_with("--"), "{}", error);
                }
                Ok(query) => {
                    prop_assert_eq!(status, 200, "{}", body);
                    let by_pairs = AuditQuery::from_pairs(pairs.iter().map(|(k, v)| (k, v)));
                    prop_assert_eq!(&by_pairs.unwrap(), &query);
                    let page = f.runtime.block_on(f.store.query(&query)).unwrap();
                    let want: Vec<String> = page.items.iter().map(|r| r.id().to_string()).collect();
                    prop_assert_eq!(ids(&body["items"]), want);
                    prop_assert_eq!(
                        body["next_cursor"].as_str().map(str::to_owned),
                        page.next_cursor.map(|c| c.to_string())
                    );
                }
            }
        }
    }

    #[test]
    fn flags_keep_their_command_line_order_and_repetitions() {
        let filters = cli(&[
            ("limit", b"5".to_vec()),
            ("action", b"a".to_vec()),
            ("limit", b"-6".to_vec()),
        ])
        .unwrap();
        let given: Vec<_> = filters
            .0
            .iter()
            .map(|(k, v)| (*k, v.to_str().unwrap()))
            .collect();
        assert_eq!(given, [("limit", "5"), ("action", "a"), ("limit", "-6")]);
        assert_eq!(
            filters.query().unwrap_err().to_string(),
            "--limit is given twice"
        );
        assert_eq!(
            as_flags("`resource_type` is empty"),
            "--resource-type is empty"
        );
        assert_eq!(as_flags("unknown parameter `x`"), "unknown parameter `x`");
    }
}
