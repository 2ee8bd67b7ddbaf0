//! What a reader asks for: filters, a page size and a cursor.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::stored::{self, Limit};
use crate::record::time;
use crate::{AuditRecord, Error, Result};

/// The most records one page may hold.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// The page size when none is given.
pub(crate) const DEFAULT_LIMIT: u32 = 50;

/// A query over the audit log: every filter that is set must match (AND);
/// results come newest first.
///
/// # Examples
///
/// ```
/// use fabric_audit::AuditQuery;
///
/// let query = AuditQuery::new()
///     .action("post.")          // a prefix: post.created, post.deleted, …
///     .actor_id("u-1")
///     .has_flag("admin")
///     .limit(100)?;
/// # Ok::<(), fabric_audit::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct AuditQuery {
    pub(crate) actor_id: Option<String>,
    pub(crate) actor_type: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) resource_type: Option<String>,
    pub(crate) resource_id: Option<String>,
    pub(crate) from_us: Option<i64>,
    pub(crate) to_us: Option<i64>,
    pub(crate) has_flag: Option<String>,
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<Cursor>,
}

impl AuditQuery {
    /// A query with no filter: the newest records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records of this actor.
    pub fn actor_id(self, id: impl Into<String>) -> Self {
        Self {
            actor_id: Some(id.into()),
            ..self
        }
    }

    /// Records of actors of this type.
    pub fn actor_type(self, kind: impl Into<String>) -> Self {
        Self {
            actor_type: Some(kind.into()),
            ..self
        }
    }

    /// Records of this action; a value ending in `.` is a prefix: `post.`
    /// matches `post.created` and `post.deleted`.
    pub fn action(self, action: impl Into<String>) -> Self {
        Self {
            action: Some(action.into()),
            ..self
        }
    }

    /// Records about resources of this type.
    pub fn resource_type(self, kind: impl Into<String>) -> Self {
        Self {
            resource_type: Some(kind.into()),
            ..self
        }
    }

    /// Records about the resource with this id.
    pub fn resource_id(self, id: impl Into<String>) -> Self {
        Self {
            resource_id: Some(id.into()),
            ..self
        }
    }

    /// Records at or after `from`.
    pub fn from(self, from: DateTime<Utc>) -> Self {
        Self {
            from_us: Some(from.timestamp_micros()),
            ..self
        }
    }

    /// Records before `to`.
    pub fn to(self, to: DateTime<Utc>) -> Self {
        Self {
            to_us: Some(to.timestamp_micros()),
            ..self
        }
    }

    /// Records whose actor has this flag.
    pub fn has_flag(self, flag: impl Into<String>) -> Self {
        Self {
            has_flag: Some(flag.into()),
            ..self
        }
    }

    /// Records per page, from 1 to 1000 (default 50).
    ///
    /// # Errors
    ///
    /// A limit outside 1 to 1000.
    pub fn limit(self, limit: u32) -> Result<Self> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::invalid(format!(
                "`limit` must be from 1 to {MAX_LIMIT}, not {limit}"
            )));
        }
        Ok(Self {
            limit: Some(limit),
            ..self
        })
    }

    /// Continues after the page that gave this cursor.
    pub fn after(self, cursor: Cursor) -> Self {
        Self {
            cursor: Some(cursor),
            ..self
        }
    }

    pub(crate) fn page_size(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }

    /// The action filter, on the stored form of actions (see
    /// [`stored`]).
    ///
    /// A prefix is a range `[low, high)`: text is compared byte by byte on
    /// every backend (see the migrations), so `post.` ≤ x < `post/` is
    /// exactly "starts with `post.`", with no LIKE pattern whose wildcards
    /// would need escaping. A prefix longer than the column is an equality:
    /// every action that starts with it is stored cut to the same text.
    pub(crate) fn action_filter(&self) -> Option<ActionFilter> {
        let action = self.action.as_deref()?;
        let is_prefix = action.ends_with('.');
        let stored = stored::store(action, Limit::Chars(stored::SHORT_CHARS));
        Some(match stored.text.strip_suffix('.') {
            Some(stem) if is_prefix && stored.truncated_from.is_none() => {
                ActionFilter::Range(stored.text.to_string(), format!("{stem}/"))
            }
            _ => ActionFilter::Exact(stored.text.into_owned()),
        })
    }
}

