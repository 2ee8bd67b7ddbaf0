//! Writing a record's JSON line without serde: the file sink's hot loop.
//!
//! The output is byte for byte what the `Serialize` impl gives through
//! `serde_json` (a property test holds the two together). It is faster
//! because the keys are constants and strings are scanned for characters
//! to escape eight bytes at a time; serde_json looks at every byte.

use super::fields::with_record_fields;
use super::{time, AuditRecord, Field, Value};

/// Defines `write_json` from the list of fields (`record::fields`): one
/// straight-line step per key, in order, each key's text (`,"name":`) a
/// constant and its value's code picked when the macro expands. (A loop
/// over `KEYS` with a `match` on each key's role cost 8 % more
/// instructions per record, measured with callgrind.)
macro_rules! define_write_json {
    (; $({ $key:ident, $column:ident, ($($sql:tt)*), ($($read:tt)*), ($($write:tt)*),
            $role:ident ( $($arg:tt)* ) })*) => {
        impl AuditRecord {
            /// Appends the record's JSON object (no newline) to `out`.
            ///
            /// Every key is written with its leading comma; the first
            /// comma then becomes the opening brace.
            pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
                let start = out.len();
                $(
                    out.extend_from_slice(concat!(",\"", stringify!($key), "\":").as_bytes());
                    write_value!(self, out, $role($($arg)*));
                )*
                out[start] = b'{';
                out.push(b'}');
            }
        }
    };
}

/// The code that writes one value, by the field's role.
macro_rules! write_value {
    ($record:ident, $out:ident, Id()) => {{
        let mut id = uuid::Uuid::encode_buffer();
        $out.push(b'"');
        $out.extend_from_slice($record.id.hyphenated().encode_lower(&mut id).as_bytes());
        $out.push(b'"');
    }};
    ($record:ident, $out:ident, Timestamp()) => {{
        $out.push(b'"');
        $out.extend_from_slice(&time::format_rfc3339_micros($record.micros));
        $out.push(b'"');
    }};
    ($record:ident, $out:ident, Text($variant:ident, $($rest:tt)*)) => {
        match $record.get(Field::$variant) {
            Some(value) => write_str($out, value),
            // As `Serialize` writes it: a required field is never null.
            None if Field::$variant.is_required() => $out.extend_from_slice(b"\"\""),
            None => $out.extend_from_slice(b"null"),
        }
    };
    ($record:ident, $out:ident, Flags()) => {{
        $out.push(b'[');
        for (i, flag) in $record.actor_flags().enumerate() {
            if i > 0 {
                $out.push(b',');
            }
            write_str($out, flag);
        }
        $out.push(b']');
    }};
    ($record:ident, $out:ident, Detail()) => {
        $record.write_detail($out)
    };
    ($record:ident, $out:ident, Seq()) => {
        match $record.seq {
            // Through serde_json, as the detail's numbers.
            Some(seq) => {
                let _ = serde_json::to_writer(&mut *$out, &seq);
            }
            None => $out.extend_from_slice(b"null"),
        }
    };
}

with_record_fields!(define_write_json!());

impl AuditRecord {
    /// The detail object as JSON text (the database's `detail` column).
    #[cfg(db)]
    pub(crate) fn detail_json(&self) -> String {
        let mut out = Vec::with_capacity(64);
        self.write_detail(&mut out);
        String::from_utf8(out).unwrap_or_else(|_| "{}".to_owned())
    }

    fn write_detail(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (key, value)) in self.detail.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, self.str(*key));
            out.push(b':');
            self.write_value(out, value);
        }
        out.push(b'}');
    }

    fn write_value(&self, out: &mut Vec<u8>, value: &Value) {
        // Numbers go through serde_json, so they are spelled as it spells
        // them; they are a small share of the work.
        let _ = match value {
            Value::Str(range) => {
                write_str(out, self.str(*range));
                Ok(())
            }
            Value::I64(n) => serde_json::to_writer(&mut *out, n),
            Value::U64(n) => serde_json::to_writer(&mut *out, n),
            Value::F64(n) => serde_json::to_writer(&mut *out, n),
            Value::Bool(b) => serde_json::to_writer(&mut *out, b),
            Value::Json(v) => serde_json::to_writer(&mut *out, v),
        };
    }
}

/// Writes `s` as a JSON string, escaping as serde_json does.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let chunk = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
            if !needs_escape(chunk) {
                i += 8;
                continue;
            }
        }
        let byte = bytes[i];
        if let Some(escape) = escape(byte) {
            out.extend_from_slice(&bytes[start..i]);
            write_escape(out, byte, escape);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any of the eight bytes is `"`, `\` or a control character
/// below 0x20 (bytes of 0x80 and above never are).
pub(super) fn needs_escape(chunk: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = chunk.wrapping_sub(ONES * 0x20) & !chunk & HIGH;
    below_space
        | has_zero(chunk ^ (ONES * u64::from(b'"')))
        | has_zero(chunk ^ (ONES * u64::from(b'\\')))
        != 0
}

/// serde_json's escape for `byte`: a letter for `\"`, `\\`, `\b`, `\f`,
/// `\n`, `\r`, `\t`, `u` for `\u00XX`, or none.
fn escape(byte: u8) -> Option<u8> {
    Some(match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x00..=0x1f => b'u',
        _ => return None,
    })
}

fn write_escape(out: &mut Vec<u8>, byte: u8, escape: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if escape == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', escape]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_serde_json() {
        let cases = [
            "",
            "plain",
            "quote\"d",
            "back\\slash",
            "tab\there",
            "\u{0}\u{1f}\u{7f}",
            "héllo wörld ✓",
            "12345678\"abcdefgh",
        ];
        for s in cases {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn strings_match_serde_json(s in "[\\PC\"\\\\\u{0}-\u{1f}\u{7f}]{0,40}") {
            prop_assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn records_match_serialize(
            action in "[a-z.]{1,12}",
            actor in proptest::option::of("[\\PC\"\\\\\u{0}-\u{1f}]{0,12}"),
            flags in proptest::collection::vec("[\\PC\"\u{0}-\u{1f}]{0,6}", 0..3),
            text in "[\\PC\"\\\\\u{0}-\u{1f}]{0,20}",
            n in any::<i64>(),
            f in -1e300f64..1e300,
            b in any::<bool>(),
        ) {
            let mut builder = AuditRecord::builder(&action)
                .actor_flags(&flags)
                .detail("text", text.as_str())
                .detail("n", n)
                .detail("f", f)
                .detail("b", b)
                .detail("nested", serde_json::json!({"k": [1, null]}))
                .resource("post", &text);
            if let Some(actor) = &actor {
                builder = builder.actor_id(actor).actor_email(actor);
            }
            let mut record = builder.build();
            if let Some(actor) = &actor {
                // A chain read back may hold anything.
                record.set_link(actor, n.unsigned_abs(), &text);
            }
            let mut out = Vec::new();
            record.write_json(&mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&record).unwrap());
        }
    }
}
