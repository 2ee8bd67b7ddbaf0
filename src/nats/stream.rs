//! Where the records go: the stream's settings, the connection, and the
//! start-up check that the stream is the one configured.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{Error, Result};

/// The JetStream stream that carries the records, and how to reach it:
/// shared by [`NatsSink`](crate::NatsSink) and
/// [`NatsCollector`](crate::NatsCollector).
///
/// | setting | default |
/// |---|---|
/// | [`subject_prefix`](Self::subject_prefix) (`nats_subject`) | `audit`: records go to `audit.<action>` |
/// | [`stream`](Self::stream) (`nats_stream`) | `AUDIT` |
/// | [`max_age`](Self::max_age) (`nats_max_age_secs`) | 7 days |
/// | [`max_bytes`](Self::max_bytes) (`nats_max_bytes`) | 10 GiB; then publishes fail (discard `new`): nothing uncollected is thrown away |
/// | [`duplicate_window`](Self::duplicate_window) (`nats_duplicate_window_secs`) | 30 minutes |
/// | credentials (`nats_user`/`nats_password`, `nats_token`, `nats_creds_file`) | none |
///
/// The stream is created with file storage, limits retention and discard
/// `new` if it does not exist; if it exists with other settings, the sink
/// and the collector say which and do not change it.
///
/// `Debug` leaves the credentials out.
#[derive(Clone)]
#[must_use]
pub struct NatsStream {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) name: String,
    pub(crate) max_age: Duration,
    pub(crate) max_bytes: i64,
    pub(crate) duplicate_window: Duration,
    auth: Auth,
    pub(crate) timeout: Duration,
}

#[derive(Clone)]
enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
    CredsFile(PathBuf),
}