/// Calls `$then!($($args)* name, name, …)` with the text filters' names,
/// in the order their values are checked. The list exists only here: the
/// API's query parameters, the CLI's flags (`actor_id` is `--actor-id`), the
/// fields of [`Given`] and the `filter.*` keys of the `audit.read` record all
/// follow from it.
macro_rules! with_parameters {
    ($then:ident ! ($($args:tt)*)) => {
        $then! {
            $($args)*
            actor_id, actor_type, action, resource_type, resource_id,
            from, to, has_flag, limit, cursor
        }
    };
}
#[cfg(feature = "http")]
pub(crate) use with_parameters;

macro_rules! given {
    ($($name:ident),*) => {
        /// The text filters as given, one per parameter: the `audit.read`
        /// record carries them as they were written.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub(crate) struct Given {
            $(pub(crate) $name: Option<String>,)*
        }

        impl Given {
            /// The parameter named `key`, and where its value goes.
            fn slot(&mut self, key: &[u8]) -> Option<(&'static str, &mut Option<String>)> {
                $(if key == stringify!($name).as_bytes() {
                    return Some((stringify!($name), &mut self.$name));
                })*
                None
            }
        }

        impl AuditQuery {
            /// The names [`AuditQuery::from_pairs`] knows: the query
            /// parameters of `GET /api/v1/audit`, and (with `-` for `_`) the
            /// flags of `fabric-audit query`.
            pub const PARAMETERS: &'static [&'static str] = &[$(stringify!($name)),*];
        }
    };
}
with_parameters!(given!());

impl AuditQuery {
    /// Reads text filters, as `(name, value)` pairs, strictly: each name one
    /// of [`PARAMETERS`](Self::PARAMETERS), given at most once, with a
    /// non-empty, UTF-8, well-formed value. This is how the HTTP API reads
    /// its query string and the CLI its flags, so both accept the same
    /// filters with the same meaning.
    ///
    /// Values: `from` and `to` are RFC 3339 timestamps (any offset),
    /// `limit` a whole number from 1 to 1000, `cursor` the text of a
    /// [`Cursor`]; the others are taken as they are (see the setters).
    ///
    /// # Errors
    ///
    /// An invalid-input [`Error`] whose message names the parameter: an
    /// unknown name (echoed, cut to 64 characters), an empty value, a name
    /// given twice, a value that is not UTF-8, or a malformed value.
    ///
    /// # Examples
    ///
    /// ```
    /// use fabric_audit::AuditQuery;
    ///
    /// let query = AuditQuery::from_pairs([("action", "post."), ("limit", "100")])?;
    /// assert_eq!(query, AuditQuery::new().action("post.").limit(100)?);
    ///
    /// let error = AuditQuery::from_pairs([("limit", "0"), ("limit", "1")]).unwrap_err();
    /// assert_eq!(error.to_string(), "`limit` is given twice");
    /// # Ok::<(), fabric_audit::Error>(())
    /// ```
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        parse_pairs(pairs).map(|(query, _)| query)
    }
}

/// [`AuditQuery::from_pairs`], and the pairs as given.
pub(crate) fn parse_pairs<K, V>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Result<(AuditQuery, Given)>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut given = Given::default();
    for (key, value) in pairs {
        let key = key.as_ref();
        let Some((name, slot)) = given.slot(key) else {
            let echo: String = String::from_utf8_lossy(key).chars().take(64).collect();
            return Err(Error::invalid(format!("unknown parameter `{echo}`")));
        };
        let value =
            std::str::from_utf8(value.as_ref()).map_err(|_| refuse(name, "is not valid UTF-8"))?;
        if value.is_empty() {
            return Err(refuse(name, "is empty"));
        }
        if slot.replace(value.to_owned()).is_some() {
            return Err(refuse(name, "is given twice"));
        }
    }
    let query = given.query()?;
    Ok((query, given))
}

