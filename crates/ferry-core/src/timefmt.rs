//! Serde helpers: times are unix milliseconds inside Ferry and RFC 3339
//! strings (UTC, milliseconds) wherever a person or a script reads them.
//! Deserialising accepts either form.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub fn format(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A span as a person writes it: `90s`, `15m`, `24h`, `2d`, or the
/// largest exact unit (`1h30m` is `90m`).
pub fn span(ms: i64) -> String {
    let s = ms / 1000;
    if s > 0 && s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s > 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s > 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else if ms % 1000 == 0 {
        format!("{s}s")
    } else {
        format!("{ms}ms")
    }
}

/// Parses RFC 3339 or a unix time in milliseconds.
pub fn parse(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Some(ms);
    }
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_millis())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Ms(i64),
    Text(String),
}

pub mod ms {
    use super::*;
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match Either::deserialize(d)? {
            Either::Ms(v) => Ok(v),
            Either::Text(t) => parse(&t)
                .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not an RFC 3339 time"))),
        }
    }
}

pub mod opt_ms {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format(*v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<Either>::deserialize(d)? {
            None => Ok(None),
            Some(Either::Ms(v)) => Ok(Some(v)),
            Some(Either::Text(t)) => parse(&t)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not an RFC 3339 time"))),
        }
    }
}
