//! Timestamps in the records: written as `2026-11-21T09:10:34.123Z` (UTC, milliseconds), read
//! from that and from any RFC 3339 time (the reference writes whole seconds).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// The records' format, millisecond precision.
pub fn format(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Any RFC 3339 time, as UTC.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `#[serde(with = "time::opt")]` for `Option<DateTime<Utc>>` fields. Reading is lenient: a
/// value that is not a time reads as absent, so one odd field never makes a whole state
/// unreadable.
pub mod opt {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw = Option::<serde_json::Value>::deserialize(d)?;
        Ok(raw.as_ref().and_then(|v| v.as_str()).and_then(parse))
    }
}

/// `#[serde(with = "time::required")]` for `DateTime<Utc>` fields of records we write.
pub mod required {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        parse(&raw).ok_or_else(|| serde::de::Error::custom(format!("not a time: {raw:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_the_references_whole_seconds_read() {
        let t = parse("2026-11-21T09:10:34.123Z").expect("ours");
        assert_eq!(format(t), "2026-11-21T09:10:34.123Z");
        let r = parse("2026-11-21T09:10:32Z").expect("reference");
        assert_eq!(format(r), "2026-11-21T09:10:32.000Z");
        assert!(parse("yesterday").is_none());
    }
}