impl Given {
    /// The query these values ask for; values are checked in the order of
    /// [`with_parameters`].
    fn query(&self) -> Result<AuditQuery> {
        let stamp = |name, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| {
                    time::parse_rfc3339(v)
                        .ok_or_else(|| refuse(name, "is not an RFC 3339 timestamp"))
                })
                .transpose()
        };
        let mut query = AuditQuery {
            actor_id: self.actor_id.clone(),
            actor_type: self.actor_type.clone(),
            action: self.action.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            from_us: stamp("from", &self.from)?,
            to_us: stamp("to", &self.to)?,
            has_flag: self.has_flag.clone(),
            limit: None,
            cursor: None,
        };
        if let Some(limit) = &self.limit {
            let limit = limit.parse::<u32>().map_err(|_| {
                refuse(
                    "limit",
                    &format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )
            })?;
            query = query.limit(limit)?;
        }
        if let Some(cursor) = &self.cursor {
            query = query.after(cursor.parse()?);
        }
        Ok(query)
    }
}

/// Refuses a parameter's value: "`name` problem".
fn refuse(name: &str, problem: &str) -> Error {
    Error::invalid(format!("`{name}` {problem}"))
}

/// How the action filter selects rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ActionFilter {
    /// `action = value`.
    Exact(String),
    /// `low <= action < high`: a prefix.
    Range(String, String),
}

/// Where a page ended: the newest-first position (timestamp, id) of its last
/// record. Opaque to clients: its text form is for passing back.
///
/// The text is the time in microseconds as 64-bit two's complement hex (so
/// times before 1970 have 16 digits from `8` to `f`), a `-`, and the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) timestamp_us: i64,
    pub(crate) id: Uuid,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.timestamp_us, self.id.simple())
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::invalid("`cursor` is not a cursor from this API");
        let (ts, id) = text.split_once('-').ok_or_else(bad)?;
        if ts.is_empty()
            || ts.len() > 16
            || !ts.bytes().all(|b| b.is_ascii_hexdigit())
            || id.len() != 32
        {
            return Err(bad());
        }
        // Two's complement, as `{:x}` writes an i64: before 1970 reads back.
        let timestamp_us = u64::from_str_radix(ts, 16).map_err(|_| bad())? as i64;
        let id = Uuid::try_parse(id).map_err(|_| bad())?;
        Ok(Self { timestamp_us, id })
    }
}

/// One page of results, newest first, and where the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The records.
    pub items: Vec<AuditRecord>,
    /// The cursor for the next page; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// How many records match a query: exact, or (past the store's count cap)