impl NatsStream {
    /// The stream on the NATS server(s) at `url` (`nats://host:4222`, or a
    /// comma-separated list), with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "audit".to_owned(),
            name: "AUDIT".to_owned(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 10 << 30,
            duplicate_window: Duration::from_secs(30 * 60),
            auth: Auth::None,
            timeout: Duration::from_secs(5),
        }
    }

    /// The first subject token(s): a record goes to `<prefix>.<action>`
    /// (characters a subject cannot hold become `_`), and the stream takes
    /// `<prefix>.>`.
    pub fn subject_prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// The stream's name.
    pub fn stream(self, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..self
        }
    }

    /// How long the stream keeps a record (collected or not).
    pub fn max_age(self, max_age: Duration) -> Self {
        Self { max_age, ..self }
    }

    /// The most bytes the stream holds; past it publishes fail, and the
    /// producers keep their records queued and retry.
    pub fn max_bytes(self, max_bytes: i64) -> Self {
        Self { max_bytes, ..self }
    }

    /// How long the server remembers a record id to store a retried
    /// publish once. A producer retrying later than this stores a second
    /// copy in the stream (the collector's insert still stores it once).
    pub fn duplicate_window(self, window: Duration) -> Self {
        Self {
            duplicate_window: window,
            ..self
        }
    }

    /// Authenticates with a user and password.
    pub fn user_password(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            auth: Auth::UserPassword(user.into(), password.into()),
            ..self
        }
    }

    /// Authenticates with a token.
    pub fn token(self, token: impl Into<String>) -> Self {
        Self {
            auth: Auth::Token(token.into()),
            ..self
        }
    }

    /// Authenticates with a `.creds` file (JWT and NKey seed).
    pub fn credentials_file(self, path: impl Into<PathBuf>) -> Self {
        Self {
            auth: Auth::CredsFile(path.into()),
            ..self
        }
    }

    /// How long one publish acknowledgement or JetStream request may take
    /// (5 s).
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The settings of `config`: `nats_url` (required), `nats_subject`,
    /// `nats_stream`, the limits and the credentials.
    ///
    /// # Errors
    ///
    /// `nats_url` is not set.
    #[cfg(feature = "config")]
    pub fn from_config(config: &crate::AuditConfig) -> Result<Self> {
        let url = config
            .nats_url
            .clone()
            .ok_or_else(|| Error::invalid("configuration: `audit.nats_url` is not set"))?;
        let mut target = Self::new(url)
            .subject_prefix(config.nats_subject.clone())
            .stream(config.nats_stream.clone())
            .max_age(Duration::from_secs(config.nats_max_age_secs))
            .max_bytes(config.nats_max_bytes)
            .duplicate_window(Duration::from_secs(config.nats_duplicate_window_secs));
        if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
            target = target.user_password(user, password);
        }
        if let Some(token) = &config.nats_token {
            target = target.token(token);
        }
        if let Some(path) = &config.nats_creds_file {
            target = target.credentials_file(path);
        }
        Ok(target)
    }

    /// Refuses settings no stream can have.
    pub(crate) fn validate(&self) -> Result<()> {
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !self.prefix.split('.').all(token_ok) {
            return Err(Error::invalid(format!(
                "nats subject prefix {:?} is not a subject: dot-separated tokens of letters, digits, `_` and `-`",
                self.prefix
            )));
        }
        if !token_ok(&self.name) {
            return Err(Error::invalid(format!(
                "nats stream name {:?} is not a name: letters, digits, `_` and `-`",
                self.name
            )));
        }
        if self.duplicate_window.is_zero() || self.timeout.is_zero() {
            return Err(Error::invalid(
                "nats duplicate window and timeout must be longer than zero",
            ));
        }
        if !self.max_age.is_zero() && self.duplicate_window > self.max_age {
            return Err(Error::invalid(
                "nats duplicate window must not be longer than the stream's max age",
            ));
        }
        if self.max_bytes == 0 || self.max_bytes < -1 {
            return Err(Error::invalid(
                "nats max bytes must be positive (or -1: unlimited)",
            ));
        }
        Ok(())
    }

    /// The subject of a record with this action.
    pub(crate) fn subject(&self, action: &str) -> String {
        /// Enough for any real action; keeps a hostile one from making
        /// a subject the server refuses.
        const MAX_ACTION: usize = 200;
        let mut subject =
            String::with_capacity(self.prefix.len() + 1 + action.len().min(MAX_ACTION));
        subject.push_str(&self.prefix);
        for token in action.split('.') {
            subject.push('.');
            let start = subject.len();
            subject.extend(token.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            }));
            if subject.len() == start {
                subject.push('_');
            }
            if subject.len() - self.prefix.len() > MAX_ACTION {
                subject.truncate(self.prefix.len() + MAX_ACTION);
                break;
            }
        }
        subject
    }

    /// Connects (failing at once if no server answers).
    pub(crate) async fn connect(&self) -> Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .name("fabric-audit")
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout));
        options = match &self.auth {
            Auth::None => options,
            Auth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => options.token(token.clone()),
            Auth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
                Error::invalid(format!(
                    "cannot read nats credentials file {}: {e}",
                    path.display()
                ))
            })?,
        };
        options.connect(&self.url).await.map_err(|e| {
            Error::unavailable(format!(
                "cannot connect to nats at {}: {e}",
                without_user_info(&self.url)
            ))
        })
    }

    /// The stream configuration this crate creates.
    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![format!("{}.>", self.prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }

    /// Creates the stream, or checks the existing one, and returns it.
    pub(crate) async fn ensure(&self, js: &jetstream::Context) -> Result<stream::Stream> {
        let want = self.config();
        let stream = js.get_or_create_stream(want.clone()).await.map_err(|e| {
            Error::unavailable(format!(
                "cannot create or read nats stream `{}`: {e}",
                self.name
            ))
        })?;
        let problems = mismatches(&stream.cached_info().config, &want);
        if problems.is_empty() {
            return Ok(stream);
        }
        Err(Error::invalid(format!(
            "nats stream `{}` exists with incompatible settings: {}; change or delete the stream, or configure the same settings",
            self.name,
            problems.join("; ")
        )))
    }
}

