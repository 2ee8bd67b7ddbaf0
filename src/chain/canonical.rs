//! The canonical bytes of a JSON value: RFC 8785 (JSON Canonicalization
//! Scheme), with integers kept exact.
//!
//! What a chain hashes must come out byte for byte the same wherever the
//! record is read back (the file, SQLite, PostgreSQL's `jsonb`, MariaDB)
//! and in whatever language the verifier is written. JCS gives that:
//! object keys sorted by their UTF-16 code units, no insignificant
//! whitespace, strings escaped as ECMAScript's `JSON.stringify` does (only
//! `"`, `\` and control characters), numbers printed as ECMAScript prints
//! a double.
//!
//! One deliberate difference: JCS reads every number as a double, so an
//! integer beyond ±(2^53 − 1) would be rounded and a change to its last
//! digits would go unseen. Integers (which is what `audit!` records for
//! Rust integers) are printed exactly here, as their decimal digits; for
//! every integer a double holds exactly this is what JCS prints too.
//! Other numbers (doubles) are printed as JCS prints them. A verifier in
//! another language parses integers as big integers and prints them as
//! digits (Python's `json` already does).

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// Appends the canonical form of `value` to `out`.
pub(crate) fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// The canonical form of `value`.
pub(crate) fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out);
    out
}

pub(crate) fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // serde_json's map is ordered by UTF-8 bytes (or insertion); JCS wants
    // UTF-16 code units, which differ once a key holds characters beyond
    // the Basic Multilingual Plane and characters from U+E000 up.
    entries.sort_by(|a, b| utf16_cmp(a.0, b.0));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write(value, out);
    }
    out.push(b'}');
}

fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly what JSON.stringify escapes: `"`, `\`,
    // \b \t \n \f \r, other control characters as \u00xx (lower case),
    // and nothing else.
    serde_json::to_writer(out, s).expect("writing to a Vec does not fail");
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(itoa(i128::from(i)).as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(itoa(i128::from(u)).as_bytes());
    } else {
        // A double (serde_json holds no NaN or infinity).
        let f = n.as_f64().unwrap_or_default();
        let mut buf = ryu_js::Buffer::new();
        out.extend_from_slice(buf.format_finite(f).as_bytes());
    }
}

fn itoa(n: i128) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn canonical(value: &Value) -> String {
        String::from_utf8(to_vec(value)).unwrap()
    }

    #[test]
    fn rfc_8785_numbers_print_as_ecmascript_prints_them() {
        // RFC 8785 appendix B (the doubles) and section 3.2.2.3.
        for (bits, text) in [
            (0x0000_0000_0000_0000_u64, "0"),
            (0x8000_0000_0000_0000, "0"), // -0
            (0x0000_0000_0000_0001, "5e-324"),
            (0x8000_0000_0000_0001, "-5e-324"),
            (0x7fef_ffff_ffff_ffff, "1.7976931348623157e+308"),
            (0xffef_ffff_ffff_ffff, "-1.7976931348623157e+308"),
            (0x4340_0000_0000_0000, "9007199254740992"),
            (0xc340_0000_0000_0000, "-9007199254740992"),
            (0x4430_0000_0000_0000, "295147905179352830000"),
            (0x44b5_2d02_c7e1_4af5, "9.999999999999997e+22"),
            (0x44b5_2d02_c7e1_4af6, "1e+23"),
            (0x44b5_2d02_c7e1_4af7, "1.0000000000000001e+23"),
            (0x444b_1ae4_d6e2_ef4e, "999999999999999700000"),
            (0x444b_1ae4_d6e2_ef4f, "999999999999999900000"),
            (0x444b_1ae4_d6e2_ef50, "1e+21"),
            (0x3eb0_c6f7_a0b5_ed8c, "9.999999999999997e-7"),
            (0x3eb0_c6f7_a0b5_ed8d, "0.000001"),
            (0x41b3_de43_5555_5553, "333333333.3333332"),
            (0x41b3_de43_5555_5554, "333333333.33333325"),
            (0x41b3_de43_5555_5555, "333333333.3333333"),
            (0x41b3_de43_5555_5556, "333333333.3333334"),
            (0x41b3_de43_5555_5557, "333333333.33333343"),
            (0xbecb_f647_612f_3696, "-0.0000033333333333333333"),
            (0x4314_3ff3_c1cb_0959, "1424953923781206.2"),
        ] {
            let value = json!(f64::from_bits(bits));
            assert_eq!(canonical(&value), text, "{bits:#x}");
        }
    }

    #[test]
    fn integers_stay_exact_beyond_two_to_the_53() {
        for (n, text) in [
            (json!(i64::MIN), "-9223372036854775808"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(9_007_199_254_740_993_u64), "9007199254740993"),
            (json!(-1), "-1"),
            (json!(0), "0"),
        ] {
            assert_eq!(canonical(&n), text);
        }
        // An integer-valued double prints as JCS prints it: the value a
        // verifier that reads doubles would see.
        assert_eq!(canonical(&json!(3.0)), "3");
        assert_eq!(canonical(&json!(1e19)), "10000000000000000000");
    }

    #[test]
    fn rfc_8785_sorts_keys_by_utf16_code_units() {
        // RFC 8785 section 3.2.3's example keys.
        let value: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let text = canonical(&value);
        let order = [
            "\\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|key| {
                text.find(&format!("\"{key}\":"))
                    .unwrap_or_else(|| panic!("{key:?} in {text}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn rfc_8785_escapes_only_what_json_stringify_escapes() {
        let value = json!({"s": "\u{0}\u{8}\t\n\u{c}\r\u{1f}\"\\/\u{7f}\u{2028}é🦀"});
        assert_eq!(
            canonical(&value),
            "{\"s\":\"\\u0000\\b\\t\\n\\f\\r\\u001f\\\"\\\\/\u{7f}\u{2028}é🦀\"}"
        );
    }

    #[test]
    fn rfc_8785_structures_have_no_whitespace() {
        let value: Value = serde_json::from_str(
            r#"{ "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
                 "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
                 "literals": [null, true, false] }"#,
        )
        .unwrap();
        // RFC 8785 section 3.2.2's example, output as the RFC gives it.
        assert_eq!(
            canonical(&value),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever reads the JSON text back (and prints it again its own
        /// way) gets the same canonical bytes.
        #[test]
        fn canonical_bytes_survive_a_round_trip_through_json_text(value in json_value()) {
            let text = serde_json::to_string(&value).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            let back_pretty: Value = serde_json::from_str(&pretty).unwrap();
            prop_assert_eq!(to_vec(&value), to_vec(&back));
            prop_assert_eq!(to_vec(&value), to_vec(&back_pretty));
            // And the canonical form is itself JSON of the same value.
            let reparsed: Value = serde_json::from_slice(&to_vec(&value)).unwrap();
            prop_assert_eq!(to_vec(&reparsed), to_vec(&value));
        }
    }
}
