//! The record's JSON object: the same in the file, the database and the API.
//!
//! Both directions walk the list of keys made from the one list of fields
//! (`record::fields::KEYS`), so that a field added there is written and read
//! without a change here:
//!
//! - `Serialize` writes every key, in the list's order, absent text fields
//!   as `null`, `actor_flags` as an array (`[]` when none), `detail` as
//!   an object in the order its entries were given and `seq` as an integer
//!   (`null` in a record not stored in a chain). The file sink does not
//!   use it (see `json_line`, which writes the same bytes faster); the API
//!   and anything a user serializes do.
//! - `Deserialize` accepts what `Serialize` writes, and more leniently:
//!   optional keys may be missing or `null`, keys may come in any order. It
//!   refuses unknown keys, repeated keys, a missing or empty `action`, a
//!   missing `id` or `timestamp`, a `seq` that is not an integer from 0 to
//!   2^63 - 1, and a timestamp that is not RFC 3339 (any
//!   offset: it is converted to UTC). It reads into `builder::Parts`, the
//!   one construction path it shares with a database row read back.
//!
//! `detail` is read through [`OrderedMap`] rather than `serde_json::Map`:
//! the latter sorts keys, and a record read back must equal the one
//! written, order included.

use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use uuid::Uuid;

use std::borrow::Cow;

use super::builder::{Given, Parts};
use super::fields::{Role, KEYS, NAMES};
use super::{time, AuditRecord, Field, Value};

impl Serialize for AuditRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(KEYS.len()))?;
        for key in &KEYS {
            match key.role {
                Role::Id => map.serialize_entry(key.name, &self.id)?,
                Role::Timestamp => {
                    let timestamp = time::format_rfc3339_micros(self.micros);
                    // The formatter writes ASCII digits only.
                    let timestamp = std::str::from_utf8(&timestamp).unwrap_or_default();
                    map.serialize_entry(key.name, timestamp)?;
                }
                // A required field is never null, even in a record made
                // without it (the layer counts and drops those).
                Role::Text(field) if field.is_required() => {
                    map.serialize_entry(key.name, self.get(field).unwrap_or_default())?;
                }
                Role::Text(field) => map.serialize_entry(key.name, &self.get(field))?,
                Role::Flags => map.serialize_entry(key.name, &Flags(self))?,
                Role::Detail => map.serialize_entry(key.name, &Detail(self))?,
                Role::Seq => map.serialize_entry(key.name, &self.seq)?,
            }
        }
        map.end()
    }
}

/// The record's flags, serialized as a JSON array.
struct Flags<'a>(&'a AuditRecord);

impl Serialize for Flags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.flags.len()))?;
        for flag in self.0.actor_flags() {
            seq.serialize_element(flag)?;
        }
        seq.end()
    }
}

/// The record's detail, serialized as a JSON object in the order given;
/// each value keeps its type.
struct Detail<'a>(&'a AuditRecord);

impl Serialize for Detail<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let mut map = serializer.serialize_map(Some(record.detail.len()))?;
        for (key, value) in &record.detail {
            let key = record.str(*key);
            match value {
                Value::Str(range) => map.serialize_entry(key, record.str(*range))?,
                Value::I64(n) => map.serialize_entry(key, n)?,
                Value::U64(n) => map.serialize_entry(key, n)?,
                Value::F64(n) => map.serialize_entry(key, n)?,
                Value::Bool(b) => map.serialize_entry(key, b)?,
                Value::Json(v) => map.serialize_entry(key, v)?,
            }
        }
        map.end()
    }
}

/// Reads a JSON object's entries in their order (a detail column).
#[cfg(db)]
pub(crate) fn parse_object(text: &str) -> serde_json::Result<Vec<(String, serde_json::Value)>> {
    serde_json::from_str::<OrderedMap>(text).map(|m| m.0)
}

/// A JSON object read in its order (serde_json's `Map` sorts its keys unless
/// a crate-wide feature is on), so that a record read back equals the one
/// written.
#[cfg(any(db, test))]
struct OrderedMap(Vec<(String, serde_json::Value)>);

#[cfg(any(db, test))]
impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl<'de> Deserialize<'de> for AuditRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("AuditRecord", NAMES, RecordVisitor)
    }
}

/// A string read from JSON: borrowed from the input when it holds no
/// escape (serde's own `Cow<str>` always copies), so that reading a record
/// allocates for its buffer only.
#[derive(Debug, Default)]
struct Text<'de>(Cow<'de, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A record's `detail` object read in its order, scalars without a
/// `serde_json::Value` each.
struct GivenDetail<'de>(Vec<(Text<'de>, Given<Text<'de>>)>);

