//! Settings from a file and the environment, with the Python package's keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml, Yaml};
use figment::Figment;
use serde::Deserialize;

use crate::{Error, Result};

/// The audit settings, under an `audit` table (TOML) or section (YAML).
///
/// | key | default | |
/// |---|---|---|
/// | `db_retention_days` | 30 | database rows kept |
/// | `queue_maxsize` | 10000 | records waiting per sink; more are dropped and counted |
/// | `log_file` | `logs/audit.jsonl` | the JSON-lines file (daily files beside it) |
/// | `log_retention_days` | 90 | rotated files kept |
/// | `database_url` | `sqlite://logs/audit.db` | `sqlite://…`, `postgres://…`, `mysql://…` |
/// | `bind` | `127.0.0.1:8080` | where `fabric-audit serve` listens |
/// | `tokens` | none | `[{name, token or sha256, permissions}]` for the query API |
///
/// Environment variables `FABRIC_AUDIT_<KEY>` (`FABRIC_AUDIT_QUEUE_MAXSIZE`)
/// override the file. Unknown keys and bad values are errors that name the
/// key.
///
/// # Examples
///
/// ```
/// use fabric_audit::AuditConfig;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("audit.toml");
/// std::fs::write(&path, "[audit]\nqueue_maxsize = 500\n").unwrap();
/// let config = AuditConfig::load(Some(&path))?;
/// assert_eq!(config.queue_maxsize, 500);
/// assert_eq!(config.db_retention_days, 30);
///
/// std::fs::write(&path, "[audit]\nqueue_max = 500\n").unwrap();
/// let err = AuditConfig::load(Some(&path)).unwrap_err();
/// assert!(err.to_string().contains("queue_max"));
/// # Ok::<(), fabric_audit::Error>(())
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AuditConfig {
    /// Days of database rows kept.
    pub db_retention_days: u32,
    /// Records waiting per sink.
    pub queue_maxsize: usize,
    /// The JSON-lines file.
    pub log_file: PathBuf,
    /// Days of rotated files kept.
    pub log_retention_days: u32,
    /// The database.
    pub database_url: String,
    /// Where the query API listens.
    pub bind: SocketAddr,
    /// Tokens of the query API.
    pub tokens: Vec<TokenConfig>,
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

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            db_retention_days: 30,
            queue_maxsize: 10_000,
            log_file: PathBuf::from("logs/audit.jsonl"),
            log_retention_days: 90,
            database_url: "sqlite://logs/audit.db".to_owned(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
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
    /// `token` and `sha256`, and a zero `queue_maxsize`.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::invalid(format!(
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
        if self.queue_maxsize == 0 {
            return Err(Error::invalid(
                "configuration: `audit.queue_maxsize` must be at least 1",
            ));
        }
        for token in &self.tokens {
            if token.token.is_some() == token.sha256.is_some() {
                return Err(Error::invalid(format!(
                    "configuration: token `{}` needs exactly one of `token` and `sha256`",
                    token.name
                )));
            }
        }
        Ok(())
    }
}

/// One line per problem, each naming its key and where the value came from.
fn describe(error: figment::Error) -> Error {
    let lines: Vec<String> = error
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
    Error::invalid(format!("configuration: {}", lines.join("; ")))
}

/// No `audit` section at all: the defaults apply.
fn is_missing_section(error: &figment::Error) -> bool {
    matches!(&error.kind, figment::error::Kind::MissingField(field) if field == "audit")
}
