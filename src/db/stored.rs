//! The stored form of a record: what every backend accepts, decided before
//! the insert, the same on SQLite, PostgreSQL and MySQL/MariaDB.
//!
//! A value the database refuses (a NUL byte on PostgreSQL, a text longer
//! than a MariaDB column, an index entry over PostgreSQL's B-tree limit)
//! would fail its batch on every retry. So the sink stores a form every
//! backend accepts, and writes in the record what it changed, so that
//! nothing is lost without a trace:
//!
//! - text with a NUL byte is escaped in that field (`\` becomes `\\`, NUL
//!   becomes `\0`); the store reverses it when it reads the record back;
//! - text longer than its column is cut at a character boundary: 255
//!   characters for the short columns (the indexed ones, which are
//!   `VARCHAR(255)` on MySQL: `action`, `actor_id`, `actor_type`,
//!   `resource_type`, `resource_id`, `request_id`, `client_ip`, and each flag
//!   in the flags table), 65 535 bytes for `actor_email`, `actor_name` and
//!   `user_agent` (`TEXT` on MySQL); the `actor_flags` JSON keeps the flags
//!   that fit in 65 535 bytes; the `detail` JSON is cut to 8 MiB (half of
//!   MariaDB's default `max_allowed_packet`), its longest values first;
//! - `detail["fabric_audit.stored_as"]` says what was done, per field:
//!   `{"user_agent": {"truncated_from_bytes": 70000}, "resource_id":
//!   {"escaped": true}, "actor_flags": {"truncated_from_count": 900},
//!   "detail.body": {"truncated_from_bytes": 20000000}}` (a detail value
//!   that is not text is replaced by `null`: `{"dropped_bytes": N}`).
//!
//! Filters go through the same function, so a filter for a value with a
//! NUL byte finds the record stored with it, and a filter longer than its
//! column compares the first 255 characters.

use std::borrow::Cow;

use crate::record::fields::Width;
use crate::record::Field;
use crate::AuditRecord;

/// The detail key that records how a record was made storable.
pub(crate) const MARKER: &str = "fabric_audit.stored_as";

/// Characters in the short columns: `VARCHAR(255)` on MySQL, and small
/// enough for PostgreSQL's B-tree entries (255 × 4 bytes, twice in the
/// resource index, is under its 2 704-byte limit).
pub(crate) const SHORT_CHARS: usize = 255;

/// Bytes in the long text columns: `TEXT` on MySQL.
pub(crate) const LONG_BYTES: usize = 65_535;

/// How long a stored text may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    Chars(usize),
    Bytes(usize),
}

/// How long a text field's column lets it be (its width in the list of
/// fields, `record::fields`).
pub(crate) fn limit(field: Field) -> Limit {
    match field.width() {
        Width::Short => Limit::Chars(SHORT_CHARS),
        Width::Long => Limit::Bytes(LONG_BYTES),
    }
}

/// One text made storable, and what that took.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stored<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) escaped: bool,
    /// The original length in bytes, when the text was cut.
    pub(crate) truncated_from: Option<usize>,
}

/// `value` as it is stored in a column of this limit.
pub(crate) fn store(value: &str, limit: Limit) -> Stored<'_> {
    let escaped = value.contains('\0');
    let mut text = if escaped {
        Cow::Owned(escape(value))
    } else {
        Cow::Borrowed(value)
    };
    let cut = match limit {
        Limit::Chars(n) => text.char_indices().nth(n).map(|(at, _)| at),
        Limit::Bytes(n) if text.len() > n => Some(floor_char_boundary(&text, n)),
        Limit::Bytes(_) => None,
    };
    let truncated_from = cut.map(|at| {
        let mut end = at;
        if escaped {
            // Never keep half of an escape: an odd run of backslashes at
            // the end would read back as a different text.
            let run = text[..end]
                .bytes()
                .rev()
                .take_while(|&b| b == b'\\')
                .count();
            end -= run % 2;
        }
        match &mut text {
            Cow::Borrowed(s) => *s = &s[..end],
            Cow::Owned(s) => s.truncate(end),
        }
        value.len()
    });
    Stored {
        text,
        escaped,
        truncated_from,
    }
}

