//! A row straight to the record's JSON object: the query API's answer,
//! without making the record first.
//!
//! Making the record parses the `detail` and `actor_flags` JSON into values
//! and copies every text into the record's buffer; serializing it writes
//! them all out again. For a row as the sink writes it, the JSON text is
//! already what serializing would write (see `record::written`), and the
//! text columns are the record's texts (the sink changed none of them when
//! the detail has no storage marker). So the writer below copies the JSON
//! and escapes the texts straight from the row; any other row goes through
//! the record, as before. The bytes are the same either way (a property
//! test in `tests/it/http.rs` and the unit tests below hold them together).

use super::EventRow;
use crate::db::stored::MARKER;
use crate::record::json_line::write_str;
use crate::record::{time, written, Field};

/// Defines `EventRow::write_stored_json` from the list of fields
/// (`record::fields`): one step per key, in the record's order.
macro_rules! define_write_row {
    (; $({ $key:ident, $column:ident, ($($sql:tt)*), ($($read:tt)*), ($($write:tt)*),
            $role:ident ( $($arg:tt)* ) })*) => {
        impl EventRow {
            /// Appends the record's JSON object from the row's columns,
            /// when they hold it as written (else `None`, and `out` is left
            /// with a partial object for the caller to cut).
            fn write_stored_json(&self, out: &mut Vec<u8>) -> Option<()> {
                let start = out.len();
                $(
                    out.extend_from_slice(concat!(",\"", stringify!($key), "\":").as_bytes());
                    write_column!(self, out, $column, $role($($arg)*));
                )*
                out[start] = b'{';
                out.push(b'}');
                Some(())
            }
        }
    };
}

/// The code that writes one column's value, by the field's role.
macro_rules! write_column {
    ($row:ident, $out:ident, $column:ident, Id()) => {{
        // As the record has it: parsed, then written in lower case.
        let id = uuid::Uuid::parse_str(&$row.$column).ok()?;
        let mut buffer = uuid::Uuid::encode_buffer();
        $out.push(b'"');
        $out.extend_from_slice(id.hyphenated().encode_lower(&mut buffer).as_bytes());
        $out.push(b'"');
    }};
    ($row:ident, $out:ident, $column:ident, Timestamp()) => {{
        $out.push(b'"');
        $out.extend_from_slice(&time::format_rfc3339_micros($row.$column));
        $out.push(b'"');
    }};
    ($row:ident, $out:ident, $column:ident, Text($variant:ident, $($rest:tt)*)) => {
        match Text::text(&$row.$column) {
            Some(value) => write_str($out, value),
            // As `Serialize` writes it: a required field is never null.
            None if Field::$variant.is_required() => $out.extend_from_slice(b"\"\""),
            None => $out.extend_from_slice(b"null"),
        }
    };
    ($row:ident, $out:ident, $column:ident, Flags()) => {{
        if !written::is_flags(&$row.$column) {
            return None;
        }
        $out.extend_from_slice($row.$column.as_bytes());
    }};
    ($row:ident, $out:ident, $column:ident, Detail()) => {{
        if !written::is_detail(&$row.$column, MARKER) {
            return None;
        }
        $out.extend_from_slice($row.$column.as_bytes());
    }};
    ($row:ident, $out:ident, $column:ident, Seq()) => {
        match $row.$column {
            Some(seq) => {
                // A negative `seq` is a row this crate did not write.
                let seq = u64::try_from(seq).ok()?;
                let _ = serde_json::to_writer(&mut *$out, &seq);
            }
            None => $out.extend_from_slice(b"null"),
        }
    };
}

crate::record::fields::with_record_fields!(define_write_row!());

/// A text column's value, whether the column is nullable or not.
trait Text {
    fn text(&self) -> Option<&str>;
}

impl Text for String {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl Text for Option<String> {
    fn text(&self) -> Option<&str> {
        self.as_deref()
    }
}

impl EventRow {
    /// Appends the JSON object of the record this row stores to `out`: the
    /// bytes that serializing [`into_record`](Self::into_record)'s record
    /// gives.
    ///
    /// # Errors
    ///
    /// As for [`into_record`](Self::into_record).
    pub(crate) fn write_json(self, out: &mut Vec<u8>) -> crate::Result<()> {
        let start = out.len();
        if self.write_stored_json(out).is_some() {
            return Ok(());
        }
        out.truncate(start);
        self.into_record()?.write_json(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::row::NewRecord;
    use crate::AuditRecord;

    /// The row the sink stores for `record`, read back.
    fn row_of(record: &AuditRecord) -> EventRow {
        EventRow::stored(&NewRecord::new(record).event)
    }

    fn both_ways(row: impl Fn() -> EventRow) -> (String, String) {
        let mut fast = Vec::new();
        row().write_json(&mut fast).unwrap();
        let slow = serde_json::to_string(&row().into_record().unwrap()).unwrap();
        (String::from_utf8(fast).unwrap(), slow)
    }

    #[test]
    fn rows_write_what_their_records_serialize_to() {
        let mut chained = AuditRecord::builder("a.b").build();
        chained.set_link("host/file", 7, &"ab".repeat(32));
        let records = [
            AuditRecord::builder("post.created").build(),
            AuditRecord::builder("post.created")
                .actor_id("u-1")
                .actor_type("user")
                .actor_flags(["admin", "é\"\n"])
                .resource("post", "42")
                .request_id("r-1")
                .user_agent("agent\u{0}with nul")
                .detail("title", "zoë ✓ \u{1f}")
                .detail("n", u64::MAX)
                .detail("i", i64::MIN)
                .detail("f", 0.1)
                .detail("nested", serde_json::json!({"z": [1.5, null], "a": {"k": "v"}}))
                .build(),
            // A value cut to fit its column: the marker says so.
            AuditRecord::builder("post.created")
                .resource("post", "x".repeat(300))
                .build(),
            chained,
        ];
        for record in &records {
            let (fast, slow) = both_ways(|| row_of(record));
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn rows_in_another_spelling_read_back_as_before() {
        let record = AuditRecord::builder("a").detail("n", 1).build();
        let cases = [
            ("detail", r#"{ "n" : 1e2, "s": "\u00e9" }"#),
            ("detail", r#"{"n":{"b":1,"a":2}}"#),
            ("actor_flags", r#"[ "x" ]"#),
            ("id", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
        ];
        for (column, text) in cases {
            let row = || {
                let mut row = row_of(&record);
                match column {
                    "detail" => row.detail = text.to_owned(),
                    "actor_flags" => row.actor_flags = text.to_owned(),
                    _ => row.id = text.to_owned(),
                }
                row
            };
            let (fast, slow) = both_ways(row);
            assert_eq!(fast, slow, "{column}: {text}");
        }
        let mut bad = row_of(&record);
        bad.detail = "{".to_owned();
        assert!(bad.write_json(&mut Vec::new()).is_err());
        let mut bad = row_of(&record);
        bad.seq = Some(-1);
        assert!(bad.write_json(&mut Vec::new()).is_err());
    }
}
