//! Settings from a file and the environment.
//!
//! The keys and defaults are those of `fastapi-fabric-audit`, the Python
//! package this crate is the Rust counterpart of, so that a service moving
//! from it keeps its configuration files and environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml, Yaml};
use figment::Figment;
use serde::Deserialize;

use crate::{Error, Result, Retention};

/// The audit settings, under an `audit` table (TOML) or section (YAML).
///
/// | key | default | |
/// |---|---|---|
/// | `db_retention_days` | 30 | database rows kept: days from 1 to 36 525, or `"forever"` |
/// | `queue_maxsize` | 10000 | records waiting per sink; more are dropped and counted |
/// | `log_file` | `logs/audit.jsonl` | the JSON-lines file (daily files beside it) |
/// | `log_retention_days` | 90 | rotated files kept: days from 1 to 36 525, or `"forever"` |
/// | `database_url` | `sqlite://logs/audit.db` | `sqlite://…`, `postgres://…`, `mysql://…` |
/// | `run_migrations` | true | false: the schema is the application's (see `schema_sql`); the sink only checks it |
/// | `max_record_bytes` | 32768 | the most text one record holds (longer values are cut and marked); at least 1024 |
/// | `bind` | `127.0.0.1:8080` | where `fabric-audit serve` listens |
/// | `count_cap` | 10000 | up to how many records a total (`count=true`, `--count`) counts exactly: 1 to 1 000 000 |
/// | `header_read_timeout_secs` | 10 | seconds `fabric-audit serve` gives a client to send a request's header (also the keep-alive idle time): 1 to 3 600 |
/// | `request_timeout_secs` | 30 | seconds `fabric-audit serve` gives a request before answering 503 `timeout`: 1 to 3 600 |
/// | `max_connections` | 10000 | connections `fabric-audit serve` keeps open (fitted to its open-file limit): 1 to 1 000 000 |
/// | `max_requests` | 256 | requests `fabric-audit serve` handles at once; more are answered 503 `busy`: 1 to 100 000 |
/// | `metrics_bind` | none (off) | where `fabric-audit serve` serves Prometheus metrics (`GET /metrics`) |
/// | `client_ip_source` | `ConnectInfo` | where the query API reads the client address (feature `http`; see [`RequestContextLayer::client_ip_source`](crate::http::RequestContextLayer::client_ip_source)) |
/// | `tokens` | none | `[{name, token or sha256, permissions}]` for the query API |
/// | `nats_url` | none | NATS server(s) for the NATS sink and `fabric-audit collect` (feature `nats`) |
/// | `nats_subject` | `audit` | records go to `<nats_subject>.<action>` |
/// | `nats_stream` | `AUDIT` | the JetStream stream |
/// | `nats_max_age_secs`, `nats_max_bytes`, `nats_duplicate_window_secs` | 604800, 10 GiB, 1800 | the stream's limits |
/// | `nats_user` + `nats_password`, `nats_token`, `nats_creds_file` | none | NATS credentials (never printed) |
/// | `checkpoint_key_file` | none | the key that signs each chain's checkpoints (`fabric-audit keygen`) |
/// | `checkpoint_copy` | none | a file every checkpoint record is appended to as well |
/// | `checkpoint_copy_database_url` | none | a database every checkpoint record is written to as well (password never printed) |
/// | `checkpoint_every_records`, `checkpoint_every_secs` | 10000, 60 | how often each chain is checkpointed (on when a key or a copy is set) |
///
/// Environment variables `FABRIC_AUDIT_<KEY>` (`FABRIC_AUDIT_QUEUE_MAXSIZE`,
/// `FABRIC_AUDIT_DB_RETENTION_DAYS=forever`) override the file. Unknown
/// keys and bad values are errors that name the key.
///
/// `Debug` hides the password of `database_url` and the tokens' secrets.
///
/// # Examples
///
/// ```
/// use fabric_audit::{AuditConfig, Retention};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("audit.toml");
/// std::fs::write(&path, "[audit]\nqueue_maxsize = 500\nlog_retention_days = \"forever\"\n").unwrap();
/// let config = AuditConfig::load(Some(&path))?;
/// assert_eq!(config.queue_maxsize, 500);
/// assert_eq!(config.db_retention_days, Retention::days(30)?);
/// assert_eq!(config.log_retention_days, Retention::FOREVER);
///
/// std::fs::write(&path, "[audit]\nqueue_max = 500\n").unwrap();
/// let err = AuditConfig::load(Some(&path)).unwrap_err();
/// assert!(err.to_string().contains("queue_max"));
/// # Ok::<(), fabric_audit::Error>(())
/// ```
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AuditConfig {
    /// How long database rows are kept.
    pub db_retention_days: Retention,
    /// Records waiting per sink.
    pub queue_maxsize: usize,
    /// The JSON-lines file.
    pub log_file: PathBuf,
    /// How long rotated files are kept.
    pub log_retention_days: Retention,
    /// The database.
    pub database_url: String,
    /// The most text one record holds; longer values are cut and marked
    /// (at least 1 024).
    pub max_record_bytes: usize,
    /// Whether the database sink applies its migrations (`true`), or
    /// leaves the schema to the application's own tool and only checks it.
    pub run_migrations: bool,
    /// Where the query API listens.
    pub bind: SocketAddr,
    /// Up to how many records a total counts exactly (1 to 1 000 000).
    pub count_cap: u32,
    /// Seconds `fabric-audit serve` gives a client to send a request's
    /// header, and keeps an idle keep-alive connection (1 to 3 600).
    pub header_read_timeout_secs: u64,
    /// Seconds `fabric-audit serve` gives a request (1 to 3 600).
    pub request_timeout_secs: u64,
    /// Connections `fabric-audit serve` keeps open (1 to 1 000 000); fitted
    /// down to its open-file limit.
    pub max_connections: usize,
    /// Requests `fabric-audit serve` handles at once (1 to 100 000).
    pub max_requests: usize,
    /// Where `fabric-audit serve` serves Prometheus metrics; `None` (the
    /// default) serves none.
    pub metrics_bind: Option<SocketAddr>,
    /// Where the query API reads the client address from: the socket
    /// (`ConnectInfo`, the default) or a header set by the proxy in front
    /// (`RightmostXForwardedFor`, `RightmostForwarded`, `XRealIp`,
    /// `CfConnectingIp`, …).
    #[cfg(feature = "http")]
    pub client_ip_source: axum_client_ip::ClientIpSource,
    /// Tokens of the query API.
    pub tokens: Vec<TokenConfig>,
    /// NATS server(s) for the NATS sink and `fabric-audit collect`.
    pub nats_url: Option<String>,
    /// The subject prefix: records go to `<nats_subject>.<action>`.
    pub nats_subject: String,
    /// The JetStream stream's name.
    pub nats_stream: String,
    /// How long the stream keeps a record, in seconds.
    pub nats_max_age_secs: u64,
    /// The most bytes the stream holds (-1: unlimited).
    pub nats_max_bytes: i64,
    /// How long the server deduplicates a record id, in seconds.
    pub nats_duplicate_window_secs: u64,
    /// NATS user (with `nats_password`).
    pub nats_user: Option<String>,
    /// NATS password.
    pub nats_password: Option<String>,
    /// NATS token.
    pub nats_token: Option<String>,
    /// NATS `.creds` file.
    pub nats_creds_file: Option<PathBuf>,
    /// The key that signs each chain's checkpoints (`fabric-audit keygen`
    /// makes one); setting it turns checkpoints on.
    pub checkpoint_key_file: Option<PathBuf>,
    /// A file every checkpoint record is appended to as well, apart from
    /// the sinks' stores; setting it turns checkpoints on.
    pub checkpoint_copy: Option<PathBuf>,
    /// A database every checkpoint record is written to as well (its
    /// `audit_events` table; another server than `database_url`'s): a
    /// `sqlite://…`, `postgres://…` or `mysql://…` URL. Setting it turns
    /// checkpoints on; not with `checkpoint_copy`.
    pub checkpoint_copy_database_url: Option<String>,
    /// A checkpoint after at most this many records (1 to 1 000 000 000).
    pub checkpoint_every_records: u64,
    /// And at least every this many seconds while records come (1 to
    /// 86 400).
    pub checkpoint_every_secs: u64,
}