/// Whether storing `record` may cut one of its values (then its stored
/// form differs from it): a text field that could pass its column's
/// limit once escaped, flags or detail that could pass theirs. Cheap and
/// conservative: `false` means nothing is cut.
pub(crate) fn may_cut(record: &AuditRecord) -> bool {
    // Escaping at most doubles a text; a text's characters are at most its
    // bytes.
    let field_may = |field: Field| {
        record.get(field).is_some_and(|value| match limit(field) {
            Limit::Chars(n) | Limit::Bytes(n) => value.len() * 2 > n,
        })
    };
    if Field::ALL.into_iter().any(field_may) {
        return true;
    }
    // JSON escapes at most sextuple a text (`\u0000`); each flag, detail
    // key and number adds a bounded overhead.
    let text: usize = record.text_len();
    let entries = record.actor_flags().count() + record.detail().count();
    text.saturating_mul(6).saturating_add(entries.saturating_mul(64)) > LONG_BYTES
}

/// The stored form of a filter value for a short column (and of a flag in
/// the flags table).
pub(crate) fn short(value: &str) -> Cow<'_, str> {
    store(value, Limit::Chars(SHORT_CHARS)).text
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; a lone trailing backslash (never written) is dropped.
pub(crate) fn unescape(stored: &str) -> String {
    let mut out = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    out
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// What was done to a record to store it: the marker's content.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    entries: Vec<(Cow<'static, str>, serde_json::Value)>,
}

impl Changes {
    pub(crate) fn note(&mut self, column: &'static str, stored: &Stored<'_>) {
        let mut entry = serde_json::Map::new();
        if stored.escaped {
            entry.insert("escaped".into(), true.into());
        }
        if let Some(bytes) = stored.truncated_from {
            entry.insert("truncated_from_bytes".into(), bytes.into());
        }
        if !entry.is_empty() {
            self.entries.push((column.into(), entry.into()));
        }
    }

    pub(crate) fn note_dropped_flags(&mut self, of: usize) {
        let entry = serde_json::json!({ "truncated_from_count": of });
        self.entries.push(("actor_flags".into(), entry));
    }

    fn note_detail(&mut self, key: &str, entry: serde_json::Value) {
        self.entries.push((format!("detail.{key}").into(), entry));
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the marker to the record's detail JSON when something was
    /// changed, or when the record's own detail uses the reserved key (so
    /// that the last entry under the key is always the sink's).
    pub(crate) fn mark(self, record: &AuditRecord, detail: &mut String) {
        if self.is_empty() && record.detail_value(MARKER).is_none() {
            return;
        }
        let marker: serde_json::Map<String, serde_json::Value> = self
            .entries
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v))
            .collect();
        let entry = format!(
            "{}:{}",
            serde_json::Value::from(MARKER),
            serde_json::Value::Object(marker)
        );
        // `detail` is a JSON object written by the record: `{}` or `{…}`.
        detail.pop();
        if detail.len() > 1 {
            detail.push(',');
        }
        detail.push_str(&entry);
        detail.push('}');
    }
}

/// Bytes of the `detail` JSON: half of MariaDB's default
/// `max_allowed_packet` (16 MiB), which a larger value made the server
/// close the connection over (and the batch was retried forever).
pub(crate) const DETAIL_BYTES: usize = 8 << 20;

/// The `detail` JSON of a record, cut to [`DETAIL_BYTES`] when it is
/// longer: the longest values first, strings shortened (their original
/// length noted as `detail.KEY`), other values replaced by `null`.
pub(crate) fn detail_json(record: &AuditRecord, changes: &mut Changes) -> String {
    let detail = record.detail_json();
    if detail.len() <= DETAIL_BYTES {
        return detail;
    }
    // Room for the marker's entries; past that, what is left goes too.
    const BUDGET: usize = DETAIL_BYTES - (64 << 10);
    let Ok(mut entries) = crate::record::json::parse_object(&detail) else {
        return "{}".to_owned();
    };
    let len = |v: &serde_json::Value| serde_json::to_string(v).map_or(0, |s| s.len());
    let mut order: Vec<(usize, usize)> = entries.iter().map(|(_, v)| len(v)).enumerate().collect();
    order.sort_unstable_by_key(|&(_, n)| std::cmp::Reverse(n));
    let mut size = detail.len();
    for (i, was) in order {
        if size <= BUDGET || changes.entries.len() > 1000 {
            break;
        }
        let (key, value) = &mut entries[i];
        let excess = size - BUDGET;
        match value {
            serde_json::Value::String(text) if text.len() > excess => {
                let bytes = text.len();
                // Escapes make a text's JSON longer than the text: cut
                // again until it fits.
                let mut keep = text.len() - excess;
                loop {
                    text.truncate(floor_char_boundary(text, keep));
                    let now = serde_json::to_string(text).map_or(0, |s| s.len());
                    if size - was + now <= BUDGET || keep == 0 {
                        break;
                    }
                    keep /= 2;
                }
                changes.note_detail(key, serde_json::json!({ "truncated_from_bytes": bytes }));
            }
            other => {
                *other = serde_json::Value::Null;
                changes.note_detail(key, serde_json::json!({ "dropped_bytes": was }));
            }
        }
        size = size - was + len(&entries[i].1);
    }
    if size > BUDGET {
        // Thousands of keys: keep none of them, and say so.
        entries.clear();
        changes.note_detail("*", serde_json::json!({ "dropped_bytes": detail.len() }));
    }
    let map: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
        .collect();
    format!("{{{}}}", map.join(","))
}

