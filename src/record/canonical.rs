//! A record's canonical bytes, what its chain hash covers: RFC 8785 (JSON
//! Canonicalization Scheme) over the record's JSON object without `hash`,
//! with integers kept exact (see `chain::canonical`).
//!
//! Written straight from the record, on a sink's worker thread, for every
//! record it stores: going through a `serde_json::Value` would allocate for
//! every field. The bytes are those of `chain::canonical::write` over the
//! record's JSON object (a property test holds the two together), so a
//! verifier in another language reproduces them from the stored JSON:
//!
//! - keys sorted by their UTF-16 code units (the record's own keys are
//!   ASCII: plain byte order), `detail`'s keys too;
//! - no whitespace; strings escaped as `JSON.stringify` does (only `"`,
//!   `\` and control characters, which is what the JSON line writer does);
//! - integers as their exact decimal digits, doubles as ECMAScript prints
//!   them, a double that is not finite as `null` (as serde_json writes it);
//! - absent optional fields as `null`, an absent `action` as `""`.

use std::sync::LazyLock;

use super::fields::{Role, KEYS};
use super::json_line::write_str;
use super::{time, AuditRecord, Field, Value};

/// The record's keys but `hash`, in canonical order (positions in `KEYS`).
static ORDER: LazyLock<Vec<usize>> = LazyLock::new(|| {
    let mut order: Vec<usize> = (0..KEYS.len())
        .filter(|&i| KEYS[i].role != Role::Text(Field::Hash))
        .collect();
    order.sort_by(|&a, &b| utf16_cmp(KEYS[a].name, KEYS[b].name));
    order
});

fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

impl AuditRecord {
    /// Appends the record's canonical bytes (without `hash`) to `out`.
    pub(crate) fn write_canonical(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (n, &at) in ORDER.iter().enumerate() {
            let key = &KEYS[at];
            // `key.json` is `,"name":`; the first key has no comma.
            out.extend_from_slice(if n == 0 { &key.json[1..] } else { key.json });
            match key.role {
                Role::Id => {
                    let mut id = uuid::Uuid::encode_buffer();
                    out.push(b'"');
                    out.extend_from_slice(self.id.hyphenated().encode_lower(&mut id).as_bytes());
                    out.push(b'"');
                }
                Role::Timestamp => {
                    out.push(b'"');
                    out.extend_from_slice(&time::format_rfc3339_micros(self.micros));
                    out.push(b'"');
                }
                Role::Text(field) => match self.get(field) {
                    Some(value) => write_str(out, value),
                    None if field.is_required() => out.extend_from_slice(b"\"\""),
                    None => out.extend_from_slice(b"null"),
                },
                Role::Flags => {
                    out.push(b'[');
                    for (i, flag) in self.actor_flags().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_str(out, flag);
                    }
                    out.push(b']');
                }
                Role::Detail => self.write_canonical_detail(out),
                Role::Seq => match self.seq {
                    Some(seq) => write_integer(out, seq),
                    None => out.extend_from_slice(b"null"),
                },
            }
        }
        out.push(b'}');
    }

    fn write_canonical_detail(&self, out: &mut Vec<u8>) {
        // The keys' order, on the stack for the usual few keys; a stable
        // sort, so that a repeated key keeps its values' order.
        let mut small = [0_usize; 32];
        let mut large = Vec::new();
        let order: &mut [usize] = if self.detail.len() <= small.len() {
            &mut small[..self.detail.len()]
        } else {
            large.resize(self.detail.len(), 0);
            &mut large
        };
        for (i, at) in order.iter_mut().enumerate() {
            *at = i;
        }
        let key = |at: usize| self.str(self.detail[at].0);
        if order.iter().all(|&at| key(at).is_ascii()) {
            // ASCII: UTF-16 code units sort as bytes do.
            order.sort_by(|&a, &b| key(a).cmp(key(b)));
        } else {
            order.sort_by(|&a, &b| utf16_cmp(key(a), key(b)));
        }
        out.push(b'{');
        for (n, &at) in order.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let (key, value) = &self.detail[at];
            write_str(out, self.str(*key));
            out.push(b':');
            match value {
                Value::Str(range) => write_str(out, self.str(*range)),
                Value::I64(n) if *n < 0 => {
                    out.push(b'-');
                    write_integer(out, n.unsigned_abs());
                }
                Value::I64(n) => write_integer(out, n.unsigned_abs()),
                Value::U64(n) => write_integer(out, *n),
                Value::F64(f) if f.is_finite() => {
                    let mut buf = ryu_js::Buffer::new();
                    out.extend_from_slice(buf.format_finite(*f).as_bytes());
                }
                Value::F64(_) => out.extend_from_slice(b"null"),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
                Value::Json(v) => crate::chain::canonical::write(v, out),
            }
        }
        out.push(b'}');
    }
}