/// One bearer token of the query API.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TokenConfig {
    /// The token's name: the actor id of its reads.
    pub name: String,
    /// The secret itself (prefer `sha256`).
    #[serde(default)]
    pub token: Option<String>,
    /// The hex SHA-256 digest of the secret.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Its permissions, such as `audit:read`.
    pub permissions: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    /// Without the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuditConfig {
    /// With the database password and the tokens' secrets left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("AuditConfig");
        d.field("db_retention_days", &self.db_retention_days)
            .field("queue_maxsize", &self.queue_maxsize)
            .field("log_file", &self.log_file)
            .field("log_retention_days", &self.log_retention_days)
            .field("database_url", &redact_url(&self.database_url))
            .field("max_record_bytes", &self.max_record_bytes)
            .field("run_migrations", &self.run_migrations)
            .field("bind", &self.bind)
            .field("count_cap", &self.count_cap)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("max_connections", &self.max_connections)
            .field("max_requests", &self.max_requests)
            .field("metrics_bind", &self.metrics_bind);
        #[cfg(feature = "http")]
        d.field("client_ip_source", &self.client_ip_source);
        let secret = |value: &Option<String>| value.as_ref().map(|_| "***");
        d.field("tokens", &self.tokens)
            .field("nats_url", &self.nats_url.as_deref().map(redact_url))
            .field("nats_subject", &self.nats_subject)
            .field("nats_stream", &self.nats_stream)
            .field("nats_max_age_secs", &self.nats_max_age_secs)
            .field("nats_max_bytes", &self.nats_max_bytes)
            .field(
                "nats_duplicate_window_secs",
                &self.nats_duplicate_window_secs,
            )
            .field("nats_user", &self.nats_user)
            .field("nats_password", &secret(&self.nats_password))
            .field("nats_token", &secret(&self.nats_token))
            .field("nats_creds_file", &self.nats_creds_file)
            .field("checkpoint_key_file", &self.checkpoint_key_file)
            .field("checkpoint_copy", &self.checkpoint_copy)
            .field(
                "checkpoint_copy_database_url",
                &self.checkpoint_copy_database_url.as_deref().map(redact_url),
            )
            .field("checkpoint_every_records", &self.checkpoint_every_records)
            .field("checkpoint_every_secs", &self.checkpoint_every_secs)
            .finish()
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            db_retention_days: Retention::days(30).expect("30 days is a retention"),
            queue_maxsize: 10_000,
            log_file: PathBuf::from("logs/audit.jsonl"),
            log_retention_days: Retention::days(90).expect("90 days is a retention"),
            database_url: "sqlite://logs/audit.db".to_owned(),
            max_record_bytes: 32 * 1024,
            run_migrations: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            count_cap: 10_000,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 10_000,
            max_requests: 256,
            metrics_bind: None,
            #[cfg(feature = "http")]
            client_ip_source: axum_client_ip::ClientIpSource::ConnectInfo,
            tokens: Vec::new(),
            nats_url: None,
            nats_subject: "audit".to_owned(),
            nats_stream: "AUDIT".to_owned(),
            nats_max_age_secs: 7 * 24 * 3600,
            nats_max_bytes: 10 << 30,
            nats_duplicate_window_secs: 30 * 60,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_creds_file: None,
            checkpoint_key_file: None,
            checkpoint_copy: None,
            checkpoint_copy_database_url: None,
            checkpoint_every_records: 10_000,
            checkpoint_every_secs: 60,
        }
    }
}