/// The `actor_flags` JSON of a record: the flags that fit in
/// [`LONG_BYTES`], and how many there were when some did not.
pub(crate) fn flags_json(record: &AuditRecord) -> (String, Vec<&str>, Option<usize>) {
    let all: Vec<&str> = record.actor_flags().collect();
    let json = serde_json::to_string(&all).unwrap_or_else(|_| "[]".into());
    if json.len() <= LONG_BYTES {
        return (json, all, None);
    }
    let mut kept = Vec::new();
    let mut len = 2; // `[]`
    for flag in &all {
        let item = serde_json::to_string(flag).unwrap_or_default().len() + 1;
        if len + item > LONG_BYTES {
            break;
        }
        len += item;
        kept.push(*flag);
    }
    let json = serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into());
    (json, kept, Some(all.len()))
}

/// Undoes what the sink did to store a record, where it can: unescapes the
/// fields the marker names, and keeps in the marker only what cannot be
/// undone (cut texts, dropped flags). `fields` are the row's text columns
/// by name.
pub(crate) fn restore(
    fields: &mut [(&'static str, Option<String>)],
    detail: &mut Vec<(String, serde_json::Value)>,
) {
    let Some(at) = detail.iter().rposition(|(k, _)| k == MARKER) else {
        return;
    };
    let serde_json::Value::Object(marker) = &mut detail[at].1 else {
        return;
    };
    for (name, value) in fields.iter_mut() {
        let Some(serde_json::Value::Object(entry)) = marker.get_mut(*name) else {
            continue;
        };
        if entry.remove("escaped") == Some(true.into()) {
            if let Some(value) = value {
                *value = unescape(value);
            }
        }
        if entry.is_empty() {
            marker.remove(*name);
        }
    }
    if marker.is_empty() {
        detail.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn storable_values_are_left_alone() {
        for value in ["", "post.created", "zoë ✓", "back\\slash", &"x".repeat(255)] {
            let stored = store(value, Limit::Chars(SHORT_CHARS));
            assert!(matches!(stored.text, Cow::Borrowed(_)), "{value:?}");
            assert_eq!(stored.text, value);
            assert!(!stored.escaped && stored.truncated_from.is_none());
        }
    }

    #[test]
    fn nul_is_escaped_and_long_text_is_cut() {
        let cases = [
            ("a\0b", Limit::Chars(255), "a\\0b", true, None),
            ("a\\\0", Limit::Chars(255), "a\\\\\\0", true, None),
            (
                &*"é".repeat(300),
                Limit::Chars(255),
                &*"é".repeat(255),
                false,
                Some(600),
            ),
            (&*"é".repeat(3), Limit::Bytes(5), "éé", false, Some(6)),
            // The cut would split `\\`: the half escape goes too.
            (
                &*format!("{}\\\0", "x".repeat(254)),
                Limit::Chars(255),
                &*"x".repeat(254),
                true,
                Some(256),
            ),
        ];
        for (value, limit, text, escaped, truncated_from) in cases {
            let stored = store(value, limit);
            assert_eq!(
                (&*stored.text, stored.escaped, stored.truncated_from),
                (text, escaped, truncated_from),
                "{value:?}"
            );
        }
    }

    #[test]
    fn the_marker_says_what_was_done_and_restore_undoes_the_escapes() {
        let record = AuditRecord::builder("a").detail("k", 1).build();
        let mut changes = Changes::default();
        let escaped = store("a\0b", Limit::Chars(SHORT_CHARS));
        let agent = "u".repeat(70_000);
        let cut = store(&agent, Limit::Bytes(LONG_BYTES));
        changes.note("resource_id", &escaped);
        changes.note("user_agent", &cut);
        let mut detail = record.detail_json();
        changes.mark(&record, &mut detail);
        let mut entries = crate::record::json::parse_object(&detail).unwrap();
        assert_eq!(
            serde_json::to_string(&entries.last().unwrap().1).unwrap(),
            r#"{"resource_id":{"escaped":true},"user_agent":{"truncated_from_bytes":70000}}"#
        );
        let mut fields = [
            ("resource_id", Some(escaped.text.into_owned())),
            ("user_agent", Some(cut.text.into_owned())),
        ];
        restore(&mut fields, &mut entries);
        assert_eq!(fields[0].1.as_deref(), Some("a\0b"));
        assert_eq!(fields[1].1.as_ref().map(String::len), Some(LONG_BYTES));
        assert_eq!(
            serde_json::to_string(&entries.last().unwrap()).unwrap(),
            r#"["fabric_audit.stored_as",{"user_agent":{"truncated_from_bytes":70000}}]"#
        );
    }

    #[test]
    fn a_record_that_needed_nothing_gets_no_marker() {
        let record = AuditRecord::builder("a").build();
        let mut detail = record.detail_json();
        Changes::default().mark(&record, &mut detail);
        assert_eq!(detail, "{}");
    }

    #[test]
    fn flags_beyond_the_column_are_dropped_and_counted() {
        let flags: Vec<String> = (0..1000).map(|i| format!("{i:0>100}")).collect();
        let record = AuditRecord::builder("a").actor_flags(&flags).build();
        let (json, kept, of) = flags_json(&record);
        assert!(json.len() <= LONG_BYTES);
        assert_eq!(of, Some(1000));
        assert_eq!(serde_json::from_str::<Vec<&str>>(&json).unwrap(), kept);
        assert_eq!(kept.len(), LONG_BYTES / 103);
    }

    #[test]
    fn a_detail_over_the_cap_loses_its_longest_values_first() {
        let record = AuditRecord::builder("a")
            .detail("small", "s")
            .detail("text", "t".repeat(DETAIL_BYTES))
            .detail("list", vec!["l".repeat(1 << 20); 2])
            .detail("n", 7)
            .build();
        let mut changes = Changes::default();
        let detail = detail_json(&record, &mut changes);
        assert!(detail.len() <= DETAIL_BYTES, "{}", detail.len());
        let entries = crate::record::json::parse_object(&detail).unwrap();
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["small", "text", "list", "n"],
            "order and keys are kept"
        );
        assert_eq!(entries[0].1, "s");
        assert_eq!(entries[3].1, 7);
        let text = entries[1].1.as_str().unwrap();
        assert!(text.len() < DETAIL_BYTES && text.len() > DETAIL_BYTES / 2);
        assert!(entries[2].1.is_array(), "the cut text was enough");
        assert_eq!(
            serde_json::to_string(&changes.entries).unwrap(),
            format!(r#"[["detail.text",{{"truncated_from_bytes":{DETAIL_BYTES}}}]]"#)
        );

        // Escaped characters count as the JSON they become.
        let record = AuditRecord::builder("a")
            .detail("ctl", "\u{1}".repeat(DETAIL_BYTES / 4))
            .build();
        let detail = detail_json(&record, &mut Changes::default());
        assert!(detail.len() <= DETAIL_BYTES, "{}", detail.len());
        let small = AuditRecord::builder("a").detail("k", "v").build();
        assert_eq!(detail_json(&small, &mut Changes::default()), r#"{"k":"v"}"#);
    }

    proptest! {
        #[test]
        fn escaping_round_trips(value in "[a\\\\\\x00é]{0,40}") {
            let stored = store(&value, Limit::Chars(1000));
            prop_assert!(!stored.text.contains('\0'));
            let back = if stored.escaped { unescape(&stored.text) } else { stored.text.into_owned() };
            prop_assert_eq!(back, value);
        }

        #[test]
        fn cut_text_fits_and_reads_back_as_a_prefix(value in "[a\\\\\\x00é]{0,40}", n in 0usize..30) {
            for limit in [Limit::Chars(n), Limit::Bytes(n)] {
                let stored = store(&value, limit);
                match limit {
                    Limit::Chars(n) => prop_assert!(stored.text.chars().count() <= n),
                    Limit::Bytes(n) => prop_assert!(stored.text.len() <= n),
                }
                let back = if stored.escaped { unescape(&stored.text) } else { stored.text.to_string() };
                prop_assert!(value.starts_with(&back));
                prop_assert_eq!(stored.truncated_from.is_some(), back != value);
            }
        }
    }
}
