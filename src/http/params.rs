//! The list endpoint's query string, decoded strictly and read by the
//! shared filter parser ([`AuditQuery::from_pairs`]).

use super::error::ApiError;
use crate::db::{parse_pairs, Given};
use crate::AuditQuery;

/// The list endpoint's request: the filters, as parsed and as given, and
/// whether the total was asked for.
#[derive(Debug)]
pub(crate) struct ListParams {
    pub(crate) query: AuditQuery,
    pub(crate) given: Given,
    /// `count=true`.
    pub(crate) count: bool,
}

/// Reads `query` (the raw query string): every parameter known, given once,
/// UTF-8 and well formed, or a 400 naming it. `count` (`true` or `false`)
/// is the endpoint's own; the rest are filters for the shared parser.
pub(crate) fn parse(query: Option<&str>) -> Result<ListParams, ApiError> {
    let (counts, filters): (Vec<_>, Vec<_>) = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .partition(|(key, _)| key == b"count");
    let count = match &counts[..] {
        [] => false,
        [(_, value)] => match &value[..] {
            b"true" => true,
            b"false" => false,
            b"" => return Err(ApiError::bad_request("`count` is empty")),
            _ => return Err(ApiError::bad_request("`count` must be true or false")),
        },
        _ => return Err(ApiError::bad_request("`count` is given twice")),
    };
    let (query, given) = parse_pairs(filters)?;
    Ok(ListParams {
        query,
        given,
        count,
    })
}

/// `application/x-www-form-urlencoded` decoding to bytes: `+` is a space,
/// `%XX` a byte; a `%` not followed by two hex digits stays as it is (as
/// the URL standard says). Whether the bytes are UTF-8 is the parser's
/// question, so that the refusal names the parameter.
fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'+' => b' ',
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    i += 2;
                    high << 4 | low
                }
                _ => b'%',
            },
            other => other,
        };
        out.push(byte);
        i += 1;
    }
    out
}

fn hex(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_form_encoding_bytewise() {
        let cases: [(&str, &[u8]); 8] = [
            ("a+b", b"a b"),
            ("%41%2b", b"A+"),
            ("%zz", b"%zz"),
            ("%4", b"%4"),
            ("%", b"%"),
            ("%00", b"\0"),
            ("%FF%fe", b"\xff\xfe"),
            ("%E2%82%AC", "€".as_bytes()),
        ];
        for (text, want) in cases {
            assert_eq!(decode(text), want, "{text}");
        }
    }

    #[test]
    fn pairs_without_a_value_are_empty_and_stray_ampersands_ignored() {
        let message = |q| parse(Some(q)).unwrap_err().message().to_owned();
        assert_eq!(message("count=TRUE"), "`count` must be true or false");
        assert_eq!(message("count=1"), "`count` must be true or false");
        assert_eq!(message("count=true%00"), "`count` must be true or false");
        assert_eq!(message("count"), "`count` is empty");
        assert_eq!(message("count=true&count=true"), "`count` is given twice");
        assert!(parse(Some("count=true")).unwrap().count);
        assert!(!parse(Some("count=false")).unwrap().count);
        assert!(!parse(None).unwrap().count);
        assert_eq!(message("&&actor_id&"), "`actor_id` is empty");
        assert_eq!(message("actor_id=%FF"), "`actor_id` is not valid UTF-8");
        assert_eq!(message("%FF=1"), "unknown parameter `\u{fffd}`");
        let ListParams { query, given, .. } = parse(Some("&action=a%3Db&&limit=%2B7")).unwrap();
        assert_eq!(given.action.as_deref(), Some("a=b"));
        assert_eq!(query.page_size(), 7, "u32 parsing accepts a leading +");
    }

    proptest! {
        #[test]
        fn encoding_then_decoding_gives_the_bytes_back(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(decode(&encoded), bytes);
        }
    }
}