impl AuditConfig {
    /// Reads the `audit` section of `file` (TOML, or YAML for `.yaml` /
    /// `.yml`), if given, then `FABRIC_AUDIT_*` variables, over the
    /// defaults.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, an unknown key, a bad value;
    /// the message names the key. Also a token with neither or both of
    /// `token` and `sha256`, a zero `queue_maxsize`, serve limits out of
    /// their ranges (see the table), a `max_record_bytes`
    /// below 1 024, and a retention of zero days or more than 36 525.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::config(format!(
                    "config file not found: {}",
                    path.display()
                )));
            }
            let yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            figment = if yaml {
                figment.merge(Yaml::file_exact(path))
            } else {
                figment.merge(Toml::file_exact(path))
            };
        }
        figment =
            figment.merge(Env::prefixed("FABRIC_AUDIT_").map(|key| format!("audit.{key}").into()));
        let config = match figment.extract_inner::<Self>("audit") {
            Ok(config) => config,
            Err(e) if is_missing_section(&e) => Self::default(),
            Err(e) => return Err(describe(e)),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if !(1..=1_000_000).contains(&self.count_cap) {
            return Err(Error::invalid(format!(
                "configuration: `audit.count_cap` must be from 1 to 1000000; not {}",
                self.count_cap
            )));
        }
        let limits = [
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs,
                3600,
            ),
            ("request_timeout_secs", self.request_timeout_secs, 3600),
            ("max_connections", self.max_connections as u64, 1_000_000),
            ("max_requests", self.max_requests as u64, 100_000),
            (
                "checkpoint_every_records",
                self.checkpoint_every_records,
                1_000_000_000,
            ),
            ("checkpoint_every_secs", self.checkpoint_every_secs, 86_400),
        ];
        for (key, value, most) in limits {
            if !(1..=most).contains(&value) {
                return Err(Error::invalid(format!(
                    "configuration: `audit.{key}` must be from 1 to {most}; not {value}"
                )));
            }
        }
        if self.checkpoint_copy.is_some() && self.checkpoint_copy_database_url.is_some() {
            return Err(Error::config(
                "configuration: set one of `audit.checkpoint_copy` and `audit.checkpoint_copy_database_url`, not both",
            ));
        }
        if self.queue_maxsize == 0 {
            return Err(Error::config(
                "configuration: `audit.queue_maxsize` must be at least 1",
            ));
        }
        if self.max_record_bytes < MIN_RECORD_BYTES {
            return Err(Error::config(format!(
                "configuration: `audit.max_record_bytes` must be at least {MIN_RECORD_BYTES}; not {}",
                self.max_record_bytes
            )));
        }
        for token in &self.tokens {
            if token.token.is_some() == token.sha256.is_some() {
                return Err(Error::config(format!(
                    "configuration: token `{}` needs exactly one of `token` and `sha256`",
                    token.name
                )));
            }
        }
        Ok(())
    }
}

