//! How long stored records are kept: a number of days, or forever.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use crate::{Error, Result};

/// How long a sink keeps what it stored: `Retention::days(30)` or
/// [`Retention::FOREVER`].
///
/// Zero is refused rather than read as "delete everything", and so is
/// anything above [`Retention::MAX_DAYS`] (100 years), which date
/// arithmetic could not represent anyway. In configuration files it is a
/// whole number of days or the string `"forever"`.
///
/// # Examples
///
/// ```
/// use fabric_audit::Retention;
///
/// assert_eq!(Retention::days(30)?.as_days(), Some(30));
/// assert_eq!("forever".parse::<Retention>()?, Retention::FOREVER);
/// assert!(Retention::days(0).is_err());
/// assert!("100000".parse::<Retention>().is_err());
/// # Ok::<(), fabric_audit::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Retention(Option<NonZeroU32>);

impl Retention {
    /// The longest retention in days: 100 years.
    pub const MAX_DAYS: u32 = 36_525;

    /// Keep everything: nothing is ever deleted.
    pub const FOREVER: Retention = Retention(None);

    /// Keep records for `days` days, from 1 to [`Retention::MAX_DAYS`].
    ///
    /// # Errors
    ///
    /// Zero (say [`Retention::FOREVER`] to keep everything) or more than
    /// [`Retention::MAX_DAYS`].
    pub fn days(days: u32) -> Result<Self> {
        match NonZeroU32::new(days) {
            Some(n) if days <= Self::MAX_DAYS => Ok(Self(Some(n))),
            _ => Err(Error::invalid(format!(
                "retention must be from 1 to {} days, or \"forever\"; not {days}",
                Self::MAX_DAYS
            ))),
        }
    }

    /// The number of days, or `None` for forever.
    pub fn as_days(self) -> Option<u32> {
        self.0.map(NonZeroU32::get)
    }
}

impl fmt::Debug for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_days() {
            Some(days) => write!(f, "{days} days"),
            None => f.write_str("forever"),
        }
    }
}

impl FromStr for Retention {
    type Err = Error;

    /// A whole number of days, or `forever`.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") {
            return Ok(Self::FOREVER);
        }
        let days = text.parse::<u32>().map_err(|_| {
            Error::invalid(format!(
                "retention must be a whole number of days from 1 to {}, or \"forever\"; not {text:?}",
                Self::MAX_DAYS
            ))
        })?;
        Self::days(days)
    }
}

impl<'de> serde::Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Retention;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a number of days from 1 to {} or \"forever\"",
                    Retention::MAX_DAYS
                )
            }
            fn visit_u64<E: serde::de::Error>(self, days: u64) -> Result<Retention, E> {
                let days = u32::try_from(days).unwrap_or(u32::MAX);
                Retention::days(days).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, days: i64) -> Result<Retention, E> {
                match u64::try_from(days) {
                    Ok(days) => self.visit_u64(days),
                    Err(_) => Err(E::custom(format!(
                        "retention must be from 1 to {} days, or \"forever\"; not {days}",
                        Retention::MAX_DAYS
                    ))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Retention, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl serde::Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_days() {
            Some(days) => serializer.serialize_u32(days),
            None => serializer.serialize_str("forever"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_refused_with_a_message() {
        for text in [
            "0",
            "-1",
            "36526",
            "4294967295",
            "99999999999",
            "",
            "ten",
            "\0",
        ] {
            let err = text.parse::<Retention>().unwrap_err();
            assert!(err.is_invalid_input(), "{text:?}");
            assert!(err.to_string().contains("forever"), "{text:?}: {err}");
        }
    }

    #[test]
    fn days_and_forever_parse_and_print() {
        let cases = [
            ("1", Some(1)),
            ("36525", Some(36_525)),
            (" 30 ", Some(30)),
            ("forever", None),
            ("FOREVER", None),
        ];
        assert_eq!(Retention::days(7).unwrap().to_string(), "7 days");
        assert_eq!(Retention::FOREVER.to_string(), "forever");
        for (text, want) in cases {
            let retention: Retention = text.parse().unwrap();
            assert_eq!(retention.as_days(), want, "{text:?}");
            let json = serde_json::to_string(&retention).unwrap();
            assert_eq!(serde_json::from_str::<Retention>(&json).unwrap(), retention);
        }
    }

    #[test]
    fn configuration_values_read_numbers_and_forever() {
        let read = |json: &str| serde_json::from_str::<Retention>(json);
        assert_eq!(read("30").unwrap(), Retention::days(30).unwrap());
        assert_eq!(read("\"forever\"").unwrap(), Retention::FOREVER);
        for bad in ["0", "-5", "96000000", "1.5", "null", "\"\""] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
