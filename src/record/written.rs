//! Whether stored JSON is, byte for byte, what this crate writes for it.
//!
//! A database row holds the record's `detail` and `actor_flags` as JSON
//! text, written by the record's JSON writer (`json_line`). Reading the
//! record back parses that text into values, and serializing it writes the
//! same bytes again. The query API skips both and copies the text, when
//! these checks say that writing its values would give exactly that text:
//! no whitespace, strings escaped as serde_json escapes them, integers in
//! range without leading zeros, doubles spelled as serde_json spells them,
//! nested objects with their keys in order. Any other text (a row written
//! by hand, a different spelling, bad JSON) is not copied: it goes through
//! the record, and reads back as before (or fails as before).

use super::json_line::needs_escape;

/// Deeper than this, the text goes through the record (serde_json's own
/// limit is 128).
const MAX_DEPTH: usize = 100;

/// Whether `text` is a `detail` column as written, that reads back as the
/// same bytes: a JSON object whose values are spelled as the writer spells
/// them, none of its keys `skip_key` (the storage marker, which reading
/// back changes).
pub(crate) fn is_detail(text: &str, skip_key: &str) -> bool {
    let mut reader = Reader {
        text: text.as_bytes(),
        at: 0,
    };
    reader.object(0, Some(skip_key.as_bytes())) && reader.at == text.len()
}

/// Whether `text` is an `actor_flags` column as written: a JSON array of
/// strings escaped as the writer escapes them.
pub(crate) fn is_flags(text: &str) -> bool {
    let mut reader = Reader {
        text: text.as_bytes(),
        at: 0,
    };
    let flags = reader.eat(b'[')
        && (reader.eat(b']') || (reader.items(|r| r.string().is_some()) && reader.eat(b']')));
    flags && reader.at == text.len()
}

struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.at += usize::from(hit);
        hit
    }

    /// One or more of `item`, separated by commas.
    fn items(&mut self, mut item: impl FnMut(&mut Self) -> bool) -> bool {
        loop {
            if !item(self) {
                return false;
            }
            if !self.eat(b',') {
                return true;
            }
        }
    }

    /// An object. At the top (`skip_key` given) keys come in any order,
    /// repeated or not, as the record keeps them; nested ones come from a
    /// `serde_json::Map`, which holds each key once, sorted: they must be
    /// in strictly increasing order of the text they stand for.
    fn object(&mut self, depth: usize, skip_key: Option<&[u8]>) -> bool {
        if depth > MAX_DEPTH || !self.eat(b'{') {
            return false;
        }
        if self.eat(b'}') {
            return true;
        }
        let mut last: Option<&'a [u8]> = None;
        let entries = self.items(|r| {
            let Some(key) = r.string() else {
                return false;
            };
            let fits = match skip_key {
                Some(skip) => key != skip,
                None => last.is_none_or(|last| unescaped(last) < unescaped(key)),
            };
            last = Some(key);
            fits && r.eat(b':') && r.value(depth + 1)
        });
        entries && self.eat(b'}')
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'"') => self.string().is_some(),
            Some(b'{') => self.object(depth, None),
            Some(b'[') => {
                depth <= MAX_DEPTH
                    && self.eat(b'[')
                    && (self.eat(b']') || (self.items(|r| r.value(depth + 1)) && self.eat(b']')))
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let hit = self.text[self.at..].starts_with(word);
        self.at += if hit { word.len() } else { 0 };
        hit
    }

    /// A string escaped as serde_json escapes (see `json_line::write_str`);
    /// its text between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        loop {
            if let Some(chunk) = self.text.get(self.at..self.at + 8) {
                let chunk = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                if !needs_escape(chunk) {
                    self.at += 8;
                    continue;
                }
            }
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    let text: &'a [u8] = self.text;
                    return Some(&text[start..self.at - 1]);
                }
                b'\\' => {
                    let escape = self.text.get(self.at + 1..)?;
                    self.at += match escape {
                        [b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't', ..] => 2,
                        [b'u', b'0', b'0', high @ (b'0' | b'1'), low, ..]
                            if low.is_ascii_digit() || (b'a'..=b'f').contains(low) =>
                        {
                            // Only the controls without a short escape.
                            let code = (high - b'0') << 4 | (*low as char).to_digit(16)? as u8;
                            if matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            6
                        }
                        _ => return None,
                    };
                }
                0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    /// A number as serde_json writes it back: an integer that fits an
    /// `i64` or `u64` (not `-0`, which reads back as a double), or a double
    /// spelled as serde_json spells it.
    fn number(&mut self) -> bool {
        let start = self.at;
        let digits = |r: &mut Self| {
            let from = r.at;
            while r.peek().is_some_and(|b| b.is_ascii_digit()) {
                r.at += 1;
            }
            r.at > from
        };
        self.eat(b'-');
        if !digits(self) {
            return false;
        }
        let integer = !matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        if !integer {
            if self.eat(b'.') && !digits(self) {
                return false;
            }
            if self.eat(b'e') || self.eat(b'E') {
                let _ = self.eat(b'+') || self.eat(b'-');
                if !digits(self) {
                    return false;
                }
            }
        }
        // Text from the loop above: ASCII digits and signs.
        let Ok(text) = std::str::from_utf8(&self.text[start..self.at]) else {
            return false;
        };
        if integer {
            let leading_zero = text.trim_start_matches('-').len() > 1
                && text.trim_start_matches('-').starts_with('0');
            return !leading_zero
                && text != "-0"
                && (text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok());
        }
        let Ok(value) = text.parse::<f64>() else {
            return false;
        };
        let mut spelled = [0u8; 32];
        let mut out = &mut spelled[..];
        value.is_finite() && serde_json::to_writer(&mut out, &value).is_ok() && {
            let left = out.len();
            spelled[..spelled.len() - left] == *text.as_bytes()
        }
    }
}

