//! Serde for the timestamps of the records the writer encodes and decodes on every
//! job change (jobs, leases, history events), and the API writes in every answer.
//! The text is chrono's own (RFC 3339, UTC with `Z`, as many fraction digits as
//! needed), but it is written digit by digit into a buffer on the stack instead of
//! through `collect_str` (which escapes each small piece on its own) or a String
//! per timestamp, and read with chrono's RFC 3339 parser instead of its generic
//! one: chrono's way was about 8 % of the writer's time in a drain. Any text
//! chrono's `FromStr` takes is still taken.
//!
//! Use as `#[serde(with = "crate::timestamp")]`, or `crate::timestamp::option` on
//! an `Option`.

use std::fmt;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::de::{Error, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut text = [0; 30];
    match write_rfc3339(t, &mut text) {
        Some(len) => s.serialize_str(std::str::from_utf8(&text[..len]).expect("ASCII digits")),
        None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// chrono's `to_rfc3339_opts(AutoSi, true)` written into `out` without an allocation:
/// `YYYY-MM-DDTHH:MM:SS`, then 3, 6 or 9 fraction digits when they are not zero,
/// then `Z`. `None` (chrono writes it) for a year outside 0..=9999 or a leap second.
fn write_rfc3339(t: &DateTime<Utc>, out: &mut [u8; 30]) -> Option<usize> {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    out[..20].copy_from_slice(b"0000-00-00T00:00:00.");
    for (range, value) in [(0..4, year as u32), (5..7, t.month()), (8..10, t.day())].into_iter().chain([
        (11..13, t.hour()),
        (14..16, t.minute()),
        (17..19, t.second()),
    ]) {
        digits(&mut out[range], value);
    }
    let (fraction, width) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    let end = if width == 0 { 19 } else { 20 + width };
    if width > 0 {
        digits(&mut out[20..end], fraction);
    }
    out[end] = b'Z';
    Some(end + 1)
}

/// `value` in decimal, zero-padded to fill `out`.
fn digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
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
        // (seconds, nanoseconds): milliseconds, microseconds and nanoseconds, with and
        // without trailing zeros, the first and last second of the years written.
        let mut stamps: Vec<(i64, u32)> = vec![(0, 0), (1_764_000_000, 123_000_000), (253_402_300_799, 999_000_000)];
        for n in [100_000_000, 120_000_000, 123_400_000, 123_450_000, 123_456_000, 123_456_700, 1, 10, 999_999_999] {
            stamps.push((1_764_000_000, n));
        }
        // A spread of dates up to the year 9999 (a splitmix64 walk).
        let mut x = 7u64;
        for _ in 0..2000 {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            stamps.push(((z % 253_402_300_800) as i64, [0, 1_000_000, 1_000, 1][(z % 4) as usize] * (z % 999) as u32));
        }
        for (secs, nanos) in stamps {
            let at = Utc.timestamp_opt(secs, nanos).unwrap();
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