/// a lower bound. See [`Store::count`](crate::Store::count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Total {
    /// The number of matching records, or the cap when
    /// [`is_lower_bound`](Self::is_lower_bound).
    pub count: u64,
    /// Whether more records than `count` match.
    pub is_lower_bound: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_trailing_dot_makes_a_prefix_range_on_stored_forms() {
        let filter = |action: &str| AuditQuery::new().action(action).action_filter().unwrap();
        let range = |low: &str, high: &str| ActionFilter::Range(low.into(), high.into());
        let long = "x".repeat(300);
        let cases = [
            ("post.", range("post.", "post/")),
            ("post.created", ActionFilter::Exact("post.created".into())),
            ("a\\0b.", range("a\\0b.", "a\\0b/")),
            ("a\\0b", ActionFilter::Exact("a\\0b".into())),
            ("a\\0.", range("a\\0.", "a\\0/")),
            ("a\0.", range("a\\0.", "a\\0/")),
            (".", range(".", "/")),
            // Longer than the column: actions with it are all cut the same.
            (&*format!("{long}."), ActionFilter::Exact("x".repeat(255))),
            (
                &*format!("{}.", "x".repeat(254)),
                range(
                    &format!("{}.", "x".repeat(254)),
                    &format!("{}/", "x".repeat(254)),
                ),
            ),
        ];
        for (action, want) in cases {
            assert_eq!(filter(action), want, "{action:?}");
        }
        assert_eq!(AuditQuery::new().action_filter(), None);
    }

    #[test]
    fn limits_are_checked() {
        assert!(AuditQuery::new().limit(0).unwrap_err().is_invalid_input());
        assert!(AuditQuery::new().limit(1001).is_err());
        assert_eq!(AuditQuery::new().limit(1000).unwrap().page_size(), 1000);
        assert_eq!(AuditQuery::new().page_size(), 50);
    }

    #[test]
    fn bad_cursors_are_refused() {
        for text in [
            "",
            "-",
            "zz-0",
            "1",
            "1-abc",
            &format!("-{}", Uuid::nil().simple()),
            "1ffffffffffffffff-00000000000000000000000000000000",
            "+1-00000000000000000000000000000000",
        ] {
            assert!(
                text.parse::<Cursor>().unwrap_err().is_invalid_input(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn cursors_before_1970_and_at_the_edges_read_back() {
        let id = Uuid::from_u128(7);
        for ts in [-1, -86_400_000_000 * 3653, i64::MIN, i64::MAX, 0] {
            let cursor = Cursor {
                timestamp_us: ts,
                id,
            };
            assert_eq!(
                cursor.to_string().parse::<Cursor>().unwrap(),
                cursor,
                "{ts}"
            );
        }
        // Cursors of positive times keep the text they always had.
        let cursor = Cursor {
            timestamp_us: 0x1f,
            id,
        };
        assert_eq!(cursor.to_string(), format!("1f-{}", id.simple()));
    }

    #[test]
    fn pairs_make_the_query_the_setters_make() {
        let cursor = Cursor {
            timestamp_us: -5,
            id: Uuid::from_u128(9),
        };
        let text = cursor.to_string();
        let pairs = [
            ("actor_id", "u\u{1}1"),
            ("actor_type", "user"),
            ("action", "post."),
            ("resource_type", "post"),
            ("resource_id", "0"),
            ("from", "2026-01-01T00:00:00+01:00"),
            ("to", "2026-01-02T00:00:00.000001Z"),
            ("has_flag", "admin"),
            ("limit", "1000"),
            ("cursor", &text),
        ];
        let from = DateTime::parse_from_rfc3339("2025-12-31T23:00:00Z").unwrap();
        let to = DateTime::parse_from_rfc3339("2026-01-02T00:00:00.000001Z").unwrap();
        let want = AuditQuery::new()
            .actor_id("u\u{1}1")
            .actor_type("user")
            .action("post.")
            .resource_type("post")
            .resource_id("0")
            .from(from.with_timezone(&Utc))
            .to(to.with_timezone(&Utc))
            .has_flag("admin")
            .limit(1000)
            .unwrap()
            .after(cursor);
        assert_eq!(AuditQuery::from_pairs(pairs).unwrap(), want);
        // Any order; no pair at all is the newest page.
        assert_eq!(
            AuditQuery::from_pairs(pairs.iter().rev().copied()).unwrap(),
            want
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(AuditQuery::from_pairs(none).unwrap(), AuditQuery::new());
        let (_, given) = parse_pairs(pairs).unwrap();
        assert_eq!(
            given.from.as_deref(),
            Some("2026-01-01T00:00:00+01:00"),
            "kept as given"
        );
        assert_eq!(given.limit.as_deref(), Some("1000"));
    }

    #[test]
    fn hostile_pairs_are_refused_naming_the_parameter() {
        let mega = "9".repeat(1 << 20);
        let mega_key = "k".repeat(1 << 20);
        type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;
        let cases: Vec<(Pairs, String)> = vec![
            (vec![(b"actor", b"u")], "unknown parameter `actor`".into()),
            (vec![(b"", b"u")], "unknown parameter ``".into()),
            (vec![(b"Action", b"u")], "unknown parameter `Action`".into()),
            (
                vec![(b"action\0", b"u")],
                "unknown parameter `action\0`".into(),
            ),
            (vec![(b"\xff", b"u")], "unknown parameter `\u{fffd}`".into()),
            (
                vec![(mega_key.as_bytes(), b"u")],
                format!("unknown parameter `{}`", "k".repeat(64)),
            ),
            (vec![(b"action", b"")], "`action` is empty".into()),
            (
                vec![(b"action", b"\xff\xfe")],
                "`action` is not valid UTF-8".into(),
            ),
            (
                vec![(b"action", b"a"), (b"action", b"a")],
                "`action` is given twice".into(),
            ),
            (
                vec![(b"limit", b"1"), (b"limit", b"")],
                "`limit` is empty".into(),
            ),
            (
                vec![(b"from", b"yesterday")],
                "`from` is not an RFC 3339 timestamp".into(),
            ),
            (
                vec![(b"to", b"2026-13-01T00:00:00Z")],
                "`to` is not an RFC 3339 timestamp".into(),
            ),
            (
                vec![(b"from", b"2026-01-01T00:00:00Z\0")],
                "`from` is not an RFC 3339 timestamp".into(),
            ),
            (
                vec![(b"from", mega.as_bytes())],
                "`from` is not an RFC 3339 timestamp".into(),
            ),
            (
                vec![(b"limit", b"0")],
                "`limit` must be from 1 to 1000, not 0".into(),
            ),
            (
                vec![(b"limit", b"1001")],
                "`limit` must be from 1 to 1000, not 1001".into(),
            ),
            (
                vec![(b"limit", b"4294967295")],
                "`limit` must be from 1 to 1000, not 4294967295".into(),
            ),
            (
                vec![(b"limit", b"-1")],
                "`limit` must be a whole number from 1 to 1000".into(),
            ),
            (
                vec![(b"limit", b"4294967296")],
                "`limit` must be a whole number from 1 to 1000".into(),
            ),
            (
                vec![(b"limit", mega.as_bytes())],
                "`limit` must be a whole number from 1 to 1000".into(),
            ),
            (
                vec![(b"limit", b" 5")],
                "`limit` must be a whole number from 1 to 1000".into(),
            ),
            (
                vec![(b"limit", b"5.0")],
                "`limit` must be a whole number from 1 to 1000".into(),
            ),
            (
                vec![(b"cursor", b"abc")],
                "`cursor` is not a cursor from this API".into(),
            ),
            // The first problem in the input wins, then the values in the
            // order of the list.
            (
                vec![(b"limit", b"0"), (b"bogus", b"1")],
                "unknown parameter `bogus`".into(),
            ),
            (
                vec![(b"limit", b"0"), (b"from", b"x")],
                "`from` is not an RFC 3339 timestamp".into(),
            ),
        ];
        for (pairs, want) in cases {
            let error = AuditQuery::from_pairs(pairs.iter().copied()).unwrap_err();
            assert!(error.is_invalid_input(), "{want}");
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn hostile_text_filters_are_kept_as_given() {
        let mega = "x".repeat(1 << 20);
        for value in ["\0", "a\u{7}b\r\n", "%_\\", mega.as_str(), "-1", " "] {
            let query = AuditQuery::from_pairs([("actor_id", value), ("limit", "+1")]).unwrap();
            assert_eq!(query.actor_id.as_deref(), Some(value));
            assert_eq!(query.page_size(), 1);
        }
    }

    #[test]
    fn the_parameters_are_the_documented_filters() {
        assert_eq!(
            AuditQuery::PARAMETERS,
            [
                "actor_id",
                "actor_type",
                "action",
                "resource_type",
                "resource_id",
                "from",
                "to",
                "has_flag",
                "limit",
                "cursor"
            ]
        );
    }

    proptest! {
        #[test]
        fn pairs_never_panic_and_every_refusal_names_a_parameter(
            pairs in proptest::collection::vec(
                (
                    prop_oneof![
                        proptest::sample::select(AuditQuery::PARAMETERS).prop_map(|k| k.as_bytes().to_vec()),
                        proptest::collection::vec(any::<u8>(), 0..12),
                    ],
                    proptest::collection::vec(any::<u8>(), 0..40),
                ),
                0..6,
            )
        ) {
            if let Err(error) = AuditQuery::from_pairs(pairs.iter().map(|(k, v)| (k, v))) {
                let message = error.to_string();
                prop_assert!(error.is_invalid_input());
                prop_assert!(
                    message.starts_with("unknown parameter `")
                        || AuditQuery::PARAMETERS.iter().any(|p| message.starts_with(&format!("`{p}` "))),
                    "{}", message
                );
            }
        }

        #[test]
        fn cursors_round_trip(ts in any::<i64>(), id in any::<u128>()) {
            let cursor = Cursor { timestamp_us: ts, id: Uuid::from_u128(id) };
            prop_assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,60}") {
            let _ = text.parse::<Cursor>();
        }
    }
}
