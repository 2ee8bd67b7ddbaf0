//! Who may read the audit log: the `Authorizer` trait and bearer tokens.

use std::future::Future;

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Principal;

/// The permission that opens the query API.
pub const AUDIT_READ: &str = "audit:read";

/// Decides who is calling; the application implements it (or uses
/// [`BearerTokens`]).
///
/// Return the caller with its permissions, or
/// [`Unauthenticated`] for missing or bad credentials (a 401, with
/// [`challenge`](Self::challenge) in its `WWW-Authenticate` header). The
/// router checks the `audit:read` permission itself (a 403 without it).
pub trait Authorizer: Send + Sync + 'static {
    /// Authenticates the request described by `parts`.
    fn authorize(
        &self,
        parts: &Parts,
    ) -> impl Future<Output = Result<Caller, Unauthenticated>> + Send;

    /// The `WWW-Authenticate` value of a 401: `Bearer realm="audit"`
    /// unless the authorizer uses another scheme.
    fn challenge(&self) -> HeaderValue {
        HeaderValue::from_static(BEARER_CHALLENGE)
    }
}

/// The challenge of a 401 from a bearer-token authorizer.
const BEARER_CHALLENGE: &str = "Bearer realm=\"audit\"";

/// Missing or bad credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unauthenticated;

/// An authenticated caller of the query API; it is the actor of the
/// `audit.read` records the API writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    id: String,
    kind: String,
    permissions: Vec<String>,
}

impl Caller {
    /// A caller with an id, a type (`user`, `api_key`, …) and permissions.
    pub fn new<I, P>(id: impl Into<String>, kind: impl Into<String>, permissions: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        Self {
            id: id.into(),
            kind: kind.into(),
            permissions: permissions.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the caller has `permission`.
    pub fn can(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }
}

impl Principal for Caller {
    fn id(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(&self.id)
    }
    fn kind(&self) -> Option<&str> {
        Some(&self.kind)
    }
}

/// Named bearer tokens with their permissions: `Authorization: Bearer …`.
///
/// The scheme is matched without regard to case (`bearer`, `BEARER`), with
/// any run of spaces or tabs after it (RFC 7235); a request with more than
/// one `Authorization` header is refused.
///
/// Tokens are kept as SHA-256 digests and compared in constant time, and
/// every configured token is compared on each request, so timing tells
/// nothing about which token came close. A token may be configured by its
/// digest ([`token_sha256`](Self::token_sha256)) so that configuration files
/// hold no secret.
///
/// # Examples
///
/// ```
/// use fabric_audit::http::BearerTokens;
///
/// let tokens = BearerTokens::new()
///     .token("ops-dashboard", "s3cret-token", ["audit:read"])
///     .token_sha256(
///         "auditor",
///         "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
///         ["audit:read"],
///     )
///     .unwrap();
/// # let _ = tokens;
/// ```
#[derive(Clone, Default)]
pub struct BearerTokens {
    tokens: Vec<([u8; 32], Caller)>,
}

impl BearerTokens {
    /// No tokens: every request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token, named `name` (the actor id of its reads).
    #[must_use]
    pub fn token<I, P>(
        mut self,
        name: impl Into<String>,
        secret: impl AsRef<[u8]>,
        permissions: I,
    ) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let digest = Sha256::digest(secret.as_ref()).into();
        self.tokens
            .push((digest, Caller::new(name, "api_key", permissions)));
        self
    }

    /// Adds a token given as the hex SHA-256 digest of its secret.
    ///
    /// # Errors
    ///
    /// A digest that is not 64 hex digits.
    pub fn token_sha256<I, P>(
        mut self,
        name: impl Into<String>,
        hex_digest: &str,
        permissions: I,
    ) -> crate::Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let name = name.into();
        let digest = parse_hex_digest(hex_digest).ok_or_else(|| {
            crate::Error::invalid(format!("token `{name}`: sha256 must be 64 hex digits"))
        })?;
        self.tokens
            .push((digest, Caller::new(name, "api_key", permissions)));
        Ok(self)
    }

    fn find(&self, presented: &[u8]) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for (known, caller) in &self.tokens {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(caller);
            }
        }
        found
    }
}

impl std::fmt::Debug for BearerTokens {
    /// Names only: never the digests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|(_, c)| &c.id))
            .finish()
    }
}

impl Authorizer for BearerTokens {
    async fn authorize(&self, parts: &Parts) -> Result<Caller, Unauthenticated> {
        let mut headers = parts.headers.get_all(AUTHORIZATION).iter();
        let (Some(header), None) = (headers.next(), headers.next()) else {
            return Err(Unauthenticated);
        };
        let token = bearer_token(header.as_bytes()).ok_or(Unauthenticated)?;
        self.find(token).cloned().ok_or(Unauthenticated)
    }
}

/// The token of `Bearer <token>` (RFC 7235 `credentials` with a token68):
/// the scheme in any case, one or more spaces or tabs, then a token with
/// no whitespace in it.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let value = value.trim_ascii();
    let split = value.iter().position(is_space)?;
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty() && !token.iter().any(is_space)).then_some(token)
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_parse_or_are_refused() {
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(
            parse_hex_digest(digest),
            Some(Sha256::digest(b"test").into())
        );
        for bad in [
            "",
            "9f86",
            &digest.replace('9', "g"),
            &format!("{digest}00"),
            "é".repeat(32).as_str(),
        ] {
            assert_eq!(parse_hex_digest(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_read_as_rfc_7235_says() {
        let cases: [(&[u8], Option<&[u8]>); 14] = [
            (b"Bearer abc", Some(b"abc")),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER abc", Some(b"abc")),
            (b"BeArEr abc", Some(b"abc")),
            (b"Bearer   abc", Some(b"abc")),
            (b"Bearer\tabc", Some(b"abc")),
            (b"  Bearer abc  ", Some(b"abc")),
            (b"Bearer a+b/c==", Some(b"a+b/c==")),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"Bearerabc", None),
            (b"Basic abc", None),
            (b"Bearer abc def", None),
            (b"", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                bearer_token(value),
                want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn debug_shows_names_not_secrets() {
        let tokens = BearerTokens::new().token("ops", "s3cret", [AUDIT_READ]);
        let text = format!("{tokens:?}");
        assert_eq!(text, r#"["ops"]"#);
    }
}