/// The text a string checked by `Reader::string` stands for (its escapes
/// are a backslash and one character, or `\\u00XX`), to order keys by.
fn unescaped(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !text.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(text);
    }
    let hex = |at: usize| {
        text.get(at)
            .and_then(|&b| (b as char).to_digit(16))
            .unwrap_or(0) as u8
    };
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        let (byte, len) = match (byte, text.get(at + 1)) {
            (b'\\', Some(b'b')) => (0x08, 2),
            (b'\\', Some(b'f')) => (0x0c, 2),
            (b'\\', Some(b'n')) => (b'\n', 2),
            (b'\\', Some(b'r')) => (b'\r', 2),
            (b'\\', Some(b't')) => (b'\t', 2),
            (b'\\', Some(b'u')) => (hex(at + 4) << 4 | hex(at + 5), 6),
            (b'\\', Some(&other)) => (other, 2),
            (byte, _) => (byte, 1),
        };
        out.push(byte);
        at += len;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditRecord;
    use proptest::prelude::*;

    const MARKER: &str = "fabric_audit.stored_as";

    #[test]
    fn text_spelled_as_the_writer_spells_it_is_copied() {
        let cases = [
            r#"{}"#,
            r#"{"n":1,"s":"x","b":true,"f":false,"z":null}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"big":18446744073709551615,"small":-9223372036854775808}"#,
            r#"{"f":1.5,"g":1e+300,"h":-0.0,"i":1.0,"j":5e-324,"k":0.1}"#,
            r#"{"s":"é ✓ \" \\ \n \t \r \b \f \u0000 \u001f"}"#,
            "{\"s\":\"\u{7f} raw\"}",
            r#"{"nested":{"a":[1,{"b":null,"c":[]}],"b":{}}}"#,
            r##"{"nested":{"\u0001":1,"\"":2,"#":3,"\\":4}}"##,
            r#"{"z":1,"a":2}"#,
        ];
        for text in cases {
            assert!(is_detail(text, MARKER), "{text}");
        }
    }

    #[test]
    fn other_spellings_go_through_the_record() {
        let cases = [
            r#"{ }"#,
            r#"{"a": 1}"#,
            r#"{"a":01}"#,
            r#"{"a":-0}"#,
            r#"{"a":1e2}"#,
            r#"{"a":1e300}"#,
            r#"{"a":1E300}"#,
            r#"{"a":1.50}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"{"a":1e400}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\u000a"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":"\u007f"}"#,
            "{\"a\":\"\n\"}",
            r#"{"a":{"b":1,"a":2}}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"a":{"\u0001":1,"\u0001":2}}"#,
            r##"{"a":{"#":1,"\"":2}}"##,
            r#"{"fabric_audit.stored_as":{}}"#,
            r#"{"a":1}x"#,
            r#"{"a":1"#,
            r#"{"a":tru}"#,
            r#"[]"#,
            r#""#,
            r#"{"a":[1,]}"#,
        ];
        for text in cases {
            assert!(!is_detail(text, MARKER), "{text}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(!is_detail(&deep, MARKER));
    }

    #[test]
    fn flags_are_arrays_of_strings() {
        for text in [r#"[]"#, r#"["admin"]"#, r#"["a","b\"c","é"]"#] {
            assert!(is_flags(text), "{text}");
        }
        for text in [
            r#"[ ]"#,
            r#"[1]"#,
            r#"["a",]"#,
            r#"["a"] "#,
            r#"{}"#,
            r#"["\u00e9"]"#,
        ] {
            assert!(!is_flags(text), "{text}");
        }
    }

    /// The detail JSON of the record that reads `text` back, as a row's
    /// detail is read.
    fn read_back(text: &str) -> String {
        let parts = crate::record::builder::Parts::<String> {
            id: uuid::Uuid::nil(),
            micros: 0,
            texts: Default::default(),
            flags: Vec::new(),
            detail: crate::record::json::parse_object(text).unwrap(),
            seq: None,
        };
        parts.into_record().detail_json()
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[\\PC\"\\\\\u{0}-\u{1f}\u{7f}]{0,12}").unwrap()
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            text().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the writer writes is copied, and copying it is what
        /// reading it back and writing it again gives.
        #[test]
        fn the_writers_text_is_copied_as_it_reads_back(
            detail in proptest::collection::vec((text(), json()), 0..5),
            flags in proptest::collection::vec(text(), 0..3),
        ) {
            let mut builder = AuditRecord::builder("a").actor_flags(&flags);
            for (key, value) in &detail {
                builder = builder.detail(key, value.clone());
            }
            let record = builder.build();
            let written = record.detail_json();
            if detail.iter().all(|(k, _)| k != MARKER) {
                prop_assert!(is_detail(&written, MARKER), "{}", written);
            }
            prop_assert_eq!(read_back(&written), written);
            let flags_json = serde_json::to_string(&flags).unwrap();
            prop_assert!(is_flags(&flags_json), "{}", flags_json);
        }

        /// Nothing that reads back as other bytes is copied.
        #[test]
        fn whatever_is_copied_reads_back_as_itself(text in "[{}\\[\\]\",:a0-9.eE+\\-\\\\nu ]{0,24}") {
            if is_detail(&text, MARKER) {
                prop_assert_eq!(read_back(&text), text);
            }
        }
    }
}