/// `url` without the user info of any of its servers: for messages.
fn without_user_info(url: &str) -> String {
    url.split(',')
        .map(|server| match (server.find("://"), server.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &server[..scheme + 3], &server[at..])
            }
            (None, Some(at)) => format!("***{}", &server[at..]),
            _ => server.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What differs between the stream found and the one configured.
fn mismatches(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut problems = Vec::new();
    let subject = &want.subjects[0];
    if !have.subjects.iter().any(|s| s == subject || s == ">") {
        problems.push(format!(
            "its subjects {:?} do not include `{subject}`",
            have.subjects
        ));
    }
    if have.storage != want.storage {
        problems.push(format!("storage is {:?}, expected file", have.storage));
    }
    if have.retention != want.retention {
        problems.push(format!(
            "retention is {:?}, expected limits",
            have.retention
        ));
    }
    if have.discard != want.discard {
        problems.push(format!("discard is {:?}, expected new", have.discard));
    }
    let secs = |d: Duration| format!("{}s", d.as_secs_f64());
    if have.duplicate_window != want.duplicate_window {
        problems.push(format!(
            "duplicate window is {}, expected {}",
            secs(have.duplicate_window),
            secs(want.duplicate_window)
        ));
    }
    if have.max_age != want.max_age {
        problems.push(format!(
            "max age is {}, expected {}",
            secs(have.max_age),
            secs(want.max_age)
        ));
    }
    if have.max_bytes != want.max_bytes {
        problems.push(format!(
            "max bytes is {}, expected {}",
            have.max_bytes, want.max_bytes
        ));
    }
    problems
}

impl fmt::Debug for NatsStream {
    /// Without the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::UserPassword(..) => "user and password",
            Auth::Token(_) => "token",
            Auth::CredsFile(_) => "credentials file",
        };
        f.debug_struct("NatsStream")
            .field("url", &without_user_info(&self.url))
            .field("subject_prefix", &self.prefix)
            .field("stream", &self.name)
            .field("max_age", &self.max_age)
            .field("max_bytes", &self.max_bytes)
            .field("duplicate_window", &self.duplicate_window)
            .field("auth", &auth)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_valid_for_any_action() {
        let s = NatsStream::new("nats://x");
        let cases = [
            ("post.created", "audit.post.created"),
            ("a b*c>d", "audit.a_b_c_d"),
            ("..x.", "audit._._.x._"),
            ("nul\0here", "audit.nul_here"),
            ("ünï.code", "audit._n_.code"),
            ("\u{1b}[31m", "audit.__31m"),
        ];
        for (action, want) in cases {
            assert_eq!(s.subject(action), want, "{action:?}");
        }
        let huge = "x".repeat(1 << 20);
        let subject = s.subject(&huge);
        assert_eq!(subject.len(), "audit".len() + 200);
        let dots = ".".repeat(1 << 20);
        assert!(s.subject(&dots).len() <= "audit".len() + 200);
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let base = NatsStream::new("nats://x");
        let cases = [
            (base.clone().subject_prefix("a b"), "subject prefix"),
            (base.clone().subject_prefix(""), "subject prefix"),
            (base.clone().subject_prefix("audit.>"), "subject prefix"),
            (base.clone().stream("A.B"), "stream name"),
            (
                base.clone().duplicate_window(Duration::ZERO),
                "duplicate window",
            ),
            (
                base.clone()
                    .max_age(Duration::from_secs(60))
                    .duplicate_window(Duration::from_secs(61)),
                "max age",
            ),
            (base.clone().max_bytes(0), "max bytes"),
            (base.clone().max_bytes(-2), "max bytes"),
        ];
        for (target, want) in cases {
            let err = target.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        base.validate().unwrap();
        base.clone().max_bytes(-1).validate().unwrap();
    }

    #[test]
    fn debug_hides_credentials() {
        let s = NatsStream::new("nats://u:secretpw@host:4222").token("tok-secret");
        let text = format!("{s:?}");
        assert!(
            !text.contains("secretpw") && !text.contains("tok-secret"),
            "{text}"
        );
    }

    #[test]
    fn a_stream_with_other_settings_is_described() {
        let want = NatsStream::new("x").config();
        let mut have = want.clone();
        have.subjects = vec!["other.>".into()];
        have.storage = stream::StorageType::Memory;
        have.duplicate_window = Duration::from_secs(120);
        let problems = mismatches(&have, &want).join("; ");
        assert!(problems.contains("do not include `audit.>`"), "{problems}");
        assert!(problems.contains("storage is Memory"), "{problems}");
        assert!(
            problems.contains("duplicate window is 120s, expected 1800s"),
            "{problems}"
        );
        assert!(mismatches(&want, &want).is_empty());
    }
}
