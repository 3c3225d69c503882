//! Serde for the timestamps of the records the writer encodes and decodes on every
//! job change (jobs, leases, history events). The text is chrono's own (RFC 3339,
//! UTC with `Z`, as many fraction digits as needed), but it is written into one
//! string instead of through `collect_str`, which escapes each small piece on its
//! own, and read with chrono's RFC 3339 parser instead of its generic one: together
//! they were about 8 % of the writer's time in a drain. Any text chrono's `FromStr`
//! takes is still taken.
//!
//! Use as `#[serde(with = "crate::timestamp")]`, or `crate::timestamp::option` on
//! an `Option`.

use std::fmt;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::de::{Error, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(Rfc3339)
}

/// The same for an optional timestamp (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(OptionalRfc3339)
    }

    struct OptionalRfc3339;

    impl<'de> Visitor<'de> for OptionalRfc3339 {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 date and time, or null")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

struct Rfc3339;

impl Visitor<'_> for Rfc3339 {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 date and time")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
        DateTime::parse_from_rfc3339(text)
            .or_else(|_| text.parse::<DateTime<FixedOffset>>())
            .map(|t| t.with_timezone(&Utc))
            .map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Stamped {
        #[serde(with = "crate::timestamp")]
        at: DateTime<Utc>,
        #[serde(with = "crate::timestamp::option", default)]
        until: Option<DateTime<Utc>>,
    }

    /// chrono's own serde, the format every stored record and API response has used.
    #[derive(Serialize, Deserialize)]
    struct Plain {
        at: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    }

    #[test]
    fn writes_the_same_text_as_chrono() {
        for ms in [0, 1_764_000_000_123, 1_764_000_000_000, 1_764_000_000_100, 253_402_300_799_999] {
            let at = Utc.timestamp_millis_opt(ms).unwrap();
            let ours = serde_json::to_string(&Stamped { at, until: Some(at) }).unwrap();
            let chrono = serde_json::to_string(&Plain { at, until: Some(at) }).unwrap();
            assert_eq!(ours, chrono);
            assert_eq!(serde_json::from_str::<Stamped>(&ours).unwrap(), Stamped { at, until: Some(at) });
        }
        let none = serde_json::to_string(&Stamped { at: Utc.timestamp_millis_opt(0).unwrap(), until: None }).unwrap();
        assert_eq!(none, r#"{"at":"1970-01-01T00:00:00Z","until":null}"#);
    }

    #[test]
    fn reads_offsets_nanoseconds_and_absent_fields() {
        let read: Stamped = serde_json::from_str(r#"{"at":"2026-11-29T20:00:00.5+02:00"}"#).unwrap();
        assert_eq!(
            read.at,
            Utc.with_ymd_and_hms(2026, 11, 29, 18, 0, 0).unwrap() + chrono::Duration::milliseconds(500)
        );
        assert_eq!(read.until, None);
        let nanos: Stamped = serde_json::from_str(r#"{"at":"2026-11-29T18:00:00.123456789Z","until":null}"#).unwrap();
        assert_eq!(nanos.at.timestamp_subsec_nanos(), 123_456_789);
        let bad = serde_json::from_str::<Stamped>(r#"{"at":"yesterday"}"#).unwrap_err();
        assert!(bad.to_string().contains("input contains invalid characters"), "{bad}");
    }
}