fn write_integer(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 21];
    out.extend_from_slice(super::builder::decimal(n, false, &mut digits).as_bytes());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::chain::canonical;
    use crate::AuditRecord;

    /// The canonical bytes through `serde_json::Value`: the definition.
    fn through_value(record: &AuditRecord) -> Vec<u8> {
        let mut value = serde_json::to_value(record).unwrap();
        value.as_object_mut().unwrap().remove("hash");
        canonical::to_vec(&value)
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[\\PC\"\\\\\u{0}-\u{1f}\u{7f}\u{e000}\u{10000}]{0,12}")
            .unwrap()
    }

    #[test]
    fn a_plain_record_and_edge_values() {
        let mut record = AuditRecord::builder("a.b")
            .detail("b", f64::NAN)
            .detail("a", -0.0)
            .detail("\u{10000}", i64::MIN)
            .detail("\u{e000}", u64::MAX)
            .detail("n", serde_json::json!({"z": [1.5, null], "a": 1e21}))
            .build();
        record.set_link("host/file", 7, "ff");
        let mut ours = Vec::new();
        record.write_canonical(&mut ours);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(through_value(&record)).unwrap()
        );
        let text = String::from_utf8(through_value(&record)).unwrap();
        assert!(
            text.starts_with(r#"{"action":"a.b","actor_email":null,"#),
            "{text}"
        );
        assert!(text.contains(r#""seq":7,"timestamp""#), "{text}");
        assert!(!text.contains("\"hash\""), "{text}");
        // U+10000 (a surrogate pair, D800 DC00) sorts before U+E000 in
        // UTF-16, after it in UTF-8.
        assert!(
            text.contains("\"detail\":{\"a\":0,\"b\":null,\"n\":{\"a\":1e+21,\"z\":[1.5,null]},\"\u{10000}\":-9223372036854775808,\"\u{e000}\":18446744073709551615}"),
            "{text}"
        );
    }

    proptest! {
        #[test]
        fn the_fast_form_is_the_canonical_form_of_the_json(
            action in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
            actor in proptest::option::of(text()),
            flags in proptest::collection::vec(text(), 0..4),
            detail in proptest::collection::btree_map(text(), prop_oneof![
                text().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                (text(), any::<f64>()).prop_map(|(k, f)| serde_json::json!({ k: [f, null, {"x": f}] })),
            ], 0..6),
            seq in proptest::option::of(0..=i64::MAX as u64),
        ) {
            let mut b = AuditRecord::builder(&action).actor_flags(&flags);
            if let Some(actor) = &actor {
                b = b.actor_id(actor).user_agent(actor);
            }
            for (k, v) in &detail {
                b = b.detail(k, v.clone());
            }
            let mut record = b.build();
            if let (Some(seq), Some(actor)) = (seq, &actor) {
                record.set_link(actor, seq, actor);
            }
            let mut ours = Vec::new();
            record.write_canonical(&mut ours);
            prop_assert_eq!(&ours, &through_value(&record));
            // And of the record read back from its JSON line.
            let back: AuditRecord = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
            let mut again = Vec::new();
            back.write_canonical(&mut again);
            prop_assert_eq!(ours, again);
        }
    }
}