impl<'de> Deserialize<'de> for GivenDetail<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = GivenDetail<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Text<'de>, GivenValue<'de>>()? {
                    entries.push((entry.0, entry.1 .0));
                }
                Ok(GivenDetail(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// One detail value: a scalar as the record holds it, anything else as
/// JSON (what `AuditRecord::push_json` makes of the same value).
struct GivenValue<'de>(Given<Text<'de>>);

impl<'de> Deserialize<'de> for GivenValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = GivenValue<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(GivenValue(Given::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(GivenValue(Given::I64(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                // As `serde_json::Number::as_i64` would first.
                Ok(GivenValue(match i64::try_from(v) {
                    Ok(v) => Given::I64(v),
                    Err(_) => Given::U64(v),
                }))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(GivenValue(Given::F64(v)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(GivenValue(Given::Str(Text(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(GivenValue(Given::Str(Text(Cow::Owned(v.to_owned())))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(GivenValue(Given::Str(Text(Cow::Owned(v)))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(GivenValue(Given::Json(serde_json::Value::Null)))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                self.visit_unit()
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let json =
                    serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(GivenValue(Given::Json(json)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let json =
                    serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(GivenValue(Given::Json(json)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Reads the record's object key by key, each key once, no other key (what
/// `#[serde(deny_unknown_fields)]` on a derived struct would do), into
/// [`Parts`]: the same construction path as a row read back.
struct RecordVisitor;

impl<'de> de::Visitor<'de> for RecordVisitor {
    type Value = AuditRecord;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an audit record object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<AuditRecord, A::Error> {
        let mut id: Option<Uuid> = None;
        let mut timestamp: Option<Text<'de>> = None;
        let mut texts: [Option<Text<'de>>; Field::COUNT] = Default::default();
        // A text key given as `null` is "seen" too: a second one is a
        // duplicate all the same.
        let mut seen = [false; KEYS.len()];
        let mut flags: Option<Vec<Text<'de>>> = None;
        let mut detail: Option<GivenDetail<'de>> = None;
        let mut seq: Option<u64> = None;
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            let Some(at) = KEYS.iter().position(|k| k.name == name) else {
                return Err(de::Error::unknown_field(&name, NAMES));
            };
            if std::mem::replace(&mut seen[at], true) {
                return Err(de::Error::duplicate_field(KEYS[at].name));
            }
            match KEYS[at].role {
                Role::Id => id = Some(map.next_value()?),
                Role::Timestamp => timestamp = Some(map.next_value()?),
                Role::Text(field) if field.is_required() => {
                    texts[field as usize] = Some(map.next_value::<Text<'de>>()?);
                }
                Role::Text(field) => texts[field as usize] = map.next_value()?,
                Role::Flags => flags = map.next_value()?,
                Role::Detail => detail = map.next_value()?,
                Role::Seq => seq = map.next_value()?,
            }
        }
        // A database stores `seq` as a signed 64-bit integer.
        if seq.is_some_and(|seq| i64::try_from(seq).is_err()) {
            return Err(de::Error::custom("`seq` is over 2^63 - 1"));
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        let timestamp = timestamp.ok_or_else(|| de::Error::missing_field("timestamp"))?;
        for field in Field::ALL.into_iter().filter(|f| f.is_required()) {
            if !seen[KEYS
                .iter()
                .position(|k| k.role == Role::Text(field))
                .unwrap_or(0)]
            {
                return Err(de::Error::missing_field(field.name()));
            }
        }
        if texts[Field::Action as usize]
            .as_ref()
            .is_none_or(|action| action.0.is_empty())
        {
            return Err(de::Error::custom("`action` is empty"));
        }
        let micros = time::parse_rfc3339(&timestamp.0).ok_or_else(|| {
            de::Error::custom(format_args!(
                "`timestamp` is not an RFC 3339 timestamp: {:?}",
                timestamp.0
            ))
        })?;
        let parts = Parts {
            id,
            micros,
            texts,
            flags: flags.unwrap_or_default(),
            detail: detail.map(|d| d.0).unwrap_or_default(),
            seq,
        };
        Ok(parts.into_record())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn serializes_every_field_in_order() {
        let r = AuditRecord::builder("post.created")
            .actor_id("u1")
            .resource("post", "42")
            .detail("n", 1.5)
            .build();
        let text = serde_json::to_string(&r).unwrap();
        let keys: Vec<String> = serde_json::from_str::<OrderedMap>(&text)
            .unwrap()
            .0
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(text.starts_with(&format!("{{\"id\":\"{}\",\"timestamp\":", r.id())));
        assert_eq!(keys, super::NAMES);
        assert_eq!(keys[..3], ["id", "timestamp", "action"]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["actor_flags"], json!([]));
        assert_eq!(v["actor_email"], json!(null));
        assert_eq!(v["detail"], json!({"n": 1.5}));
    }

    #[test]
    fn rejects_bad_input_with_the_field_named() {
        let cases = [
            (
                json!({"id": "x", "timestamp": "2026-01-01T00:00:00Z", "action": "a"}),
                "UUID",
            ),
            (
                json!({"id": uuid::Uuid::nil(), "timestamp": "yesterday", "action": "a"}),
                "timestamp",
            ),
            (
                json!({"id": uuid::Uuid::nil(), "timestamp": "2026-01-01T00:00:00Z", "action": ""}),
                "action",
            ),
            (
                json!({"id": uuid::Uuid::nil(), "timestamp": "2026-01-01T00:00:00Z"}),
                "action",
            ),
            (
                json!({"id": uuid::Uuid::nil(), "timestamp": "2026-01-01T00:00:00Z", "action": "a", "actr": 1}),
                "actr",
            ),
        ];
        for (input, needle) in cases {
            let err = serde_json::from_value::<AuditRecord>(input.clone()).unwrap_err();
            assert!(err.to_string().contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn nested_detail_survives_a_round_trip() {
        let input = json!({
            "id": uuid::Uuid::now_v7(), "timestamp": "2026-01-01T01:00:00.123456+01:00",
            "action": "a", "detail": {"list": [1, 2], "obj": {"k": null}, "big": 18446744073709551615u64}
        });
        let r: AuditRecord = serde_json::from_value(input.clone()).unwrap();
        assert_eq!(
            r.timestamp().to_rfc3339(),
            "2026-01-01T00:00:00.123456+00:00"
        );
        let out = serde_json::to_value(&r).unwrap();
        assert_eq!(out["detail"], input["detail"]);
    }

    #[test]
    fn chain_fields_are_read_written_and_null_when_absent() {
        let mut record = AuditRecord::builder("invoice.sent").build();
        let plain = serde_json::to_value(&record).unwrap();
        let text = serde_json::to_string(&record).unwrap();
        let keys: Vec<String> = serde_json::from_str::<OrderedMap>(&text)
            .unwrap()
            .0
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys[keys.len() - 3..], ["chain", "seq", "hash"]);
        for key in ["chain", "seq", "hash"] {
            assert_eq!(plain[key], json!(null), "{key}");
        }
        let hash = "ab".repeat(32);
        record.set_link("host-1/file", i64::MAX as u64, &hash);
        let text = serde_json::to_string(&record).unwrap();
        assert!(
            text.ends_with(&format!(
                r#""chain":"host-1/file","seq":9223372036854775807,"hash":"{hash}"}}"#
            )),
            "{text}"
        );
        let back: AuditRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            (back.chain(), back.seq(), back.hash()),
            (
                Some("host-1/file"),
                Some(i64::MAX as u64),
                Some(hash.as_str())
            )
        );
        // Records differing only in their place in a chain differ.
        let mut other = back.clone();
        other.set_link("host-1/file", 1, &hash);
        assert_ne!(other, record);

        let mut too_big = serde_json::to_value(&record).unwrap();
        too_big["seq"] = json!(i64::MAX as u64 + 1);
        let err = serde_json::from_value::<AuditRecord>(too_big).unwrap_err();
        assert!(err.to_string().contains("`seq`"), "{err}");
        for bad in [json!(-1), json!(1.5), json!("1")] {
            let mut value = serde_json::to_value(&record).unwrap();
            value["seq"] = bad.clone();
            assert!(
                serde_json::from_value::<AuditRecord>(value).is_err(),
                "{bad}"
            );
        }
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[\\PC\"\\\\\u{0}-\u{1f}]{0,12}").unwrap()
    }

    proptest! {
        #[test]
        fn json_round_trip_is_lossless(
            action in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
            actor in proptest::option::of(text()),
            flags in proptest::collection::vec(text(), 0..4),
            detail in proptest::collection::btree_map("[a-z_]{1,6}", prop_oneof![
                text().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
                (-1e300f64..1e300).prop_map(serde_json::Value::from),
            ], 0..5),
        ) {
            let mut b = AuditRecord::builder(&action).actor_flags(&flags);
            if let Some(actor) = &actor {
                b = b.actor_id(actor);
            }
            for (k, v) in &detail {
                b = b.detail(k, v.clone());
            }
            let mut record = b.build();
            if let Some(actor) = &actor {
                record.set_link(actor, detail.len() as u64 * (i64::MAX as u64 / 4), actor);
            }
            let text = serde_json::to_string(&record).unwrap();
            let back: AuditRecord = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&back, &record);
            prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }
}
