//! What `serve` bounds, from the configuration and the flags, and the
//! warnings it logs when a bound bites.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fabric_audit::AuditConfig;

use super::super::Usage;

/// The bounds the accept loop enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// For a request's header; also how long a keep-alive connection idles.
    pub(crate) header_read_timeout: Duration,
    /// For a request, until its response starts.
    pub(crate) request_timeout: Duration,
    /// Connections kept open.
    pub(crate) max_connections: usize,
    /// Requests handled at once.
    pub(crate) max_requests: usize,
}

/// Open files kept for the process's own use (database, log, listener,
/// metrics, runtime) when `max_connections` is fitted to the file limit.
const RESERVED_FILES: u64 = 64;

/// The flags that override the configuration, as given: checked by
/// [`Limits::new`], in the configuration's words.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Overrides {
    /// Seconds a client gets to send a request's header; also how long an
    /// idle keep-alive connection is kept (default:
    /// `header_read_timeout_secs`, 10).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub(crate) header_read_timeout_secs: Option<String>,
    /// Seconds a request gets before it is answered 503 (default:
    /// `request_timeout_secs`, 30).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub(crate) request_timeout_secs: Option<String>,
    /// Connections kept open, fitted to the open-file limit (default:
    /// `max_connections`, 10000).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) max_connections: Option<String>,
    /// Requests handled at once; more are answered 503 (default:
    /// `max_requests`, 256).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) max_requests: Option<String>,
}

impl Limits {
    /// The configuration's limits, overridden by the flags given; a flag
    /// out of range is one line naming it. The ranges are the
    /// configuration's (`AuditConfig::load` checks those).
    pub(crate) fn new(config: &AuditConfig, flags: &Overrides) -> Result<Self, Usage> {
        let pick = |flag: &str, given: &Option<String>, configured: u64, most: u64| match given {
            None => Ok(configured),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(value) if (1..=most).contains(&value) => Ok(value),
                _ => Err(Usage(format!(
                    "--{flag} must be a whole number from 1 to {most}; not `{text}`"
                ))),
            },
        };
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Self {
            header_read_timeout: Duration::from_secs(pick(
                "header-read-timeout-secs",
                &flags.header_read_timeout_secs,
                config.header_read_timeout_secs,
                3600,
            )?),
            request_timeout: Duration::from_secs(pick(
                "request-timeout-secs",
                &flags.request_timeout_secs,
                config.request_timeout_secs,
                3600,
            )?),
            max_connections: count(pick(
                "max-connections",
                &flags.max_connections,
                config.max_connections as u64,
                1_000_000,
            )?),
            max_requests: count(pick(
                "max-requests",
                &flags.max_requests,
                config.max_requests as u64,
                100_000,
            )?),
        })
    }

    /// `max_connections`, lowered so that the connections and the files
    /// the process needs besides fit under `open_files`; `None` if it fits.
    pub(crate) fn fit_to(&mut self, open_files: u64) -> Option<usize> {
        let room = open_files.saturating_sub(RESERVED_FILES).max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        (self.max_connections > room).then(|| {
            self.max_connections = room;
            room
        })
    }
}

/// The open-file limit after start-up: the soft limit raised to the hard
/// one, so that connections, not the defaults of the shell, bound `serve`.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    /// The soft limit found at start-up (`None`: unlimited).
    pub(crate) was: Option<u64>,
    /// The soft limit now.
    pub(crate) now: Option<u64>,
    /// Why it could not be raised.
    pub(crate) error: Option<std::io::Error>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
#[cfg(unix)]
pub(crate) fn raise_open_file_limit() -> OpenFiles {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current.is_none() || limit.current == limit.maximum {
        return OpenFiles {
            was: limit.current,
            now: limit.current,
            error: None,
        };
    }
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => OpenFiles {
            was: limit.current,
            now: getrlimit(Resource::Nofile).current,
            error: None,
        },
        Err(e) => OpenFiles {
            was: limit.current,
            now: limit.current,
            error: Some(e.into()),
        },
    }
}

/// No file limit to raise.
#[cfg(not(unix))]
pub(crate) fn raise_open_file_limit() -> OpenFiles {
    OpenFiles {
        was: None,
        now: None,
        error: None,
    }
}

/// How often at most one limit's warning is logged.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// A limit that can bite: counts each time, warns at most every
/// [`WARN_EVERY`] with the counts, so that a flood does not flood the log.
#[derive(Debug)]
pub(crate) struct Bite {
    limit: &'static str,
    what: &'static str,
    total: AtomicU64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl Bite {
    pub(crate) const fn new(limit: &'static str, what: &'static str) -> Self {
        Self {
            limit,
            what,
            total: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Counts one bite; warns if the last warning is old enough.
    pub(crate) fn bit(&self, bound: usize) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let since = match *last {
            Some((at, _)) if now.duration_since(at) < WARN_EVERY => return,
            Some((_, then)) => total - then,
            None => total,
        };
        *last = Some((now, total));
        drop(last);
        tracing::warn!(
            target: "fabric_audit",
            limit = self.limit,
            bound,
            since_last_warning = since,
            total,
            "limit reached: {}",
            self.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_and_out_of_range_is_one_line() {
        let config = AuditConfig::default();
        let limits = Limits::new(&config, &Overrides::default()).unwrap();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.request_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_connections, 10_000);
        assert_eq!(limits.max_requests, 256);
        let flags = Overrides {
            max_requests: Some("3".into()),
            ..Overrides::default()
        };
        assert_eq!(Limits::new(&config, &flags).unwrap().max_requests, 3);
        for bad in ["0", "-1", "100001", "many", ""] {
            let flags = Overrides {
                max_requests: Some(bad.into()),
                ..Overrides::default()
            };
            let err = Limits::new(&config, &flags).unwrap_err().0;
            assert!(err.starts_with("--max-requests must be"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn connections_fit_under_the_file_limit() {
        let mut limits = Limits::new(&AuditConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(limits.fit_to(1 << 20), None);
        assert_eq!(limits.fit_to(1024), Some(960));
        assert_eq!(limits.max_connections, 960);
        assert_eq!(limits.fit_to(10), Some(1));
    }
}