/// The smallest `max_record_bytes`: room for a record's own fields.
const MIN_RECORD_BYTES: usize = 1024;

/// `url` with the password of its user info, and the values of query
/// parameters that look like secrets, replaced by `***`: for `Debug`
/// output. Errs on the side of hiding: the user info is taken to end at the
/// last `@`, so that a raw `@`, `/` or `?` in a password hides its tail too.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_query(url);
    };
    match rest.rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***{}", redact_query(&rest[at..]))
        }
        _ => format!("{scheme}://{}", redact_query(rest)),
    }
}

/// The values of `password=`, `token=` and the like after the first `?`.
fn redact_query(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key"]
        .iter()
        .any(|s| key.contains(s))
}

/// One line per problem, each naming its key and where the value came
/// from; figment's error is chained as the cause.
fn describe(error: figment::Error) -> Error {
    let lines: Vec<String> = error
        .clone()
        .into_iter()
        .map(|e| {
            // `extract_inner` leaves the section's name at the end of the
            // path; the key reads from the section down.
            let mut path = e.path.clone();
            if path.last().map(String::as_str) == Some("audit") {
                path.pop();
            }
            let key = std::iter::once("audit".to_owned())
                .chain(path)
                .collect::<Vec<_>>()
                .join(".");
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" (in {s})"))
                .unwrap_or_default();
            format!("`{key}`: {}{source}", e.kind)
        })
        .collect();
    Error::config(format!("configuration: {}", lines.join("; "))).because(error)
}

/// No `audit` section at all: the defaults apply.
fn is_missing_section(error: &figment::Error) -> bool {
    matches!(&error.kind, figment::error::Kind::MissingField(field) if field == "audit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        let cases = [
            (
                "postgres://app:s3cret@db.internal:5432/audit",
                "postgres://app:***@db.internal:5432/audit",
            ),
            (
                "mysql://root:p@ss/w?rd@127.0.0.1/audit",
                "mysql://root:***@127.0.0.1/audit",
            ),
            (
                "postgres://app@db/audit?sslmode=require&password=s3cret",
                "postgres://app@db/audit?sslmode=require&password=***",
            ),
            (
                "postgres://db/audit?Auth_Token=s3cret",
                "postgres://db/audit?Auth_Token=***",
            ),
            ("sqlite://logs/audit.db", "sqlite://logs/audit.db"),
            ("sqlite://logs/a@b.db", "sqlite://logs/a@b.db"),
            ("logs/audit.db", "logs/audit.db"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let config = AuditConfig {
            database_url: "postgres://app:hunter2@db/audit?password=hunter3".into(),
            checkpoint_copy_database_url: Some("postgres://copy:hunter5@other/audit".into()),
            tokens: vec![TokenConfig {
                name: "ops".into(),
                token: Some("hunter4".into()),
                sha256: None,
                permissions: vec!["audit:read".into()],
            }],
            ..AuditConfig::default()
        };
        let text = format!("{config:?}");
        for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("postgres://app:***@db/audit"), "{text}");
        assert!(text.contains("\"ops\""), "{text}");
    }
}
